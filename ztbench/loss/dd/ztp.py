"""Double-double refinement of the ZTP loss and its d/dlam (float64 results).

The float64 ZTP kernel (:func:`ztbench.loss.kernels.ztp_kernel`) computes

    value(k, lam) = -k log(lam) + log(expm1(lam))
    d_lam(k, lam) = -k/lam + 1/(1 - e^-lam)

as float64 sums whose terms cancel where the result crosses zero (value: k log(lam) against
log(expm1(lam)); d_lam: (lam - k)/lam against 1/expm1(lam)). This module recomputes those
sums from terms known to far more than 53 bits (:mod:`ztbench.loss.dd.arith`) and rounds
once, so the result is accurate to a few float64 ulp even at the float64 neighbours of a
zero crossing. It is meant for the points that :func:`ztp_cancellation` flags.

Accuracy (tests/loss/test_dd_ztp.py holds it against mpmath at 80 digits, certified at 110):
the unrounded value sum is within ~2^-104 of its largest term (d_lam's likewise), so the
rounded result is within a few ulp wherever the terms cancel by less than ~2^50; at the
float64 nearest a zero crossing the result can be arbitrarily small by chance, so no
fixed-precision method bounds the ulp error there.

Public functions: :func:`ztp_value_dd`, :func:`ztp_grad_dd`, :func:`ztp_cancellation`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ztbench.loss import primitives as P
from ztbench.loss.dd.arith import (
    EXP_DD_MAX,
    dd_div,
    dd_div_f,
    dd_exp_neg,
    fast_two_sum,
    log_expansion,
    one_minus,
    sum_expansion,
    two_prod,
    two_sum,
)
from ztbench.loss.dd.lgamma import log_factorial_terms

__all__ = [
    "FULL_CANCEL_FACTOR",
    "GRAD_CANCEL_FACTOR",
    "VALUE_CANCEL_FACTOR",
    "ztp_cancellation",
    "ztp_full_value_dd",
    "ztp_grad_dd",
    "ztp_value_dd",
]


def ztp_value_dd(k: Tensor, lam: Tensor) -> Tensor:
    """ZTP loss value -k log(lam) + log(expm1(lam)) (no lgamma(k+1)), float64, few ulp.

    - lam >= 1: ``-k log(lam) + lam + log(1 - e^-lam)``. k log(lam) is formed exactly from
      the 8-float expansion of log(lam) (:func:`log_expansion`, ~2^-112 relative) by
      :func:`two_prod`; lam is exact; for lam <= 40, 1 - e^-lam = z is formed exactly
      from y = e^-lam (:func:`dd_exp_neg`, ~2^-104 relative, y <= e^-1) as three floats
      z0 + z1 + z2, and log z = log(z0) + log1p(t), t = (z1 + z2)/z0 (double-double,
      |t| < 2^-52, log1p(t) = t - t^2/2); for lam > 40, log(1 - y) = -y - y^2/2 in
      float64 (y < 2^-57: absolute error < 2^-110). All the pieces (~30 floats) are summed
      by :func:`sum_expansion`, i.e. rounded once: the error is at most ~2^-104 of the
      largest term (measured; the largest part is e^-lam's error near lam = 1, the log
      part is ~2^-112) plus the final rounding, so a result that cancels 2^50-fold (the float64
      neighbours of a zero crossing) still has a few ulp.
    - lam < 1: ``-(k - 1) log(lam) + h(lam)``, h = log(expm1(lam)/lam) in float64
      (:func:`~ztbench.loss.primitives.log_expm1_over_x`): both terms are >= 0, no
      cancellation (measured: the float64 kernel is within 2 ulp there); (k - 1) log(lam)
      is formed from the expansion as above.

    Invalid input (k < 1, lam <= 0, non-finite) is not checked: the caller's job.
    """
    return sum_expansion(_value_terms(k, lam))


def ztp_full_value_dd(k: Tensor, lam: Tensor) -> Tensor:
    """-log P(X = k) of the ZTP law, -k log(lam) + lgamma(k + 1) + log(expm1(lam)), float64.

    The terms of :func:`ztp_value_dd` and the expansion of lgamma(k + 1)
    (:func:`~ztbench.loss.dd.lgamma.log_factorial_terms`: (k + 1/2) log k - k +
    log(2 pi)/2 + corr(k), or an exact table below k = 32) summed once: the cancellation
    of k log(lam) against lgamma(k + 1) + lam where k ~ lam (about 2^24 at k = 1e7) costs
    nothing beyond the ~2^-104 relative error of the largest term.
    """
    k = k.to(torch.float64)
    lam = lam.to(torch.float64)
    k, lam = torch.broadcast_tensors(k, lam)
    return sum_expansion(_value_terms(k, lam) + log_factorial_terms(k))


def _value_terms(k: Tensor, lam: Tensor) -> list[Tensor]:
    """The expansion (~30 floats) whose sum is :func:`ztp_value_dd`."""
    k = k.to(torch.float64)
    lam = lam.to(torch.float64)
    k, lam = torch.broadcast_tensors(k, lam)
    big = lam >= 1.0
    mid = big & (lam <= EXP_DD_MAX)
    lam_s = torch.where(big, torch.full_like(lam, 0.5), lam)
    lam_m = torch.where(mid, lam, torch.full_like(lam, 2.0))
    lam_b = torch.where(lam > EXP_DD_MAX, lam, torch.full_like(lam, 2.0 * EXP_DD_MAX))

    # log(lam) expansion, times -k (lam >= 1) or -(k - 1) (lam < 1)
    mult = torch.where(big, -k, 1.0 - k)
    terms: list[Tensor] = []
    for t in log_expansion(lam):
        p, e = two_prod(mult, t)
        terms += [p, e]
    zero = torch.zeros_like(lam)
    # lam >= 1: + lam + log(1 - e^-lam)
    y = dd_exp_neg(lam_m)
    z0, z1, z2 = one_minus(y)
    lz = log_expansion(z0)
    t = dd_div_f(fast_two_sum(z1, z2), z0)
    yb = torch.exp(-lam_b)
    tail_big = -yb - 0.5 * yb * yb
    mid_terms = [*lz, t[0], t[1], -0.5 * t[0] * t[0]]
    terms.append(torch.where(big, lam, P.log_expm1_over_x(lam_s)))
    for tm in mid_terms:
        terms.append(torch.where(mid, tm, zero))
    terms.append(torch.where(big & ~mid, tail_big, zero))
    return terms


def ztp_grad_dd(k: Tensor, lam: Tensor) -> Tensor:
    """d/dlam of the ZTP loss, -k/lam + 1/(1 - e^-lam), float64, few ulp.

    - lam > 1: ``(lam - k)/lam + y/(1 - y)``, y = e^-lam. lam - k is formed exactly
      (:func:`two_sum`), the quotient in double-double; for lam <= 40, y is a
      double-double (:func:`dd_exp_neg`), 1 - y a double-double and y/(1 - y) a
      double-double quotient (~2^-103 relative); for lam > 40 both are float64 (the
      term is < 2^-57 and the first term is then either exactly 0 or at least
      ulp(lam)/lam, so no cancellation reaches it). The double-double sum is rounded once.
    - lam <= 1: ``-(k - 1)/lam + q(lam)``, q = 1/(1 - e^-x) - 1/x in float64 (its series,
      :func:`~ztbench.loss.primitives.inv1mexp_minus_inv`, q in [1/2, 0.582]) with
      (k - 1)/lam as a double-double: |(k - 1)/lam| >= 1 > q for k >= 2, so the
      cancellation is at most 1/(1 - 0.582) ~ 2.4-fold (no zero crossing below lam = 1).
    """
    k = k.to(torch.float64)
    lam = lam.to(torch.float64)
    k, lam = torch.broadcast_tensors(k, lam)
    zero = torch.zeros_like(lam)
    small = lam <= 1.0
    mid = ~small & (lam <= EXP_DD_MAX)
    lam_s = torch.where(small, lam, torch.full_like(lam, 0.5))
    lam_m = torch.where(mid, lam, torch.full_like(lam, 2.0))
    # first term: (lam - k)/lam or -(k - 1)/lam, the numerator exact as a double-double
    num = two_sum(lam, -k)
    num_s = two_sum(1.0 - k, zero)  # k - 1 is exact (k < 2^53)
    num = (torch.where(small, num_s[0], num[0]), torch.where(small, num_s[1], num[1]))
    first = dd_div_f(num, lam)
    # second term
    y = dd_exp_neg(lam_m)
    one_y = one_minus(y)
    sec_m = dd_div(y, fast_two_sum(one_y[0], one_y[1] + one_y[2]))
    yb = torch.exp(-lam)
    sec_b = yb / (1.0 - yb)
    sec_hi = torch.where(small, P.inv1mexp_minus_inv(lam_s), torch.where(mid, sec_m[0], sec_b))
    sec_lo = torch.where(mid, sec_m[1], zero)
    return sum_expansion([first[0], first[1], sec_hi, sec_lo])


# ------------------------------------------------------------------- cancellation test
VALUE_CANCEL_FACTOR = 2.0
GRAD_CANCEL_FACTOR = 2.0
# the full form (:func:`ztbench.loss.stirlerr.ztp_full_value`): refined where its
# weighted condition number (:func:`ztbench.loss.stirlerr.ztp_full_condition`) exceeds
# this; measured on 120000 mpmath-checked points (k in [2, 1e4], lam/k in [1/20, 20]):
# at most 3 ulp after the refinement, which runs on 55% of them
FULL_CANCEL_FACTOR = 4.0


def ztp_cancellation(
    k: Tensor, lam: Tensor, value: Tensor, d_lam: Tensor | None = None, scale: float = 1.0
) -> tuple[Tensor, Tensor | None]:
    """(value flag, d_lam flag): where the float64 kernel's result can be > ~2 ulp off
    (``scale`` times the factors: see :func:`ztbench.loss.refine.refine_float64`).

    Computed from the kernel's own float64 results (``value``, ``d_lam`` of
    :func:`ztbench.loss.kernels.ztp_kernel` at the same k, lam), so it costs a few passes: each
    sum the kernel forms has one term that is cheap to recompute, and the other is the
    result minus it. Value: value = h(lam) - B with B = (k - 1) log(lam), h = value + B;
    d_lam = t1 + t2 with t1 = (lam - k)/lam (lam >= 1) or -(k - 1)/lam (lam < 1). A point
    is flagged where |first| + |second| > FACTOR * |result| (condition number of the sum).
    FACTOR = 2 measured: on 8000 mpmath-checked points (log-uniform over the domain and
    over k, lam <= 1e3) the smallest ratio at which the kernel was > 2 ulp off was 2.4
    (value) and 5.1 (d_lam), and below ratio 2 the kernel's error was <= 2 ulp; the test
    sets of tests/loss/test_dd_ztp.py check that every > 2 ulp point is flagged. Flags ~2.7%
    of log-uniform points over k in [1, 1e7], lam in [1e-30, 1e9] (nearly all lam > 1,
    k >= 2 with k log(lam) ~ lam; for lam < 1 both value terms are >= 0: never flagged).
    """
    b = (k - 1.0) * torch.log(lam)
    flag_v = (value + b).abs() + b.abs() > VALUE_CANCEL_FACTOR * scale * value.abs()
    if d_lam is None:
        return flag_v, None
    t1 = torch.where(lam >= 1.0, (lam - k) / lam, (1.0 - k) / lam)
    flag_g = t1.abs() + (d_lam - t1).abs() > GRAD_CANCEL_FACTOR * scale * d_lam.abs()
    return flag_v, flag_g
