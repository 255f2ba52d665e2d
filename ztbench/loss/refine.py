"""The float64 refinement: where a float64 result of the careful kernels cancels, move it to
within a few ulp of the exact value; and the full form -log P(X = k).

Entry points (all eager, float64 results only):

- :func:`refine_float64`: the loss and its derivatives, where the kernel's float64 sum
  cancels (the quantity crosses zero), recomputed from terms exact to ~2^-104 and rounded
  once (:mod:`ztbench.loss.dd`: ZTP value and d/dlam; ZTNB value, d/dmu, d/dtheta).
- :func:`apply_full`: ``full=True``, Loader's stirlerr + bd0 form where it applies
  (:mod:`ztbench.loss.stirlerr`), refined by :func:`refine_full_float64` with lgamma(k + 1)
  among the double-double terms where the float64 form still cancels.
- :func:`log_rounding_correction`: float64 results with log-parameters moved from the
  rounded exp(log p) to the exact one, to first order.

Where the double-double sum itself cancels beyond its reach (a condition number above
the factor of the results' :class:`~ztbench.loss.last_resort.Goal`, the float64 nearest
a deep zero crossing), the ZTNB results are recomputed by
:mod:`ztbench.loss.last_resort` (decimal arithmetic at a precision raised until the
result is certified to that goal).

Which elements are refined is decided by the kernel's own float64 results: a condition
number of the sum (sum of |terms| / |result|) above a cancel factor. The cancel factors
live with the double-double formulas they guard (``*_CANCEL_FACTOR`` in
:mod:`ztbench.loss.dd.ztp` and :mod:`ztbench.loss.dd.ztnb`); the two domain limits of the
double-double ZTNB forms are here (:data:`DD_VALUE_X_MIN`, :data:`DD_DTHETA_X_MIN`).

Nothing here is differentiable (it only replaces values) or traced: the error-free
transformations need every product rounded on its own, which fused compiled code does not
promise. Compiled float64 code runs this module inside opaque operators
(:mod:`ztbench.loss.ops`).
"""

from __future__ import annotations

import importlib
import math
import sys
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ztbench.loss import last_resort as lr
from ztbench.loss.dd import ztnb as dd_ztnb
from ztbench.loss.dd import ztp as dd_ztp
from ztbench.loss.dd.arith import dd_log
from ztbench.loss.kernels import KERNELS, flat_indices, in_chunks
from ztbench.loss.last_resort import needs_last_resort
from ztbench.loss.stirlerr import (
    ztnb_full_condition,
    ztnb_full_value,
    ztp_full_condition,
    ztp_full_value,
)

__all__ = [
    "DD_DTHETA_X_MIN",
    "DD_VALUE_X_MIN",
    "NARROW_SCALE",
    "apply_full",
    "log_rounding_correction",
    "log_rounding_terms",
    "refine_float64",
    "refine_full_float64",
    "refine_ztnb_at",
    "replace_at",
    "replace_flagged",
    "ztnb_dd_applies",
    "ztnb_tiny_loss",
]


# The double-double formulas run on at most this many flagged elements at a time.
REFINE_SLICE = 2**13
# At most this many flagged elements go straight to the last resort (about a millisecond
# each), skipping the double-double formulas (tens of milliseconds of tensor operations
# whatever their size).
DECIMAL_MAX = 8
# (the magnitude of the terms of the double-double sum, of the refined result's shape;
# the certified recomputation)
LastResort = tuple[Tensor, Callable[..., Tensor]]


def replace_flagged(out: Tensor, flag: Tensor, fn, *args: Tensor,  # type: ignore[no-untyped-def]
                    last_resort: LastResort | None = None,
                    goal: lr.Goal = lr.FLOAT64) -> Tensor:  # fmt: skip
    """A copy of ``out`` with fn(*args at the flagged elements) there (``out`` if none).

    A refined result that is not finite keeps ``out``'s value: the double-double
    arithmetic's error-free products overflow for operands past ~2^996 (e.g. 1/theta or
    1/w at theta ~ 1e-300), where the kernel's float64 form is still finite.

    ``last_resort`` = (magnitude, exact): at most :data:`DECIMAL_MAX` flagged elements are
    computed by exact(*args, goal) directly; otherwise where the condition number
    magnitude / |refined| exceeds ``goal.factor`` (the double-double sum cannot certify
    the result to the ``goal`` of the results' precision), exact(*args, goal) replaces it
    (:mod:`ztbench.loss.last_resort`)."""
    return replace_at(out, flat_indices(flag.reshape(-1)), fn, *args, last_resort=last_resort,
                      goal=goal)


def replace_at(out: Tensor, idx: Tensor, fn, *args: Tensor,  # type: ignore[no-untyped-def]
               last_resort: LastResort | None = None,
               goal: lr.Goal = lr.FLOAT64, copy: bool = True) -> Tensor:  # fmt: skip
    """:func:`replace_flagged` at the flat positions ``idx`` (int64) of the flagged
    elements; ``copy=False`` writes into ``out`` itself (contiguous)."""
    if not idx.numel():
        return out
    flat = (out.clone() if copy else out).reshape(-1)
    sub = [a.reshape(-1)[idx] for a in args]
    if last_resort is not None and idx.numel() <= DECIMAL_MAX:
        # a few elements: the certified decimal evaluation costs less than the
        # double-double formulas' thousands of tensor operations
        flat[idx] = last_resort[1](*sub, goal)
        return flat.reshape(out.shape)
    # in slices: the double-double formulas hold a few kB per element at their peak, so
    # memory stays bounded however many elements of a chunk are flagged
    refined = torch.cat([fn(*(a[i:i + REFINE_SLICE] for a in sub))
                         for i in range(0, idx.numel(), REFINE_SLICE)])  # fmt: skip
    refined = torch.where(torch.isfinite(refined), refined, flat[idx])
    if last_resort is not None:
        magnitude, exact = last_resort
        condition = magnitude.reshape(-1)[idx] / refined.abs()
        again = flat_indices(needs_last_resort(condition, goal) & refined.isfinite())
        if again.numel():
            refined[again] = exact(*(a[again] for a in sub), goal)
    flat[idx] = refined
    return flat.reshape(out.shape)


# Results of float32 precision or less: the careful kernel's float64 sum is within a few
# float64 ulp times its condition number, so it stays within 2^-28 relative (1/8 ulp of
# float32 after the rounding) up to a condition number of ~2^22 (cancel factors 2^22
# times float64's). Beyond, at the float32 nearest a zero crossing, it is refined too.
NARROW_SCALE = 2.0**22


def refine_float64(family: str, k: Tensor, params: list[Tensor], value: Tensor,
                   grads: list[Tensor | None], scale: float = 1.0
                   ) -> tuple[Tensor, list[Tensor | None]]:  # fmt: skip
    """Float64 kernel results, eager only: where the kernel's float64 sum cancels (the
    quantity crosses zero), recompute it from terms exact to ~2^-104 and round once.

    ``scale`` multiplies the cancel factors: 1 for float64 results, :data:`NARROW_SCALE`
    for results of float32 precision or less (refined only where the float64 sum cancels
    by more than their precision can absorb).

    - ZTP value and d/dlam (:mod:`ztbench.loss.dd.ztp`: flags from the kernel's own results);
    - ZTNB value (:func:`~ztbench.loss.dd.ztnb.ztnb_value_dd`, the lgamma difference in
      double-double), d/dmu and d/dtheta (:mod:`ztbench.loss.dd.ztnb`).

    The error-free transforms need every product rounded on its own,
    which torch.compile's fused code does not promise, so the compiled path keeps the
    kernel's values (a separate target anyway).
    """
    if family == "ztpoisson":
        (lam,) = params
        (d_lam,) = grads
        flag_v, flag_g = dd_ztp.ztp_cancellation(k, lam, value, d_lam, scale)
        value = replace_flagged(value, flag_v, dd_ztp.ztp_value_dd, k, lam)
        if d_lam is not None and flag_g is not None:
            d_lam = replace_flagged(d_lam, flag_g, dd_ztp.ztp_grad_dd, k, lam)
        return value, [d_lam]
    mu, theta = params
    d_mu, d_theta = grads
    # scale > 1: results of float32 precision or less (NARROW_SCALE), certified to theirs
    goal = lr.FLOAT64 if scale == 1.0 else lr.NARROW
    applies = ztnb_dd_applies(k, mu, theta)
    # each magnitude once: it flags the kernel's result for the refinement and the refined
    # one for the last resort
    mag = dd_ztnb.ztnb_value_magnitude(k.to(torch.float64), mu, theta)
    flag = (mag > dd_ztnb.VALUE_CANCEL_FACTOR * scale * value.abs()) & applies[0]
    value = replace_flagged(value, flag, dd_ztnb.ztnb_value_dd, k, mu, theta,
                            last_resort=(mag, lr.ztnb_value_exact), goal=goal)  # fmt: skip
    if d_mu is not None and d_theta is not None:
        flag = dd_ztnb.ztnb_dmu_cancellation(k, mu, theta, d_mu, scale) & applies[1]
        mag = dd_ztnb.ztnb_dmu_dd_magnitude(k, mu, theta, d_mu)
        d_mu = replace_flagged(d_mu, flag, dd_ztnb.ztnb_dmu_dd, k, mu, theta,
                               last_resort=(mag, lr.ztnb_dmu_exact), goal=goal)  # fmt: skip
        mag = dd_ztnb.ztnb_dtheta_magnitude(k, mu, theta, d_theta)
        flag = (mag > dd_ztnb.DTHETA_CANCEL_FACTOR * scale * d_theta.abs()) & applies[2]
        d_theta = replace_flagged(d_theta, flag, dd_ztnb.ztnb_dtheta_dd, k, mu, theta,
                                  last_resort=(mag, lr.ztnb_dtheta_exact),
                                  goal=goal)  # fmt: skip
    return value, [d_mu, d_theta]


def ztnb_dd_applies(k: Tensor, mu: Tensor, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where the double-double ZTNB forms of the value, d/dmu and d/dtheta apply: not the
    value's tiny-loss region (:func:`ztnb_tiny_loss`); the derivative forms take
    x = mu/theta as a quotient, so not where it overflows (the kernel's own forms there,
    kernels._ztnb_huge_x), and d/dtheta not below :data:`DD_DTHETA_X_MIN`."""
    x = mu / theta
    finite_x = x < math.inf
    return ~ztnb_tiny_loss(k, x), finite_x, finite_x & (x >= DD_DTHETA_X_MIN)


def refine_ztnb_at(k: Tensor, mu: Tensor, theta: Tensor, outputs: list[Tensor],
                   at: list[Tensor]) -> Tensor:  # fmt: skip
    """Float64 ZTNB results (``outputs``: value, and d/dmu, d/dtheta when given; flat)
    recomputed in place at the flat positions ``at`` (one int64 tensor per output) by the
    double-double forms, with the last resort where they cannot certify the float64
    goal, as :func:`refine_float64` does at the elements its flags select. Returns the
    positions (of any output) where those forms do not apply
    (:func:`ztnb_dd_applies`) or give no finite result, for the careful kernels."""
    forms = [
        (dd_ztnb.ztnb_value_dd, lr.ztnb_value_exact,
         lambda k, mu, theta, out: dd_ztnb.ztnb_value_magnitude(k, mu, theta)),
        (dd_ztnb.ztnb_dmu_dd, lr.ztnb_dmu_exact, dd_ztnb.ztnb_dmu_dd_magnitude),
        (dd_ztnb.ztnb_dtheta_dd, lr.ztnb_dtheta_exact, dd_ztnb.ztnb_dtheta_magnitude),
    ]  # fmt: skip
    rest = [torch.zeros(0, dtype=torch.long)]
    for q, (out, pos) in enumerate(zip(outputs, at, strict=False)):
        if not pos.numel():
            continue
        sub = [t[pos] for t in (k, mu, theta)]
        ok = ztnb_dd_applies(*sub)[q]
        if not bool(ok.all()):
            rest.append(pos[~ok])
            pos, sub = pos[ok], [t[ok] for t in sub]
        if not pos.numel():
            continue
        dd, exact, magnitude = forms[q]
        mag = magnitude(*sub, out[pos])
        # NaN where the double-double result is not finite (replace_at keeps the input
        # there): those go to the careful kernels too
        new = replace_at(torch.full_like(mag, math.nan), torch.arange(pos.numel()), dd, *sub,
                         last_resort=(mag, exact), goal=lr.FLOAT64)  # fmt: skip
        out.index_copy_(0, pos, new)
        rest.append(pos[~torch.isfinite(new)])
    return torch.unique(torch.cat(rest))


# Where the double-double ZTNB forms cannot help, and the kernel needs no help:
# - the value at k = 1 and x = mu/theta below DD_VALUE_X_MIN: the loss (~ (x + w)/2) is
#   below 2^-100 of the double-double formula's terms (log1p(theta/mu) ~ |log x| and
#   the lgamma difference), beyond its ~2^-104 reach, while the kernel's k = 1 form
#   lx + log r + h(w) has no cancellation (h >= 0, |log r| <= lx/1.8 for x < 1);
# - d/dtheta below DD_DTHETA_X_MIN, where log1pmx(x) ~ -x^2/2 in double-double
#   underflows, while the kernel takes log1pmx(x)/x without forming x^2.
DD_VALUE_X_MIN = 1e-25
DD_DTHETA_X_MIN = 1e-100


def ztnb_tiny_loss(k: Tensor, x: Tensor) -> Tensor:
    """Where the ZTNB value is the kernel's k = 1 tiny-x form (no refinement)."""
    return (k == 1.0) & (x < DD_VALUE_X_MIN)


def apply_full(family: str, k: Tensor, params: list[Tensor], value: Tensor,
               refine: bool = False) -> Tensor:  # fmt: skip
    """``full=True``: -log P(X = k) from the loss ``value`` (float64, at the kernel's inputs)
    in Loader's stirlerr + bd0 form where it applies (:func:`ztbench.loss.stirlerr.ztp_full_value`,
    :func:`~ztbench.loss.stirlerr.ztnb_full_value`: lgamma(k + 1) is never added to the
    cancelling -k log(lam) + lam, resp. -lgamma(k + theta)), else value + lgamma(k + 1);
    ``refine`` (float64 results, eager): :func:`refine_full_float64`."""
    if family == "ztpoisson":
        full = ztp_full_value(k, params[0], value)
    else:
        full = ztnb_full_value(k, params[0], params[1], value)
    return refine_full_float64(family, k, params, full) if refine else full


def refine_full_float64(family: str, k: Tensor, params: list[Tensor], full: Tensor) -> Tensor:
    """The full value recomputed in double-double where its float64 form cancels: ZTP where
    Loader's bd0 is evaluated with cancellation (:func:`~ztbench.loss.stirlerr.ztp_full_condition`),
    ZTNB where Loader's form cancels or, where it does not apply, value + lgamma(k + 1)
    does (:func:`~ztbench.loss.dd.ztnb.ztnb_value_cancellation`); lgamma(k + 1) is then one
    of the summed terms (:func:`~ztbench.loss.dd.ztp.ztp_full_value_dd`,
    :func:`~ztbench.loss.dd.ztnb.ztnb_full_value_dd`). Eager only, as :func:`refine_float64`.
    """
    if family == "ztpoisson":
        (lam,) = params
        flag = ztp_full_condition(k, lam, full) > dd_ztp.FULL_CANCEL_FACTOR
        return replace_flagged(full, flag, dd_ztp.ztp_full_value_dd, k, lam)
    mu, theta = params
    cond = ztnb_full_condition(k, mu, theta, full)
    # one magnitude: it flags value + lgamma(k + 1) where Loader's form does not apply,
    # and the refined result for the last resort
    mag = dd_ztnb.ztnb_value_magnitude(k.to(torch.float64), mu, theta, full=True)
    flag = torch.where(
        cond.isinf(),
        mag > dd_ztnb.FULL_CANCEL_FACTOR * full.abs(),
        cond > dd_ztnb.FULL_CANCEL_FACTOR,
    ) & ~ztnb_tiny_loss(k, mu / theta)  # lgamma(k + 1) = 0 at k = 1: the loss itself
    return replace_flagged(full, flag, dd_ztnb.ztnb_full_value_dd, k, mu, theta,
                           last_resort=(mag, lr.ztnb_full_value_exact))  # fmt: skip


def _load_jvp_decompositions() -> None:
    """Import ``torch._decomp.decompositions_for_jvp`` once, without its warnings.

    The first forward-mode AD call in a process (``torch.func.jvp`` -> ``make_dual`` ->
    ``torch.autograd.forward_ad._maybe_load_decompositions``) imports that module, which
    registers decompositions for TorchScript's forward AD with ``torch.jit.script``: 18
    ``DeprecationWarning``s from torch itself (``python -W error`` turns them into a
    failed first call). Our jvp is eager and never uses TorchScript, and no public API
    runs forward AD without that import, so it is done here first, with exactly that
    warning ignored; later ``make_dual`` calls find the module imported."""
    if "torch._decomp.decompositions_for_jvp" in sys.modules:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning
        )
        importlib.import_module("torch._decomp.decompositions_for_jvp")


# Float64 results with log-parameters: the kernels see p = exp(log p) rounded to float64,
# the exact loss at a parameter up to an ulp away from the one the caller means. Where
# the loss or a derivative cancels, that ulp is many ulp of the result; a first-order
# correction by the kernel's own derivatives removes it (log_rounding_correction).
def log_rounding_correction(family: str, need: bool, k: Tensor, params: list[Tensor],
                            logs: list[Tensor], is_log: list[bool]
                            ) -> list[Tensor | None]:  # fmt: skip
    """:func:`log_rounding_terms` in :func:`in_chunks` (the where-based kernel and its
    tangents hold dozens of temporaries per element)."""
    m = len(params)

    def terms(k: Tensor, *rest) -> list[Tensor | None]:  # type: ignore[no-untyped-def]
        *ts, need_ = rest
        return log_rounding_terms(family, need_, k, list(ts[:m]), list(ts[m:]), is_log)

    return in_chunks(terms, need, k, *params, extra=tuple(logs))


def log_rounding_terms(family: str, need: bool, k: Tensor, params: list[Tensor],
                       logs: list[Tensor], is_log: list[bool]) -> list[Tensor | None]:  # fmt: skip
    """What to add to the float64 value (and, with ``need``, to the derivatives in the
    natural parameters) computed at ``params`` = exp(``logs``) rounded, to get them at the
    exact exp(``logs``), to first order (the second order is ~2^-106 relative).

    With d_l = log(p_l) - log_l (in double-double, ``dd_log``: about an ulp of exp's
    rounding; 0 for a natural parameter) and g_j = dL/dp_j:

        value:  - sum_l d_l p_l g_l
        g_j:    - d_j g_j [log j] - sum_l d_l dg_j/dlog p_l

    (the second line is p_true,j g_j(p_true) / p_j: the caller's chain rule multiplies by
    the rounded p_j). Near a zero crossing of a derivative, sum_l d_l dg_j/dlog p_l is as
    large as the result itself, so it must be accurate to a few ulp: it is the
    forward-mode derivative (``torch.func.jvp``, tangent d) of the where-based kernel's
    derivatives, which also give g. ``k``, ``params``, ``logs``: float64, one shape;
    ``logs`` holds the caller's log-parameters where ``is_log`` (elsewhere the natural
    parameter, unused). Eager code (double-double arithmetic); compiled callers use the
    opaque operator :func:`ztbench.loss.ops.log_rounding_opaque`. Non-finite terms (an
    overflowing kernel) are dropped."""
    deltas = []
    for p, lg, is_lg in zip(params, logs, is_log, strict=True):
        if is_lg:
            hi, lo = dd_log(p)
            deltas.append((hi - lg) + lo)  # hi - lg: exact (Sterbenz) or both ~0
        else:
            deltas.append(torch.zeros_like(p))

    def derivatives(*ps: Tensor) -> tuple[Tensor, ...]:
        natural = [torch.exp(t) if is_lg else t for t, is_lg in zip(ps, is_log, strict=True)]
        _, *grads = KERNELS[family].traced(k, *natural, True)
        return tuple(grads)

    _load_jvp_decompositions()
    # contiguous: a broadcast (stride-0) input cannot carry a tangent
    primals = tuple((lg if is_lg else p).contiguous()
                    for p, lg, is_lg in zip(params, logs, is_log, strict=True))  # fmt: skip
    grads, moved = torch.func.jvp(derivatives, primals, tuple(deltas))
    out = [-sum(d * p * g for d, p, g in zip(deltas, params, grads, strict=True))]
    if need:
        out += [-(d * g if is_lg else 0.0) - dg
                for d, g, dg, is_lg in zip(deltas, grads, moved, is_log, strict=True)]  # fmt: skip
    finite = [torch.where(torch.isfinite(t), t, torch.zeros_like(t)) for t in out]  # type: ignore[arg-type]
    return finite if need else [finite[0], *([None] * len(params))]
