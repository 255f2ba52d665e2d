"""Error measures: ulp error, bits of error, absolute and relative error, failures.

The one implementation of "ulp" for the project. Everything is vectorised numpy over
float64 arrays: a *computed* value is a float64 array whose entries are exactly
representable in the target format T (see :func:`ztbench.core.dtypes.round_to`); a
*reference* is float64 (the correctly rounded exact value), so it is usually NOT
representable in T and the ulp error can be fractional (0.3 ulp).

Definitions (T has p significand bits, smallest normal ``tiny = 2**min_exp``):

``ulp(x, T)``
    For ``|x|`` in ``[2**e, 2**(e+1))`` with ``e >= min_exp``: ``2**(e - p + 1)``.
    Below ``tiny`` (subnormal range, and ``x = 0``): the subnormal spacing
    ``smallest_subnormal``. At and beyond T's largest float (``|x| > max``, ``inf``): the
    ulp of ``max`` (T has no wider spacing). ``ulp(NaN) = NaN``.

``ulp_error(c, r, T)`` = ``|c - r| / ulp(r, T)``, with SciPy xsref's extended conventions:
    * NaN vs NaN is 0; NaN vs a number (either way round) is ``inf``.
    * A zero reference: the error is in units of T's smallest subnormal (``ulp(0)``).
    * A reference that rounds to ``+-inf`` in T (a float64 inf, or a finite value beyond
      T's range) is compared as ``+-(max + ulp(max))``, one ulp past T's largest float,
      in units of ``ulp(max)``: the same infinity scores 0, ``max`` scores 1 ulp.
    * **Decision**: a computed ``inf``/``NaN`` where the reference is finite in T is a
      *failure* and scores ``+inf`` (not xsref's "one ulp past max"): a loss that
      overflows where the true value is representable is broken, not "a bit off".
      An infinity of the wrong sign also scores ``+inf``.

``bits_error(c, r, T)`` = Herbie's ``log2(1 + N)``, N the number of floats of T between c
    and r rounded to T (adjacent floats: N = 1, 1 bit; equal: 0). Floats are counted by
    their ordinal index (:func:`ordinals`: +0 and -0 share index 0, infinities are the
    indices just past ``+-max``). Same NaN/failure conventions as ``ulp_error``
    (failures and NaN mismatches are ``+inf``).

``abs_error``, ``rel_error``: ``|c - r|`` and ``|c - r| / |r|`` in float64 (no target
    format). NaN vs NaN and equal infinities are 0; NaN vs number, an infinity vs anything
    else, and (relative) a non-zero value vs a zero reference are ``inf``.

``failures(c, r[, T])``: computed non-finite where the reference is finite (in T when T is
    given, so an overflowing reference computed as inf is not a failure).

:func:`summarise_errors` reduces per-point ulp errors; failures rank above every finite
error (they are ``+inf``), so ``max_ulp`` is ``inf`` as soon as one point fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ztbench.core.dtypes import get_format, round_to

__all__ = [
    "ErrorSummary",
    "abs_error",
    "bits_error",
    "failures",
    "from_ordinals",
    "ordinals",
    "rel_error",
    "step_floats",
    "summarise_errors",
    "ulp",
    "ulp_error",
]

# Per format: (numpy signed integer type of the bit pattern, its width in bits).
_INT_BITS = {"float64": 64, "float32": 32, "bfloat16": 16, "float16": 16}


def _f64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _max_exp(dtype: str) -> int:
    """Exponent e of T's largest float (max in [2**e, 2**(e+1)))."""
    return int(np.frexp(get_format(dtype).max)[1]) - 1


def ulp(x: Any, dtype: str) -> np.ndarray:
    """Unit in the last place of T at the float64 values ``x`` (see the module docstring).

    ``ulp(0) = smallest_subnormal``; ``ulp(+-inf) = ulp(max)``; ``ulp(NaN) = NaN``.
    """
    fmt = get_format(dtype)
    a = np.abs(_f64(x))
    with np.errstate(invalid="ignore"):
        _, e = np.frexp(a)  # a = m * 2**e, m in [0.5, 1): binade exponent is e - 1
    exp = np.clip(e.astype(np.int64) - 1, fmt.min_exp, _max_exp(dtype))
    exp = np.where(np.isinf(a), _max_exp(dtype), exp)
    exp = np.where(a == 0, fmt.min_exp, exp)
    u = np.ldexp(1.0, exp - fmt.mant_bits + 1)
    return np.where(np.isnan(a), np.nan, u)


def _nan_conventions(c: np.ndarray, r: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Apply NaN vs NaN = 0, NaN vs number = inf."""
    cn, rn = np.isnan(c), np.isnan(r)
    err = np.where(cn & rn, 0.0, err)
    return np.where(cn ^ rn, np.inf, err)


def failures(computed: Any, reference: Any, dtype: str | None = None) -> np.ndarray:
    """Boolean mask: computed NaN or +-inf where the reference is finite.

    With ``dtype``, the reference is first rounded to T, so a reference beyond T's range
    (correctly rounded to inf) makes a computed inf correct, not a failure.
    """
    c, r = np.broadcast_arrays(_f64(computed), _f64(reference))
    if dtype is not None:
        r = round_to(r, dtype)
    return ~np.isfinite(c) & np.isfinite(r)


def ulp_error(computed: Any, reference: Any, dtype: str) -> np.ndarray:
    """``|computed - reference| / ulp_T(reference)`` with the extended conventions.

    See the module docstring; failures (computed non-finite, reference finite in T) and
    NaN mismatches are ``+inf``. Never NaN.
    """
    fmt = get_format(dtype)
    c, r = np.broadcast_arrays(_f64(computed), _f64(reference))
    r_t = round_to(r, dtype)
    u = ulp(r, dtype)
    u_max = float(ulp(fmt.max, dtype))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(c - r) / u
        # |c - r| overflowed float64 (opposite signs near float64 max): rescale first.
        over = np.isinf(err) & np.isfinite(c) & np.isfinite(r)
        if over.any():
            err = np.where(over, np.abs(c / u - r / u), err)
        # Reference rounds to +-inf in T: compare with +-(max + ulp(max)) in ulp(max)
        # units; (max + ulp(max)) / ulp(max) = 2**p exactly.
        r_inf = np.isinf(r_t)
        if r_inf.any():
            s = np.sign(r_t)
            ext = np.abs(c / u_max - s * 2.0**fmt.mant_bits)
            ext = np.where(np.isinf(c), np.where(c == r_t, 0.0, np.inf), ext)
            err = np.where(r_inf, ext, err)
    err = np.where(failures(c, r_t), np.inf, err)
    return _nan_conventions(c, r, err)


def ulp_error_at(computed: Any, reference: Any, scale: Any, dtype: str) -> np.ndarray:
    """``|computed - reference|`` in ulps of dtype at ``scale`` (not at the reference).

    For a loss-form value (without lgamma(k + 1)) with ``scale`` the full NLL, -log P >= 0:
    the error in ulps of the full NLL, which has no zero crossing for the ulp to blow up at
    (the measure for threshold rules). :func:`ulp_error`'s conventions (failures are inf),
    rescaled by ulp(reference) / ulp(scale).
    """
    err = ulp_error(computed, reference, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = err * (ulp(_f64(reference), dtype) / ulp(_f64(scale), dtype))
    return np.where(err == 0.0, 0.0, np.where(np.isinf(err), np.inf, scaled))


def ordinals(x: Any, dtype: str) -> np.ndarray:
    """Ordinal index (int64) of the floats of T nearest ``x`` (``x`` is rounded to T first).

    Consecutive floats of T have consecutive ordinals; +0 and -0 are 0, the smallest
    positive subnormal is 1, ``+inf`` is ``ordinals(max) + 1`` and negatives mirror the
    positives. NaN gives an unspecified value: mask NaNs yourself.
    """
    fmt = get_format(dtype)
    xt = np.array(round_to(_f64(x), dtype), dtype=np.float64, order="C")
    if fmt.name == "float64":
        bits = xt.view(np.int64)
    elif fmt.name == "float32":
        bits = xt.astype(np.float32).view(np.int32).astype(np.int64)
    elif fmt.name == "float16":
        bits = xt.astype(np.float16).view(np.int16).astype(np.int64)
    elif fmt.name == "bfloat16":
        t = torch.from_numpy(xt.reshape(-1)).to(torch.bfloat16).view(torch.int16)
        bits = t.numpy().astype(np.int64).reshape(xt.shape)
    else:  # pragma: no cover - FORMATS and _INT_BITS list the same names
        raise ValueError(f"no ordinal mapping for {dtype!r}")
    mag = bits & np.int64((1 << (_INT_BITS[fmt.name] - 1)) - 1)
    return np.where(bits < 0, -mag, mag)


def from_ordinals(o: Any, dtype: str) -> np.ndarray:
    """Inverse of :func:`ordinals`: the floats of T (as float64) with ordinal index ``o``.

    Indices beyond ``+-ordinals(inf)`` are NaN bit patterns; callers clip.
    """
    fmt = get_format(dtype)
    o = np.array(o, dtype=np.int64, order="C")
    nbits = _INT_BITS[fmt.name]
    mag = np.abs(o)
    if fmt.name == "float64":
        bits = np.where(o < 0, mag | np.int64(np.iinfo(np.int64).min), mag)
        return np.array(bits, dtype=np.int64, order="C").view(np.float64)
    sign = np.int64(1 << (nbits - 1))
    ubits = np.where(o < 0, mag | sign, mag)
    if fmt.name == "float32":
        return ubits.astype(np.uint32).view(np.float32).astype(np.float64)
    if fmt.name == "float16":
        return ubits.astype(np.uint16).view(np.float16).astype(np.float64)
    t = torch.from_numpy(ubits.astype(np.uint16).view(np.int16).reshape(-1))
    return t.view(torch.bfloat16).to(torch.float64).numpy().reshape(o.shape)


def step_floats(x: Any, dtype: str, steps: Any) -> np.ndarray:
    """``x`` rounded to T, then moved ``steps`` floats of T (nextafter applied |steps| times).

    Broadcasts ``x`` against ``steps``; saturates at ``+-inf``.
    """
    o = ordinals(x, dtype)
    top = int(ordinals(np.inf, dtype))
    return from_ordinals(np.clip(o + np.asarray(steps, dtype=np.int64), -top, top), dtype)


def bits_error(computed: Any, reference: Any, dtype: str) -> np.ndarray:
    """Herbie's bits of error ``log2(1 + #floats of T between c and round_T(r))``.

    Failures (computed non-finite, reference finite in T), NaN mismatches and infinities
    of opposite signs are ``+inf``; NaN vs NaN is 0. Never NaN.
    """
    c, r = np.broadcast_arrays(_f64(computed), _f64(reference))
    r_t = round_to(r, dtype)
    nan = np.isnan(c) | np.isnan(r_t)
    a = ordinals(np.where(nan, 0.0, c), dtype)
    b = ordinals(np.where(nan, 0.0, r_t), dtype)
    # |a - b| can exceed int64 (e.g. -inf vs +inf in float64): modular uint64 arithmetic
    # gives the exact distance because the true distance is below 2**64.
    au, bu = a.view(np.uint64), b.view(np.uint64)
    dist = np.where(a >= b, au - bu, bu - au)
    err = np.log2(dist.astype(np.float64) + 1.0)
    bad = failures(c, r_t) | (np.isinf(c) & np.isinf(r_t) & (c != r_t))
    err = np.where(bad, np.inf, err)
    return _nan_conventions(c, r_t, err)


def abs_error(computed: Any, reference: Any) -> np.ndarray:
    """``|computed - reference|`` in float64; NaN/inf conventions in the module docstring."""
    c, r = np.broadcast_arrays(_f64(computed), _f64(reference))
    with np.errstate(invalid="ignore"):
        err = np.abs(c - r)
    inf_any = np.isinf(c) | np.isinf(r)
    err = np.where(inf_any, np.where(c == r, 0.0, np.inf), err)
    return _nan_conventions(c, r, err)


def rel_error(computed: Any, reference: Any) -> np.ndarray:
    """``|computed - reference| / |reference|``; a zero reference gives 0 (c == 0) or inf."""
    c, r = np.broadcast_arrays(_f64(computed), _f64(reference))
    a = abs_error(c, r)
    # a tiny reference can overflow the quotient: inf is the right relative error then
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        err = a / np.abs(r)
    err = np.where(r == 0, np.where(a == 0, 0.0, np.inf), err)
    err = np.where(np.isinf(r), a, err)  # equal infinities 0, otherwise inf (from abs)
    return _nan_conventions(c, r, err)


@dataclass(frozen=True)
class ErrorSummary:
    """Summary of per-point ulp errors (and optionally bits of error).

    ``failures`` counts points with an infinite error (failures in the sense of
    :func:`failures`, plus NaN/inf mismatches). ``max_ulp``, ``p99_ulp`` and
    ``median_ulp`` are order statistics over ALL points, infinities included (so
    ``max_ulp`` is ``inf`` as soon as one point fails); quantiles take the upper of the
    two straddling values (numpy ``method="higher"``), never interpolating.
    ``mean_ulp`` and ``rms_ulp`` are over the finite errors only (NaN when there are
    none): read them together with ``failures``. ``worst`` is the index of the largest
    error (failures first; ties: the first index), -1 when ``n == 0``.
    """

    n: int
    failures: int
    max_ulp: float
    p99_ulp: float
    median_ulp: float
    mean_ulp: float
    rms_ulp: float
    worst: int
    max_bits: float = float("nan")
    mean_bits: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready: floats and ints)."""
        return asdict(self)


def _finite_mean(x: np.ndarray) -> float:
    """Mean of the finite entries, scaled so that a sum of 1e308-ulp errors cannot overflow."""
    fin = x[np.isfinite(x)]
    if not fin.size:
        return float("nan")
    scale = float(np.abs(fin).max()) or 1.0
    return scale * float(np.mean(fin / scale))


def _rms(x: np.ndarray) -> float:
    """Root mean square without overflow: errors can reach 1e308 ulp (a zero reference)."""
    if not x.size:
        return float("nan")
    scale = float(np.abs(x).max())
    if scale == 0.0:
        return 0.0
    return scale * float(np.sqrt(np.mean((x / scale) ** 2)))


def summarise_errors(
    ulp_err: Any, failures: Any | None = None, bits_err: Any | None = None
) -> ErrorSummary:
    """Reduce per-point ulp errors to an :class:`ErrorSummary`.

    ``failures`` (optional boolean mask) forces those points to ``+inf``; NaN errors (which
    :func:`ulp_error` never returns) are treated as ``+inf`` too, so that nothing broken
    can hide. ``bits_err`` (optional, same length) fills ``max_bits`` / ``mean_bits``.
    """
    err = _f64(ulp_err).ravel()
    if failures is not None:
        err = np.where(np.asarray(failures, dtype=bool).ravel(), np.inf, err)
    err = np.where(np.isnan(err), np.inf, err)
    n = int(err.size)
    max_bits = mean_bits = float("nan")
    if bits_err is not None and n:
        b = _f64(bits_err).ravel()
        if failures is not None:
            b = np.where(np.asarray(failures, dtype=bool).ravel(), np.inf, b)
        b = np.where(np.isnan(b), np.inf, b)
        max_bits, mean_bits = float(b.max()), _finite_mean(b)
    if n == 0:
        nan = float("nan")
        return ErrorSummary(0, 0, nan, nan, nan, nan, nan, -1, max_bits, mean_bits)
    fin = err[np.isfinite(err)]
    return ErrorSummary(
        n=n,
        failures=int(n - fin.size),
        max_ulp=float(err.max()),
        p99_ulp=float(np.quantile(err, 0.99, method="higher")),
        median_ulp=float(np.quantile(err, 0.5, method="higher")),
        mean_ulp=_finite_mean(fin),
        rms_ulp=_rms(fin),
        worst=int(np.argmax(err)),
        max_bits=max_bits,
        mean_bits=mean_bits,
    )
