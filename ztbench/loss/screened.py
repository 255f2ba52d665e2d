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
C u m_i of the exact one, u = 2^-53 and C = 2^7: tests/test_screened.py measures
torch's float64 log, log1p, expm1, lgamma and digamma against mpmath within C/8 = 16
units of u m_i (at most 5, for digamma), the rounding of k + theta adds at most 25,
and the few roundings inside a term and the input error of a rounded intermediate a
few more. The computed sum r, summed left to right over n <= 8 terms, then satisfies

    |r - exact| <= C u S,   S = sum_i m_i   (the n roundings of the sum add n u S),

and an element is accepted when ``S <= K |r|`` with K = 2^18: the relative error of r
is then at most C K u = 2^-28, 1/16 of float32's unit roundoff 2^-24, and the float32
result (one rounding) is within 0.5 + 1/8 ulp of the exact one. Rejected elements (the
bound fails: the loss or a derivative near a zero crossing, the large-theta and tiny-lam
cancellations, an overflow to inf or NaN) go to the careful float64 kernels
(:mod:`ztbench.loss.nll`). The caller passes valid inputs only (k >= 1 integer-valued,
finite positive parameters).

Forms (w = -log P(0); em1 = 1 - e^-w = -expm1(-w), no overflow for any w):

- ZTP, lam: value = -k log(lam) + lam + log(em1(lam)) [+ lgamma(k + 1)];
  d/dlam = -k/lam + 1/em1(lam).
- ZTNB, mu, theta: x = mu/theta, w = theta log1p(x), s = theta + mu:
  value = lgamma(theta) - lgamma(k + theta) + k log1p(theta/mu) + w + log(em1(w))
  [+ lgamma(k + 1)];
  d/dmu = k/s - k/mu + (theta/s)/em1;
  d/dtheta = psi(theta) - psi(k + theta) + k/s + (log1p(x) - mu/s)/em1.

Both functions return float64 (value, derivatives, accepted): the caller rounds the
accepted elements once and recomputes the others.
"""

from __future__ import annotations

import torch
from torch import Tensor

C_ULPS = 2.0**7  # error of each term, in units of u * its magnitude (see module doc)
K_COND = 2.0**18  # largest accepted S / |r|: C K u = 2^-28 relative error in float64


def _ok(r: Tensor, s: Tensor) -> Tensor:
    """S <= K |r|, as S - K |r| <= 0: False where r or S is NaN or inf (inf - inf is
    NaN), which happens where float64 terms overflow (parameters beyond float32's range,
    e.g. exp of a large log-parameter)."""
    return torch.sub(s, r.abs(), alpha=K_COND) <= 0.0


def ztp_screened(k: Tensor, lam: Tensor, need_grad: bool, full: bool
                 ) -> tuple[Tensor, Tensor | None, Tensor]:  # fmt: skip
    """ZTP loss (and d/dlam) by the plain formula in float64 and where it is certified.

    ``k``, ``lam``: float64, flat. Magnitudes: k |log lam|, lam and |log em1| (the
    relative error of em1 = -expm1(-lam) is a few u: lam is exact; past lam ~ 37
    log(em1) rounds to 0, an error e^-lam < u lam), lgamma(k + 1) + 1;
    for the derivative k/lam and 1/em1.
    """
    log_lam = torch.log(lam)
    em1 = torch.expm1(-lam).neg_()
    log_em1 = torch.log(em1)  # <= 0
    t_k = k * log_lam
    value = (lam - t_k).add_(log_em1)
    size = (lam + t_k.abs()).sub_(log_em1)
    if full:
        lg = torch.lgamma(k + 1.0)
        value = value + lg
        size = size + lg + 1.0
    ok = _ok(value, size)
    if not need_grad:
        return value, None, ok
    a = k / lam
    b = em1.reciprocal_()
    d_lam = b - a
    ok &= _ok(d_lam, a.add_(b))
    return value, d_lam, ok


def ztnb_screened(k: Tensor, mu: Tensor, theta: Tensor, need_grad: bool, full: bool
                  ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:  # fmt: skip
    """ZTNB loss (and d/dmu, d/dtheta) by the plain formula in float64 and where it is
    certified.

    ``k``, ``mu``, ``theta``: float64, flat. Magnitudes: |lgamma(theta)| + 1,
    |lgamma(k + theta)| + 1, |k log1p(theta/mu)|, w, and |log em1| + w/em1 (w carries a
    few u of relative error, which log(em1(w)) amplifies by w e^-w/em1 <= 1 and the
    w term by 1); for d/dmu k/s, k/mu and 2 theta/(s em1); for d/dtheta |psi| + 1 each,
    k/s and 2 (log1p(x) + mu/s)/em1 (the difference log1p(x) - mu/s cancels for small x:
    its error is a few u of the two parts).
    """
    x = mu / theta
    lx = torch.log1p(x)
    w = theta * lx
    em1 = -torch.expm1(-w)
    log_em1 = torch.log(em1)
    lg_t = torch.lgamma(theta)
    lg_kt = torch.lgamma(k + theta)
    t_k = k * torch.log1p(theta / mu)
    value = lg_t - lg_kt + t_k + w + log_em1
    size = lg_t.abs() + lg_kt.abs() + 2.0 + t_k + w + log_em1.abs() + w / em1
    if full:
        lg = torch.lgamma(k + 1.0)
        value = value + lg
        size = size + lg + 1.0
    ok = _ok(value, size)
    if not need_grad:
        return value, None, None, ok
    s = theta + mu
    a = k / s
    b = k / mu
    c = (theta / s) / em1
    d_mu = a - b + c
    ok &= _ok(d_mu, a + b + 2.0 * c)
    y = mu / s
    p_t = torch.digamma(theta)
    p_kt = torch.digamma(k + theta)
    e = (lx - y) / em1
    d_theta = p_t - p_kt + a + e
    ok &= _ok(d_theta, p_t.abs() + p_kt.abs() + 2.0 + a + 2.0 * (lx + y) / em1)
    return value, d_mu, d_theta, ok
