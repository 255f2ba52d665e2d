"""The full ZTP and ZTNB negative log-likelihoods without adding lgamma(k + 1) at the end.

(float64; the ZTNB form, R's ``dnbinom_mu`` regrouping, is at the end of the module.)

-log P(X = k) = -k log(lam) + lgamma(k + 1) + log(expm1(lam)): where k ~ lam is large the
three first terms are ~k log k each and the result ~log(2 pi k)/2 (at k = lam = 1e7:
~1.5e8 against 9, a loss of 2^24 in float64 if lgamma(k + 1) is added to the loss). Loader
(2000, "Fast and accurate computation of binomial probabilities"; R's ``dpois_raw``)
regroups it as

    -log P(k) = stirlerr(k) + log(2 pi k)/2 + bd0(k, lam) + log(1 - e^-lam),

    stirlerr(k) = lgamma(k + 1) - (k + 1/2) log k + k - log(2 pi)/2  (~1/(12 k), >= 0)
    bd0(k, lam) = k log(k/lam) + lam - k = -k log1pmx((lam - k)/k)   (>= 0)

in which the only negative term, log(1 - e^-lam), is at most 0.46 in magnitude for
lam >= 1 while the result is then at least 0.54: no cancellation. bd0 itself is formed
without one: -k log1pmx(d), d = (lam - k)/k, with the rounding of d corrected to first
order (lam - k is exact for k/2 <= lam <= 2k by Sterbenz's lemma; d's remainder from an
error-free product) and log1pmx from its atanh series for |d| <= 1/2; elsewhere
k (d - log1p(d)) or, for lam < k/2, k log(k/lam) - (k - lam) (both at most ~11-fold
cancellation; the float64 refinement of :mod:`ztbench.loss.dd.ztp` takes over where that
costs more than a few ulp of the result).

For lam < 1 (or k = 1, where lgamma(2) = 0) the loss form and lgamma(k + 1) are both
>= 0, so their sum has no cancellation and is used as is.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import torch
from torch import Tensor

from ztbench.loss import primitives as P
from ztbench.loss.dd.arith import dd_div, dd_div_f, dd_mul, two_prod, two_sum
from ztbench.loss.dd.lgamma import PI_DEC

__all__ = [
    "bd0",
    "stirlerr",
    "ztnb_full_condition",
    "ztnb_full_value",
    "ztp_full_condition",
    "ztp_full_value",
]

# stirlerr(k) for k = 1 .. 9 (math.lgamma would cancel against the Stirling terms):
# from the factorial in 60-digit decimal arithmetic, rounded once; index 0 unused
with localcontext() as _ctx:
    _ctx.prec = 60
    _STIRLERR_SMALL = (
        0.0,
        *(float(
            Decimal(math.factorial(k)).ln()
            - (k + Decimal("0.5")) * Decimal(k).ln()
            + k
            - (2 * PI_DEC).ln() / 2
        )
        for k in range(1, 10)),
    )


def stirlerr(k: Tensor) -> Tensor:
    """lgamma(k + 1) - ((k + 1/2) log k - k + log(2 pi)/2) for integer k >= 1 (float64).

    A table for k < 10; for k >= 10 it equals lgamma(k) - Stirling's formula at k, i.e.
    :func:`~ztbench.loss.primitives.stirling_correction` (its series is accurate there).
    """
    small = k < P.STIRLING_MIN
    tab = torch.tensor(_STIRLERR_SMALL, dtype=k.dtype, device=k.device)
    ks = torch.where(small, k, torch.zeros_like(k)).long()
    kb = torch.where(small, torch.full_like(k, P.STIRLING_MIN), k)
    return torch.where(small, tab[ks], P.stirling_correction(kb))


def bd0(k: Tensor, lam: Tensor) -> Tensor:
    """k log(k/lam) + lam - k >= 0 (Loader's deviance term) for k >= 1, lam > 0 (float64).

    |d| <= 1/2, d = (lam - k)/k: -k log1pmx(d + e), with e the rounding error of the
    quotient (from an error-free product, exact numerator) applied to first order,
    log1pmx(d + e) = log1pmx(d) - e d/(1 + d); d > 1/2: k (d - log1p(d)); d < -1/2:
    k log(k/lam) - (k - lam).
    """
    num = lam - k  # exact for k/2 <= lam <= 2k
    d = num / k
    # remainder of the quotient: num - d k exactly (Dekker's product, no FMA needed)
    p, pe = two_prod(d, k)
    e = ((num - p) - pe) / k
    near = d.abs() <= 0.5
    d_n = torch.where(near, d, torch.zeros_like(d))
    e_n = torch.where(near, e, torch.zeros_like(e))
    v_near = -k * (P.log1pmx(d_n) - e_n * d_n / (1.0 + d_n))
    d_p = torch.where(d > 0.5, d, torch.ones_like(d))
    v_pos = k * (d_p - torch.log1p(d_p))
    r = torch.where(d < -0.5, k / lam, torch.full_like(k, 4.0))
    v_neg = k * torch.log(r) - (k - lam)
    return torch.where(near, v_near, torch.where(d > 0.5, v_pos, v_neg))


def ztp_full_value(k: Tensor, lam: Tensor, value: Tensor) -> Tensor:
    """-log P(X = k) of the ZTP law, from the loss form ``value`` (float64, same shape).

    lam >= 1 and k >= 2: stirlerr(k) + log(2 pi k)/2 + bd0(k, lam) + log(1 - e^-lam)
    (Loader's form, see the module docstring); else value + lgamma(k + 1) (no cancellation).
    """
    loader = (lam >= 1.0) & (k >= 2.0)
    k_l = torch.where(loader, k, torch.full_like(k, 2.0))
    lam_l = torch.where(loader, lam, torch.full_like(lam, 2.0))
    head = bd0(k_l, lam_l) + 0.5 * (math.log(2.0 * math.pi) + torch.log(k_l))
    full_l = (head + stirlerr(k_l)) + torch.log1p(-torch.exp(-lam_l))
    return torch.where(loader, full_l, value + torch.lgamma(k + 1.0))


def ztp_full_condition(k: Tensor, lam: Tensor, full: Tensor) -> Tensor:
    """The error of :func:`ztp_full_value` (float64) over |result|, in units of u: 1 where
    the result is value + lgamma(k + 1) or bd0 comes from its series (|d| <= 1/2); else
    bd0's two terms weighted by their own errors, over |full|:

        (3 k |log(k/lam)| + 1.5 |lam - k| + log(2 pi k)/2 + 1/2) / |full|

    (k log(k/lam) carries the rounded quotient's u k, at most 1.45 u of itself, and the
    log's and the product's roundings; lam - k and k (d - log1p(d)) a rounding or two).
    Unweighted, results 5 ulp off went unflagged at a condition number of 3.99."""
    loader = (lam >= 1.0) & (k >= 2.0)
    d = (lam - k) / k
    far = loader & (d.abs() > 0.5)
    lam_f = torch.where(far, lam, k)
    terms = (3.0 * k * torch.log(k / lam_f).abs() + 1.5 * (lam_f - k).abs()
             + 0.5 * torch.log(2.0 * math.pi * k))  # fmt: skip
    return torch.where(far, (terms + 0.5) / full.abs(), torch.ones_like(full))


# ---------------------------------------------------------------------------- ZTNB full
def _stirlerr_real(z: Tensor) -> Tensor:
    """stirlerr(z) = lgamma(z + 1) - ((z + 1/2) log z - z + log(2 pi)/2) for real z > 0.

    z >= 10: Stirling's series (:func:`~ztbench.loss.primitives.stirling_correction`);
    below, the defining difference (up to ~25-fold cancellation near z = 1, counted by
    :func:`ztnb_full_condition`).
    """
    big = z >= P.STIRLING_MIN
    z_b = torch.where(big, z, torch.full_like(z, P.STIRLING_MIN))
    z_s = torch.where(big, torch.ones_like(z), z)
    small = torch.lgamma(z_s + 1.0) - (z_s + 0.5) * torch.log(z_s) + z_s - P.HALF_LOG_2PI
    return torch.where(big, P.stirling_correction(z_b), small)


def _nb_loader_terms(k: Tensor, mu: Tensor, theta: Tensor) -> list[Tensor]:
    """The terms of the negative binomial -log P(k) in Loader's form (R's ``dnbinom_mu``):

        stirlerr(k) + [stirlerr(theta) - stirlerr(k + theta)] + log(2 pi k (k + theta)/theta)/2
        + bd0(theta, n p) + bd0(k, n q),   n = k + theta, p = theta/(theta + mu), q = 1 - p,

    with t = (k - mu)/(theta + mu) (k - mu exact near the mode): bd0(theta, n p) =
    -theta log1pmx(t) and bd0(k, n q) = -k log1pmx(d), d = -theta t/k (both >= 0; d's
    relative accuracy is t's, which the rounded n q would not give near k = n q).
    """
    # t and d as double-doubles (k - mu exact near k): their roundings would pass into
    # log1pmx doubled (log1pmx(u) ~ -u^2/2); first-order corrections below
    zero = torch.zeros_like(k)
    tm = two_sum(theta, mu)
    t_dd = dd_div((k - mu, zero), tm)
    d_dd = dd_mul(dd_div_f((mu - k, zero), k), dd_div((theta, zero), tm))
    t, d = t_dd[0], d_dd[0]
    near_t = t.abs() <= 0.5
    t_n = torch.where(near_t, t, zero)
    lpm_t = torch.where(
        near_t,
        P.log1pmx(t_n) - t_dd[1] * t_n / (1.0 + t_n),
        torch.log((k + theta) / (theta + mu)) - t,
    )
    b1 = -theta * lpm_t
    near_d = d.abs() <= 0.5
    d_n = torch.where(near_d, d, zero)
    d_p = torch.where(d > 0.5, d, torch.ones_like(d))
    nq = (k + theta) * (mu / (theta + mu))
    r = torch.where(d < -0.5, k / nq, torch.full_like(k, 4.0))
    b2 = torch.where(
        near_d,
        -k * (P.log1pmx(d_n) - d_dd[1] * d_n / (1.0 + d_n)),
        torch.where(d > 0.5, k * (d_p - torch.log1p(d_p)), k * torch.log(r) - (k - nq)),
    )
    s_diff = _stirlerr_real(theta) - _stirlerr_real(k + theta)
    half_log = 0.5 * (math.log(2.0 * math.pi) + torch.log(k) + torch.log1p(k / theta))
    return [stirlerr(k), s_diff, half_log, b1, b2]


def _ztnb_loader(k: Tensor, mu: Tensor, theta: Tensor) -> Tensor:
    """Where :func:`ztnb_full_value` takes Loader's form: k >= 2 and w >= 1, and mu/theta
    finite (where it overflows, mu > 2^1024 theta, the form's double-double quotients of
    mu would overflow; value + lgamma(k + 1) is used, refined where it cancels)."""
    x = mu / theta
    return (k >= 2.0) & (theta * torch.log1p(x) >= 1.0) & (x < math.inf)


def ztnb_full_value(k: Tensor, mu: Tensor, theta: Tensor, value: Tensor) -> Tensor:
    """-log P(X = k) of the ZTNB law from the loss form ``value`` (float64, same shape).

    k >= 2 and w = theta log1p(mu/theta) >= 1 (mu/theta finite, :func:`_ztnb_loader`):
    the negative binomial -log P(k) in Loader's
    form (:func:`_nb_loader_terms`, every term >= 0) plus log(1 - e^-w) (in [-0.46, 0]):
    lgamma(k + 1) is never formed against lgamma(k + theta); else value + lgamma(k + 1)
    (k = 1: lgamma(2) = 0; w < 1: the float64 refinement takes over where it cancels).
    """
    loader = _ztnb_loader(k, mu, theta)
    w = theta * torch.log1p(mu / theta)
    two = torch.full_like(k, 2.0)
    k_l = torch.where(loader, k, two)
    mu_l = torch.where(loader, mu, two)
    th_l = torch.where(loader, theta, two)
    w_l = torch.where(loader, w, two)
    terms = _nb_loader_terms(k_l, mu_l, th_l)
    full_l = (terms[4] + terms[3]) + (terms[2] + (terms[1] + terms[0]))
    full_l = full_l + torch.log1p(-torch.exp(-w_l))
    # a Loader term that overflows (double-double products past ~2^996, e.g. mu and theta
    # ~ 1e300): the other form, as ztnb_full_condition does
    return torch.where(loader & torch.isfinite(full_l), full_l, value + torch.lgamma(k + 1.0))


def ztnb_full_condition(k: Tensor, mu: Tensor, theta: Tensor, full: Tensor) -> Tensor:
    """Sum of |terms| / |full| of :func:`ztnb_full_value`'s Loader form (float64), each term
    counted with the terms it is formed from where that cancels (stirlerr(theta) and
    stirlerr(k + theta) below 10; bd0 away from its series: k |log(k/nq)| + |k - nq|,
    theta (|log1p t| + |t|));
    +inf where the Loader form is not used (the caller then uses its own flag)."""
    loader = _ztnb_loader(k, mu, theta)
    two = torch.full_like(k, 2.0)
    k, mu, theta = (torch.where(loader, a, two) for a in (k, mu, theta))
    s0, s_diff, half_log, b1, b2 = _nb_loader_terms(k, mu, theta)
    t = (k - mu) / (theta + mu)
    d = ((mu - k) / k) * (theta / (theta + mu))  # = -theta t/k
    nq = (k + theta) * (mu / (theta + mu))
    b1_mag = torch.where(t.abs() <= 0.5, b1, theta * (torch.log1p(t).abs() + t.abs()))
    b2_mag = torch.where(d.abs() <= 0.5, b2, k * torch.log(k / nq).abs() + (k - nq).abs())
    # stirlerr below 10 is a difference of lgamma(z + 1), (z + 1/2) log z and z: counted
    # with them, for z = theta and z = k + theta (measured: 5 ulp at k = 6, mu = 5.3,
    # theta = 1.36 with stirlerr(k + theta) counted as its value)
    total = s0 + s_diff.abs() + half_log.abs() + b1_mag + b2_mag + 0.5
    for z in (theta, k + theta):
        z_s = torch.where(z < P.STIRLING_MIN, z, torch.ones_like(z))
        mag = torch.lgamma(z_s + 1.0).abs() + (z_s + 0.5) * torch.log(z_s).abs() + z_s + 1.0
        total = total + torch.where(z < P.STIRLING_MIN, mag, torch.zeros_like(mag))
    used = loader & torch.isfinite(total)  # the elements ztnb_full_value gives Loader's form
    return torch.where(used, total / full.abs(), torch.full_like(full, math.inf))
