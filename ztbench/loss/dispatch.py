"""Two ways to run a piecewise formula: each branch formula is written once, as a plain
function of tensors, and a dispatcher decides how the branches meet.

- :data:`WHERE`: every branch on every element, joined by ``torch.where``. No
  data-dependent shapes, so torch.compile traces it (on a GPU), and autograd through it
  is right (the differentiable backward): each branch gets *safe inputs* where it is not
  taken (a constant from its own domain), because ``torch.where`` back-propagates a NaN
  or inf from the branch not taken.
- :data:`INDEX`: each branch on its own elements only (``nonzero``, ``index_select``,
  compute, ``index_copy_``), with in-place polynomial evaluation: the eager path, a
  fraction of the work. Flat (1-D) inputs, no autograd.

Both compute, element by element, the same operations on the same operands, so they give
the same bits (tests/loss/test_nll.py checks it on the loss kernels).

Interface (``D`` is either dispatcher):

- ``D.branch(cond, f_true, f_false, args, safe_true, safe_false)``: f_true(*args) where
  cond holds, f_false(*args) elsewhere. ``safe_*`` give, per argument, the constant used
  where that branch is not taken (None: the argument is safe anywhere, passed as is).
  A branch may return a tensor or a tuple of tensors; ``f_false=None`` means zeros.
- ``D.accumulate(use, accs, f, args, safe)``: accs[i] + f(*args)[i] where ``use`` holds,
  accs[i] elsewhere.
- ``D.horner(z, coeffs)``: sum_i coeffs[i] z^i by Horner's rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Branch = Callable[..., Tensor | tuple[Tensor, ...]]
Accs = tuple[Tensor, ...]


def _as_tuple(x: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


class _Where:
    """Every branch everywhere, joined by torch.where (traceable, differentiable)."""

    inplace = False

    @staticmethod
    def _safe(cond: Tensor, args: Sequence[object], safe: Sequence[float | None],
              taken: bool) -> list[object]:  # fmt: skip
        out: list[object] = []
        for a, s in zip(args, safe, strict=True):
            if s is None or not isinstance(a, Tensor):
                out.append(a)
            elif taken:
                out.append(torch.where(cond, a, torch.full_like(a, s)))
            else:
                out.append(torch.where(cond, torch.full_like(a, s), a))
        return out

    def branch(self, cond: Tensor, f_true: Branch, f_false: Branch | None,
               args: Sequence[object], safe_true: Sequence[float | None],
               safe_false: Sequence[float | None]) -> Tensor | tuple[Tensor, ...]:  # fmt: skip
        r_t = f_true(*self._safe(cond, args, safe_true, True))
        if f_false is None:
            out = tuple(torch.where(cond, t, torch.zeros_like(t)) for t in _as_tuple(r_t))
        else:
            r_f = f_false(*self._safe(cond, args, safe_false, False))
            out = tuple(
                torch.where(cond, t, f)
                for t, f in zip(_as_tuple(r_t), _as_tuple(r_f), strict=True)
            )
        return out if isinstance(r_t, tuple) else out[0]

    def accumulate(self, use: Tensor, accs: Accs, f: Branch, args: Sequence[object],
                   safe: Sequence[float | None]) -> Accs:  # fmt: skip
        terms = _as_tuple(f(*self._safe(use, args, safe, True)))
        return tuple(
            a + torch.where(use, t, torch.zeros_like(t)) for a, t in zip(accs, terms, strict=True)
        )

    @staticmethod
    def horner(z: Tensor, coeffs: Sequence[float]) -> Tensor:
        rc = coeffs[::-1]
        s = torch.full_like(z, rc[0])
        for c in rc[1:]:
            s = s * z + c
        return s


class _Index(_Where):
    """Each branch on its own elements (eager, 1-D, no autograd)."""

    inplace = True

    def branch(self, cond: Tensor, f_true: Branch, f_false: Branch | None,
               args: Sequence[object], safe_true: Sequence[float | None],
               safe_false: Sequence[float | None]) -> Tensor | tuple[Tensor, ...]:  # fmt: skip
        like = next(a for a in args if isinstance(a, Tensor))
        outs: list[Tensor] | None = None
        single = True
        parts = [(m, fn) for m, fn in ((cond, f_true), (~cond, f_false)) if fn is not None]
        for j, (mask, fn) in enumerate(parts):
            idx = mask.nonzero().squeeze(1)
            if not idx.numel() and (outs is not None or j < len(parts) - 1):
                continue  # (the last branch runs on no element only to learn the shapes)
            res = fn(*(a.index_select(0, idx) if isinstance(a, Tensor) else a for a in args))
            single = not isinstance(res, tuple)
            if outs is None:
                fill = torch.zeros_like if f_false is None else torch.empty_like
                outs = [fill(like) for _ in _as_tuple(res)]
            for o, r in zip(outs, _as_tuple(res), strict=True):
                o.index_copy_(0, idx, r)
        assert outs is not None
        return outs[0] if single else tuple(outs)

    def accumulate(self, use: Tensor, accs: Accs, f: Branch, args: Sequence[object],
                   safe: Sequence[float | None]) -> Accs:  # fmt: skip
        idx = use.nonzero().squeeze(1)
        if not idx.numel():
            return accs
        terms = _as_tuple(
            f(*(a.index_select(0, idx) if isinstance(a, Tensor) else a for a in args))
        )
        for a, t in zip(accs, terms, strict=True):
            a.index_put_((idx,), a.index_select(0, idx) + t)
        return accs

    @staticmethod
    def horner(z: Tensor, coeffs: Sequence[float]) -> Tensor:
        rc = coeffs[::-1]
        s = torch.full_like(z, rc[0])
        for c in rc[1:]:
            s.mul_(z).add_(c)
        return s


Dispatcher = _Where
WHERE: Dispatcher = _Where()
INDEX: Dispatcher = _Index()
