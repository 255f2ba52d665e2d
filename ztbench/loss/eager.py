"""The eager computations of the eager paths (:class:`~ztbench.loss.paths.Path`), which the
custom operators of :mod:`ztbench.loss.ops` also run under torch.compile.

- :func:`forward_float32` (``EAGER_SCREENED_F32``) and :func:`screened` (``EAGER_SCREENED``):
  the float32 screen, :func:`screened_kernel`. The plain formula in float64
  (:mod:`ztbench.loss.screened`) is kept at each element where a bound on its error (from
  the sum's condition number) proves it within 2^-28 relative, so that a float32 result
  is within 0.5 + 1/8 ulp; the careful kernels recompute the other elements
  (:func:`recompute_at`).
- :func:`indexed` (``EAGER_INDEXED``): the careful kernels, each branch on its own elements.
- :func:`refined` (``EAGER_REFINED``): the same, then the double-double refinement where
  the float64 sum cancels (:func:`ztbench.loss.refine.refine_float64`).

:func:`screened`, :func:`indexed` and :func:`refined` take float64 inputs of one shape
(k, then the natural parameters) and return ``[value, *derivatives]`` in float64 (the
derivatives ``None`` without ``need``), in chunks that stay in cache
(:func:`~ztbench.loss.kernels.in_chunks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ztbench.loss import fused
from ztbench.loss import screened as S
from ztbench.loss import validation as V
from ztbench.loss.dd import ztp as dd_ztp
from ztbench.loss.kernels import (
    F64,
    FULL_CHUNK_SHARE,
    KERNELS,
    chain_rule,
    chunk_size,
    flat_indices,
    in_chunks,
    to_float64,
)
from ztbench.loss.paths import NARROW_DTYPES, result_dtype
from ztbench.loss.refine import (
    NARROW_SCALE,
    apply_full,
    refine_float64,
    refine_ztnb_at,
    replace_at,
)

__all__ = [
    "LOG_NAT_MAX",
    "NAT_MAX",
    "extremes",
    "fill_not_computed",
    "forward_float32",
    "forward_float64",
    "full_form",
    "indexed",
    "prepare_inputs",
    "recompute_at",
    "refined",
    "screened",
    "screened_kernel",
]


def screened_kernel(family: str, need: bool, full: bool, out_dtype: torch.dtype,
                    d_dtype: torch.dtype, k: Tensor, params: list[Tensor],
                    is_log: tuple[bool, ...]) -> tuple[Tensor, list[Tensor]] | None:  # fmt: skip
    """(value in ``out_dtype``, derivatives in ``d_dtype`` and the caller's
    parametrisation) for results of float32 precision or less, on flat inputs; None
    when an element is invalid (k not an integer >= 1, a parameter not finite and > 0,
    or a log-parameter whose exp leaves float32's positive range).

    In chunks of :func:`chunk_size` elements, the plain formula in float64
    (:mod:`ztbench.loss.screened`, natural parameters: exp of a log-parameter in
    float64), which certifies that its result is within 2^-28 relative of the exact one
    (so a float32 result is within 0.5 + 1/8 ulp): ZTP against one bound from the
    inputs' extremes (which the validity checks compute anyway), ZTNB element by
    element. The elements it does not certify (near zero crossings, the large-theta and
    tiny-lam cancellations) are recomputed by the careful kernel (:func:`recompute_at`).
    On realistic inputs nearly every element is certified, and the plain formula costs a
    fraction of the careful one.
    """
    n = k.numel()
    if n == 0:
        empty = [torch.empty(0, dtype=d_dtype) for _ in params] if need else []
        return torch.empty(0, dtype=out_dtype), empty
    by_kernel = _fused_screen(family, need, full, out_dtype, d_dtype, k, params, is_log)
    if by_kernel is not None:  # the fused kernel checks the inputs' validity itself
        if not by_kernel:
            return None
        value, derivs, rej = by_kernel
        if rej.numel():
            recompute_at(family, need, full, is_log, k, params, rej, [value, *derivs])
        return value, derivs
    # validity and the extremes the ZTP bound takes, once over the inputs as given
    k_min, k_max = extremes(k)
    if not V.all_valid_k(k, k_min, k_max):
        return None
    ranges = []
    for t, lg in zip(params, is_log, strict=True):
        lo, hi = extremes(t)
        if lg:
            if not hi <= LOG_NAT_MAX:  # math.exp would overflow (False at NaN)
                return None
            # exp is increasing; math.exp and torch.exp may differ in the last bit, which
            # the bound's slack covers
            lo, hi = math.exp(lo), math.exp(hi)
        if not (lo > 0.0 and hi < (NAT_MAX if lg else math.inf)):  # False at NaN
            return None
        ranges.append((lo, hi))
    if family == "ztnb":  # w = theta log1p(mu/theta) increases in mu and in theta
        (mu_min, _), (theta_min, _) = ranges
        ratio = mu_min / theta_min  # inf where it overflows: then log(mu) - log(theta)
        lx = math.log1p(ratio) if ratio < math.inf else math.log(mu_min) - math.log(theta_min)
        w_min = theta_min * lx
    value = torch.empty(n, dtype=out_dtype)
    derivs = [torch.empty(n, dtype=d_dtype) for _ in params] if need else []
    rejected: list[Tensor] = []
    chunk = chunk_size()
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        k64 = k[part].to(F64)
        ps = [to_float64(t[part], lg) for t, lg in zip(params, is_log, strict=True)]
        if family == "ztpoisson":
            v, *ds, rej = S.ztp_screened_chunk(k64, ps[0], need, full, k_max, *ranges[0])
        else:
            v, *ds, margin = S.ztnb_screened(k64, *ps, need, full, w_min)
            rej = flat_indices(S.certified(margin).logical_not_())
        value[part] = v
        for out, d in zip(derivs, chain_rule(ds, ps, is_log) if need else [], strict=True):
            out[part] = d
        if rej.numel():
            rejected.append(rej.add_(start))
    if rejected:
        recompute_at(family, need, full, is_log, k, params, torch.cat(rejected),
                     [value, *derivs])  # fmt: skip
    return value, derivs


# (value, derivatives, positions not certified), or () where an input is invalid
FusedResult = tuple[Tensor, list[Tensor], Tensor] | tuple[()]


def _fused_screen(family: str, need: bool, full: bool, out_dtype: torch.dtype,
                  d_dtype: torch.dtype, k: Tensor, params: list[Tensor],
                  is_log: tuple[bool, ...]) -> FusedResult | None:  # fmt: skip
    """The screen by the fused kernel (:mod:`ztbench.loss.fused`): (value, derivatives,
    positions of the elements it does not certify), () where an input is invalid (the
    same rules as :func:`screened_kernel`'s checks), or None where it does not apply
    (results other than float32, or the kernel is not available: the pure-torch screen
    then runs)."""
    # float32 holds bfloat16 and float16 exactly; their results are rounded twice (to
    # float32, then to their dtype), within 2^-16 ulp of one rounding; a float64 value
    # (to be reduced) is the plain formula's, as the pure-torch screen gives it
    if out_dtype not in (*NARROW_DTYPES, F64) or d_dtype != torch.float32:
        return None
    if any(t.dtype not in NARROW_DTYPES for t in params):
        return None
    mod = fused.load()
    if mod is None:
        return None
    value64 = out_dtype == F64  # a float64 value to reduce before the one rounding
    # ZTP's loss form with natural lam and k of a float dtype float32 holds, for bfloat16 /
    # float16 results: float32 arithmetic against the narrow result's own target, lam read
    # as it is
    limit = 0.0
    if family == "ztpoisson" and not (is_log[0] or full) and k.dtype in NARROW_DTYPES:
        limit = S.narrow_limit(result_dtype(*params))
    cols = [k.contiguous(), *(t.contiguous() if limit else t.to(torch.float32).contiguous()
                              for t in params)]  # fmt: skip
    if family == "ztpoisson":
        out = mod.ztp_screen(*cols, is_log[0], need, full, value64, limit)
    else:
        out = mod.ztnb_screen(*cols, is_log[0], is_log[1], need, full, value64)
    if not out:
        return ()
    value, *derivs, rejected = out
    return value.to(out_dtype), derivs, rejected


def recompute_at(family: str, need: bool, full: bool, is_log: tuple[bool, ...] | list[bool],
                 k: Tensor, params: list[Tensor], idx: Tensor,
                 outs: list[Tensor]) -> None:  # fmt: skip
    """Overwrite ``outs`` (flat: the value, then the derivatives in the caller's
    parametrisation when ``need``, each in its own dtype) at the positions ``idx`` with
    the careful kernel's results (:func:`in_chunks` of the INDEX kernel, then
    :func:`full_form` with ``full``). ``k`` and ``params``: flat, as the caller gave
    them (log-parameters where ``is_log``); only the elements at ``idx`` are converted.
    Refined (:func:`refined`) where the float64 sum cancels beyond what the outputs'
    precision absorbs (the float32 nearest a zero crossing)."""
    k_r = k.index_select(0, idx).to(F64)
    p_r = [to_float64(t.index_select(0, idx), lg) for t, lg in zip(params, is_log, strict=True)]
    v, *ds = refined(family, need, k_r, *p_r, scale=NARROW_SCALE)
    if full:
        v = full_form(family, k_r, p_r, v, False)  # type: ignore[arg-type]
    results = [v, *(chain_rule(ds, p_r, is_log) if need else [])]  # type: ignore[arg-type]
    for out, res in zip(outs, results, strict=True):
        out.index_copy_(0, idx, res.to(out.dtype))  # type: ignore[union-attr]


def fill_not_computed(x: Tensor, run: Tensor, keep: Tensor | None) -> Tensor:
    """x where the element was computed; NaN at invalid kept elements (NaN in, NaN out),
    exactly 0 at masked-out ones."""
    nan = torch.full_like(x, float("nan"))
    if keep is None:
        return torch.where(run, x, nan)
    return torch.where(run, x, torch.where(keep, nan, torch.zeros_like(x)))


def prepare_inputs(
    k: Tensor, mask: Tensor | None, params: tuple[Tensor, ...], is_log: tuple[bool, ...]
) -> tuple[Tensor, list[Tensor], Tensor, Tensor | None]:
    """(k, natural parameters) in float64 broadcast to the loss's shape, the elements to
    compute (valid and kept), and the broadcast mask (None without one)."""
    dev = params[0].device
    k = k.to(dev)
    p64 = [to_float64(p, lg) for p, lg in zip(params, is_log, strict=True)]
    # validity in the inputs' own dtypes where that is exact (exp of a log-parameter can
    # over/underflow only in float64)
    ok = V.valid_k(k)
    for p, p_64, lg in zip(params, p64, is_log, strict=True):
        ok = ok & V.valid_param(p_64 if lg or not p.is_floating_point() else p)
    keep = None if mask is None else mask.to(dev, torch.bool)
    if keep is None:
        k64, *p64 = torch.broadcast_tensors(k.to(F64), *p64)
        run = ok.expand(k64.shape)
    else:
        k64, *p64, keep = torch.broadcast_tensors(k.to(F64), *p64, keep)
        run = ok.expand(k64.shape) & keep
    return k64, p64, run, keep


def extremes(t: Tensor) -> tuple[float, float]:
    """(min, max) of a tensor as Python floats (NaN if it holds a NaN)."""
    lo, hi = torch.aminmax(t)
    return float(lo), float(hi)


def forward_float32(family: str, full: bool, need: bool, out_dtype: torch.dtype, k: Tensor,
                    params: tuple[Tensor, ...], is_log: tuple[bool, ...],
                    mask: Tensor | None) -> tuple[Tensor, list[Tensor]] | None:  # fmt: skip
    """The eager forward for float32 parameters on the CPU: (value in ``out_dtype``,
    float32 derivatives in the caller's parametrisation) by :func:`screened_kernel` on
    the kept elements (all without ``mask``; masked-out ones get exactly 0 in every
    output), or None when a kept element is invalid or a log-parameter is out of
    float32's range (the general path, ``Path.EAGER_SCREENED``, then raises or puts NaN
    there). Inputs stay
    float32 until each chunk is converted (no full-size float64 copies).
    """
    cols = torch.broadcast_tensors(k, *params, *(() if mask is None else (mask,)))
    shape = cols[0].shape
    flat = [t.reshape(-1) for t in cols]
    keep = None
    if mask is not None:
        keep = flat_indices(flat.pop().to(torch.bool))
        flat = [t.index_select(0, keep) for t in flat]
    res = screened_kernel(family, need, full, out_dtype, torch.float32, flat[0], flat[1:],
                          is_log)  # fmt: skip
    if res is None:
        return None
    value, derivs = res
    if keep is not None:
        total = shape.numel()
        value = torch.zeros(total, dtype=out_dtype).index_copy_(0, keep, value)
        derivs = [torch.zeros(total, dtype=torch.float32).index_copy_(0, keep, d) for d in derivs]
    return value.reshape(shape), [d.reshape(shape) for d in derivs]


def float64_kernel_applies(k: Tensor, params: Sequence[Tensor], is_log: Sequence[bool],
                           mask: Tensor | None) -> bool:
    """Whether :func:`forward_float64` takes the call to the fused float64 kernel: natural
    float64 parameters of k's shape on the CPU, no mask (the shapes, dtypes and devices
    only, never the values: a constant to torch.compile)."""
    if mask is not None or any(is_log) or k.device.type != "cpu":
        return False
    return all(p.dtype == F64 and p.device == k.device and p.shape == k.shape for p in params)


def forward_float64(family: str, full: bool, need: bool, k: Tensor, params: tuple[Tensor, ...],
                    is_log: tuple[bool, ...],
                    mask: Tensor | None) -> tuple[Tensor, list[Tensor]] | None:  # fmt: skip
    """The eager forward for float64 natural parameters on the CPU, each of k's shape,
    without a mask: (float64 value, float64 derivatives) by the family's fused float64
    kernel, which checks the inputs in its own pass (no boolean temporaries, no float64
    copies), then :func:`refined`'s refinement of the elements it flags. None where that
    does not apply (other inputs, the kernel not available) or an input is invalid: the
    general path (``Path.EAGER_REFINED``) then raises or puts NaN there."""
    if not float64_kernel_applies(k, params, is_log, mask):
        return None
    k64 = k.to(F64)
    res = _fused_float64(family, need, k64, *params)
    if res is None:
        return None
    value, *derivs = res
    if full:
        value = full_form(family, k64, list(params), value, True)  # type: ignore[arg-type]
    return value, (derivs if need else [])  # type: ignore[return-value]


# the largest natural parameter the float32 fast path takes from a log-parameter (exp in
# float64 of a float32 log-parameter stays inside float32's range, so every float64
# term of the plain formulas stays finite, see ztbench.loss.screened)
NAT_MAX = 2.0**128
LOG_NAT_MAX = math.log(NAT_MAX)


def screened(family: str, need: bool, k: Tensor, *params: Tensor) -> list[Tensor | None]:
    """``EAGER_SCREENED``: :func:`screened_kernel` on float64 inputs (safe stand-ins at the
    elements not computed, so every element is valid), float64 outputs. CPU only."""
    flat = [p.reshape(-1) for p in params]
    res = screened_kernel(family, need, False, F64, F64, k.reshape(-1), flat,
                          (False,) * len(params))  # fmt: skip
    assert res is not None, "the general path passes valid (safe) inputs only"
    value, derivs = res
    if not need:
        return [value.reshape(k.shape), *([None] * len(params))]
    return [value.reshape(k.shape), *(d.reshape(k.shape) for d in derivs)]


def indexed(family: str, need: bool, k: Tensor, *params: Tensor) -> list[Tensor | None]:
    """``EAGER_INDEXED`` (results of float32 precision or less): the careful kernel, each
    branch on its own elements, refined where its float64 sum cancels beyond what float32
    absorbs (:func:`refined` with :data:`~ztbench.loss.refine.NARROW_SCALE`)."""
    return refined(family, need, k, *params, scale=NARROW_SCALE)


def full_form(family: str, k: Tensor, params: list[Tensor], value: Tensor,
              refine: bool) -> Tensor:  # fmt: skip
    """``full=True`` in eager mode: :func:`~ztbench.loss.refine.apply_full` on slices of
    ``chunk_size(FULL_CHUNK_SHARE)`` elements (its double-double refinement holds ~4 kB
    per element: over 10^7 elements at once that was 15 GB), written into one float64
    tensor (elementwise: the same bits as one call). ``k``, ``params``, ``value``: float64,
    one shape."""

    def full(k: Tensor, *rest: Tensor | bool) -> list[Tensor | None]:
        *ps, v, _ = rest
        return [apply_full(family, k, list(ps), v, refine), *([None] * len(ps))]  # type: ignore[arg-type]

    out = in_chunks(full, False, k, *params, extra=(value,), share=FULL_CHUNK_SHARE)[0]
    return out  # type: ignore[return-value]


def refined(family: str, need: bool, k: Tensor, *params: Tensor,
            scale: float = 1.0) -> list[Tensor | None]:  # fmt: skip
    """``EAGER_REFINED``: the careful kernel, each branch on its own elements, then the
    double-double refinement of the float64 results where they cancel (``scale``: of the
    cancel factors, :func:`~ztbench.loss.refine.refine_float64`). Float64 results
    (``scale`` 1) on the CPU come from the family's fused float64 kernel where it is
    available (:func:`_fused_float64`)."""
    if scale == 1.0 and k.device.type == "cpu":
        out = _fused_float64(family, need, k, *params)
        if out is not None:
            return out
    return _careful_refined(family, need, k, *params, scale=scale)


def _careful_refined(family: str, need: bool, k: Tensor, *params: Tensor,
                     scale: float = 1.0) -> list[Tensor | None]:  # fmt: skip
    """:func:`refined` by the careful kernel and :func:`refine_float64`."""
    fast = KERNELS[family].indexed

    def kernel_and_refinement(k: Tensor, *params_and_need) -> list[Tensor | None]:  # type: ignore[no-untyped-def]
        # chunk by chunk, so that the refinement's passes stay in cache
        *ps, need_ = params_and_need
        value, *grads = fast(k, *ps, need_)
        value, grads = refine_float64(family, k, list(ps), value, grads, scale)
        return [value, *grads]

    return in_chunks(kernel_and_refinement, need, k, *params)


def _fused_float64(family: str, need: bool, k: Tensor,
                   *params: Tensor) -> list[Tensor | None] | None:  # fmt: skip
    """:func:`refined` by the family's fused float64 kernel (float64 CPU inputs of one
    shape); None where it is not available or an input is invalid."""
    if family == "ztpoisson":
        return _ztp_fused_float64(need, k, params[0])
    return _ztnb_fused_float64(need, k, *params)


def _careful_at(family: str, need: bool, cols: list[Tensor], idx: Tensor,
                outputs: list[Tensor]) -> None:  # fmt: skip
    """Overwrite the flat ``outputs`` (the value, then the derivatives when ``need``) at
    the positions ``idx`` with :func:`_careful_refined` of the flat inputs ``cols``
    there."""
    if not idx.numel():
        return
    sub = _careful_refined(family, need, *(c[idx] for c in cols))
    for full, part in zip(outputs, sub, strict=False):
        full.index_copy_(0, idx, part)  # type: ignore[arg-type]


def _ztp_fused_float64(need: bool, k: Tensor, lam: Tensor) -> list[Tensor | None] | None:
    """:func:`refined` for ZTP by the fused float64 kernel (:func:`fused.ztp_float64`):
    its certified results, the double-double ones (:mod:`ztbench.loss.dd.ztp`) where it
    flags an element, and the careful kernel's path on the elements outside its range.
    None where the kernel is not built or an input is invalid."""
    shape = k.shape
    kf, lf = k.reshape(-1).contiguous(), lam.reshape(-1).contiguous()
    out = fused.ztp_float64(kf, lf, need)
    if not out:  # not built, or an invalid input
        return None
    value, d_lam, open_v, open_d, outside = out
    value = replace_at(value, open_v, dd_ztp.ztp_value_dd, kf, lf, copy=False)
    if need:
        d_lam = replace_at(d_lam, open_d, dd_ztp.ztp_grad_dd, kf, lf, copy=False)
    _careful_at("ztpoisson", need, [kf, lf], outside, [value, d_lam] if need else [value])
    return [value.reshape(shape), d_lam.reshape(shape) if need else None]


def _ztnb_fused_float64(need: bool, k: Tensor, mu: Tensor,
                        theta: Tensor) -> list[Tensor | None] | None:  # fmt: skip
    """:func:`refined` for ZTNB by the fused float64 kernel (:func:`fused.ztnb_float64`):
    its certified results, the double-double ones (:func:`refine_ztnb_at`) at each output
    it flags, and the careful kernels' path (:func:`_careful_refined`) where those do not
    apply. None where the kernel is not available or an input is invalid."""
    shape = k.shape
    cols = [t.reshape(-1).contiguous() for t in (k, mu, theta)]
    out = fused.ztnb_float64(*cols, need)
    if not out:  # not available, or an invalid input
        return None
    outputs, flagged = out[: 3 if need else 1], out[3:]
    _careful_at("ztnb", need, cols, refine_ztnb_at(*cols, outputs, flagged), outputs)
    results: list[Tensor | None] = [t.reshape(shape) for t in outputs]
    return results if need else [*results, None, None]
