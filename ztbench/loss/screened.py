"""The fast path for float32 losses: the plain formula in float64, kept only where a bound
on its error proves that the float32 result is within about half an ulp.

Why not float32 internally: on realistic single-cell inputs the loss form is a sum of
terms one to two orders of magnitude larger than the result (lgamma(k + theta) ~ 10-70
against a loss of ~1-5, and the loss form crosses zero), so a sum of float32 terms, each
rounded to half an ulp of its own size, is off by tens of ulp of the result. The same
sum in float64 has 2^29 times more headroom: a condition number of 10^4 still leaves
the float64 result within a small fraction of a float32 ulp.

The bound. Each formula below is a sum of terms t_i; each term is a few correctly or
nearly correctly rounded float64 operations on exact inputs (float32 inputs convert to
float64 exactly; k + theta is rounded once, which moves lgamma(k + theta) by at most
u (k + theta) psi(k + theta) <= u (2 |lgamma(k + theta)| + 25), inside C u m_i), or a
float64 lgamma / digamma. Each term comes with a magnitude m_i >= |t_i| (plus 1 for
lgamma and digamma, whose absolute error near their zeros is what is bounded; plus the
size of the input error it amplifies where a rounded intermediate feeds a function,
e.g. log(1 - e^-w) with a rounded w), chosen so that the computed term is within
C u m_i of the exact one, u = 2^-53 and C = 2^7: tests/loss/test_screened.py measures
torch's float64 log, log1p, exp, tanh, lgamma and digamma against mpmath within C/8 = 16
units of u m_i (at most 5, for digamma), the rounding of k + theta adds at most 25,
and the few roundings inside a term and the input error of a rounded intermediate a
few more. The computed sum r, summed left to right over n <= 8 terms, then satisfies

    |r - exact| <= C u S,   S = sum_i m_i   (the n roundings of the sum add n u S),

and an element is accepted when ``S <= K |r|`` with K = 2^18: the relative error of r
is then at most C K u = 2^-28, 1/16 of float32's unit roundoff 2^-24, and the float32
result (one rounding) is within 0.5 + 1/8 ulp of the exact one. Rejected elements (the
bound fails: the loss or a derivative near a zero crossing, the large-theta and tiny-lam
cancellations, an overflow to inf or NaN) go to the careful float64 kernels
(:mod:`ztbench.loss.kernels`). The caller passes valid inputs only (k >= 1 integer-valued,
finite positive parameters).

Forms (w = -log P(0); em1 = 1 - e^-w, no overflow for any w, by
:func:`one_minus_exp_neg`):

- ZTP, lam: value = -k log(lam) + lam + log(em1(lam)) [+ lgamma(k + 1)];
  d/dlam = -k/lam + 1/em1(lam).
- ZTNB, mu, theta: x = mu/theta, w = theta log1p(x), s = theta + mu:
  value = lgamma(theta) - lgamma(k + theta) + k log1p(theta/mu) + w + log(em1(w))
  [+ lgamma(k + 1)];
  d/dmu = k/s - k/mu + (theta/s)/em1;
  d/dtheta = psi(theta) - psi(k + theta) + k/s + (log1p(x) - mu/s)/em1.

Both functions return float64 (value, derivatives, margin), the margin S - K |r| (the
largest over the value and the derivatives): an element is certified where the margin is
<= 0 (:func:`certified`; NaN, from an overflow, is not). The caller rounds the certified
elements once and recomputes the others. (A float margin rather than a boolean: compiled
CPU code stores booleans several times slower than floats.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

C_ULPS = 2.0**7  # error of each term, in units of u * its magnitude (see module doc)
K_COND = 2.0**18  # largest accepted S / |r|: C K u = 2^-28 relative error in float64
_ROUNDING = 1.0 + 2.0**-40  # covers the roundings of a chunk-wide bound computed in float64


def _margin(r: Tensor, s: Tensor) -> Tensor:
    """S - K |r|: <= 0 where S <= K |r|; NaN where r or S is NaN or inf (inf - inf),
    which happens where float64 terms overflow (parameters beyond float32's range, e.g.
    exp of a large log-parameter)."""
    return torch.sub(s, r.abs(), alpha=K_COND)


# Results of bfloat16 or float16 precision need far less than float32's 2^-28: the fused
# kernel then computes ZTP's loss form in float32 arithmetic (natural lam), and this is
# its bound. With u = 2^-24 and SLEEF's float32 log, exp and expm1 within 1 ulp (2u
# relative; tests/loss/test_fused.py measures them), em1 is within 2.2u relative
# (-expm1(-lam): 2u; 1 - exp(-lam), taken where every lane of a step has lam >= 1:
# 2u e^-1 / (1 - e^-1) + u), log(em1) within 2.2u + 2u |log em1| (absolute, from em1's
# error, plus its own rounding), k log(lam) within 3u of its size, and the two additions
# add u S each: the value is within 7.2u S, S = lam + k |log lam| + |log em1| + 1.
# d/dlam = (lam - k em1) / (lam em1) is within 8.4u of (lam + k em1) / (lam em1) (the
# roundings of k em1, of the difference, of lam em1 and of the quotient, and em1's own
# 2.2u). With C = 16 > 8.4 for both, an element
# kept where S <= limit |r| has relative error at most C u limit; for a p-bit result
# (bfloat16: p = 8, float16: p = 11) 1/8 ulp is at least 2^-(p+3) relative, so
# limit = 2^-(p+3) / (C u) = 2^(17 - p) keeps the rounded result within 0.5 + 1/8 ulp.
NARROW_C_ULPS = 16.0


def narrow_limit(dtype: torch.dtype) -> float:
    """The largest S / |r| the float32-arithmetic ZTP screen certifies for results of
    ``dtype`` (bfloat16: 512, float16: 64; see the comment above); 0 for any other dtype
    (the float64 screen then runs)."""
    if dtype not in (torch.bfloat16, torch.float16):
        return 0.0
    p = 1 - round(math.log2(torch.finfo(dtype).eps))  # significant bits: eps = 2^(1 - p)
    return 2.0 ** -(p + 3) / (NARROW_C_ULPS * 2.0**-24)


def certified(margin: Tensor) -> Tensor:
    """The elements a margin certifies (<= 0; False at NaN)."""
    return margin <= 0.0


# below this argument 1 - exp(-x) loses accuracy (relative error up to c/x ulp), above
# it the error is at most (c/(e^x - 1) + 1) u <= (3.6 c + 1) u
_EXP_FORM_MIN = 0.25


def one_minus_exp_neg(x: Tensor, x_min: float | None = None) -> Tensor:
    """em1 = 1 - e^-x for x >= 0 (float64), within a few u relative for every x, without
    expm1 (whose compiled CPU code in torch 2.13 is exp(x) - 1: all accuracy lost for
    small x).

    - Where ``x_min`` (a lower bound of x, known to the eager caller) is at least 1/4:
      1 - exp(-x), within (3.6 c + 1) u for exp within c u.
    - Eager otherwise: 2 t / (1 + t), t = tanh(x/2) (no cancellation anywhere).
    - Under torch.compile: 1 - exp(-x) from 1/4 on, below it the Taylor series of
      1 - e^-x (:func:`_one_minus_exp_neg_series`), both computed everywhere and fused
      (cheaper there than a vectorised tanh).

    tests/loss/test_screened.py measures each form against mpmath."""
    if x_min is not None and x_min >= _EXP_FORM_MIN:
        return torch.rsub(torch.exp(x.neg()), 1.0)
    if torch.compiler.is_compiling():
        exp_form = torch.rsub(torch.exp(x.neg()), 1.0)
        return torch.where(x < _EXP_FORM_MIN, _one_minus_exp_neg_series(x), exp_form)
    t = torch.tanh(0.5 * x)
    return (t + t).div_(t + 1.0)


def _one_minus_exp_neg_series(x: Tensor) -> Tensor:
    """1 - e^-x = x (1 - x/2 (1 - x/3 (1 - ... (1 - x/13)))) for 0 <= x < 1/4: the
    first term left out, x^14/14!, is below 2^-60 of the sum, and each factor
    1 - x p/n lies in [0.87, 1] (no cancellation)."""
    p = torch.ones_like(x)
    for n in range(13, 1, -1):
        p = 1.0 - (x * (1.0 / n)) * p
    return x * p


def _ztp_terms(k: Tensor, lam: Tensor, need_grad: bool, full: bool, lam_min: float | None
               ) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor | None]:  # fmt: skip
    """(value, d/dlam or None, log(lam), log(em1), k/lam or None) by the plain formula.

    Most operations are in place: on the CPU this kernel is bound by passes over memory,
    not by arithmetic."""
    log_lam = torch.log(lam)
    em1 = one_minus_exp_neg(lam, lam_min)
    log_em1 = torch.log(em1)  # <= 0
    value = torch.addcmul(lam, k, log_lam, value=-1.0).add_(log_em1)
    if full:
        value += torch.lgamma(k + 1.0)
    if not need_grad:
        return value, None, log_lam, log_em1, None
    a = k / lam
    d_lam = em1.reciprocal_().sub_(a)
    return value, d_lam, log_lam, log_em1, a


def _ztp_margin(k: Tensor, lam: Tensor, value: Tensor, d_lam: Tensor | None,
                log_lam: Tensor, log_em1: Tensor, a: Tensor | None, full: bool
                ) -> Tensor:  # fmt: skip
    """The element-wise margin of :func:`ztp_screened` from the terms of
    :func:`_ztp_terms` (``log_lam`` is overwritten)."""
    size = torch.addcmul(lam, k, log_lam.abs_()).sub_(log_em1)
    if full:
        size += torch.lgamma(k + 1.0).add_(1.0)
    margin = size.sub_(value.abs(), alpha=K_COND)  # S - K |r|: certified where <= 0
    if d_lam is not None and a is not None:
        size_d = d_lam + a.mul(2.0)  # a + b, b = 1/em1 = d_lam + a
        torch.maximum(margin, size_d.sub_(d_lam.abs(), alpha=K_COND), out=margin)
    return margin


def ztp_screened(k: Tensor, lam: Tensor, need_grad: bool, full: bool
                 ) -> tuple[Tensor, Tensor | None, Tensor]:  # fmt: skip
    """ZTP loss (and d/dlam) by the plain formula in float64, and its margin (certified
    where <= 0), element by element (traceable: no host check).

    ``k``, ``lam``: float64, flat. Magnitudes: k |log lam|, lam, |log em1| (em1 within a
    few u relative, :func:`one_minus_exp_neg`; past lam ~ 37 log(em1) rounds to 0, an
    error e^-lam < u lam; lam + |log em1| >= 2 log 2 covers an absolute error of a few u
    in log near em1 = 1); lgamma(k + 1) + 1; for the derivative 1/em1 - k/lam: k/lam and
    1/em1.
    """
    value, d_lam, log_lam, log_em1, a = _ztp_terms(k, lam, need_grad, full, None)
    return value, d_lam, _ztp_margin(k, lam, value, d_lam, log_lam, log_em1, a, full)


# a chunk-wide bound is used when it leaves at most this fraction of the chunk uncertified
_CHUNK_REJECT = 2.0**-8


def ztp_screened_chunk(k: Tensor, lam: Tensor, need_grad: bool, full: bool, k_max: float,
                       lam_min: float, lam_max: float
                       ) -> tuple[Tensor, Tensor | None, Tensor]:  # fmt: skip
    """:func:`ztp_screened` for one eager chunk (host checks allowed), certified against
    one bound for all its elements first: (value, d/dlam or None, the positions of the
    elements not certified).

    Each element's magnitudes (see :func:`ztp_screened`) are increasing in k and
    monotone in lam, so extremes ``k_max``, ``lam_min``, ``lam_max`` of the inputs bound
    them all: with S_max their sum, an element with |r| >= S_max / K is certified (two
    passes per quantity, where the element-wise test takes a dozen). On realistic inputs
    this leaves the few elements within S_max / K ~ 1e-4 of a zero crossing; where it
    leaves more than a small fraction (inputs spanning decades of lam or k), the
    element-wise test decides (also for subnormal lam, where em1 may round to 0)."""
    value, d_lam, log_lam, log_em1, a = _ztp_terms(k, lam, need_grad, full, lam_min)
    em1_min = -math.expm1(-lam_min)
    s_value = (lam_max + k_max * max(abs(math.log(lam_min)), abs(math.log(lam_max)))
               - math.log(em1_min))  # fmt: skip
    if full:
        s_value += math.lgamma(k_max + 1.0) + 1.0
    s_deriv = k_max / lam_min + 1.0 / em1_min
    # lam >= 2^-1000 (em1 > 0) and a finite S_max (which bounds every term) keep every
    # computed term finite: no NaN or inf reaches the test below
    if lam_min >= 2.0**-1000 and math.isfinite(s_value + s_deriv):
        rejected = value.abs() < s_value * _ROUNDING / K_COND
        if d_lam is not None:
            rejected |= d_lam.abs() < s_deriv * _ROUNDING / K_COND
        idx = rejected.nonzero().squeeze(1)
        if idx.numel() <= _CHUNK_REJECT * rejected.numel():
            return value, d_lam, idx
    margin = _ztp_margin(k, lam, value, d_lam, log_lam, log_em1, a, full)
    return value, d_lam, certified(margin).logical_not_().nonzero().squeeze(1)


def ztnb_screened(k: Tensor, mu: Tensor, theta: Tensor, need_grad: bool, full: bool,
                  w_min: float | None = None
                  ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:  # fmt: skip
    """ZTNB loss (and d/dmu, d/dtheta) by the plain formula in float64, and its margin
    (certified where <= 0).

    ``k``, ``mu``, ``theta``: float64, flat; ``w_min``: a lower bound of w, when the
    caller knows one (:func:`one_minus_exp_neg`). Magnitudes: |lgamma(theta)| + 1,
    |lgamma(k + theta)| + 1, |k log1p(theta/mu)|, w, and |log em1| + w/em1 (w carries a
    few u of relative error, which log(em1(w)) amplifies by w e^-w/em1 <= 1 and the w
    term by 1; em1 itself is within a few u relative); for d/dmu k/s, k/mu and
    2 theta/(s em1); for d/dtheta |psi| + 1 each, k/s and 2 (log1p(x) + mu/s)/em1 (the
    difference log1p(x) - mu/s cancels for small x: its error is a few u of the two
    parts).
    """
    x = mu / theta
    lx = torch.log1p(x)
    w = theta * lx
    em1 = one_minus_exp_neg(w, w_min)
    inv = em1.reciprocal()
    log_em1 = torch.log(em1)
    lg_t = torch.lgamma(theta)
    lg_kt = torch.lgamma(k + theta)
    t_k = k * torch.log1p(theta / mu)
    value = lg_t - lg_kt + t_k + w + log_em1
    size = lg_t.abs() + lg_kt.abs() + 2.0 + t_k + w + log_em1.abs() + w * inv
    if full:
        lg = torch.lgamma(k + 1.0)
        value = value + lg
        size = size + lg + 1.0
    margin = _margin(value, size)
    if not need_grad:
        return value, None, None, margin
    s = theta + mu
    a = k / s
    b = k / mu
    c = (theta / s) * inv
    d_mu = a - b + c
    margin = torch.maximum(margin, _margin(d_mu, a + b + 2.0 * c))
    y = mu / s
    p_t = torch.digamma(theta)
    p_kt = torch.digamma(k + theta)
    e = (lx - y) * inv
    d_theta = p_t - p_kt + a + e
    size_t = p_t.abs() + p_kt.abs() + 2.0 + a + 2.0 * (lx + y) * inv
    return value, d_mu, d_theta, torch.maximum(margin, _margin(d_theta, size_t))
