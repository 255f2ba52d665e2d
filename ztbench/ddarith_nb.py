"""Double-double refinement of the ZTNB loss's d/dmu at its zero crossings.

The float64 ZTNB kernel (:func:`ztbench.nll._ztnb_kernel`) computes

    d_mu(k, mu, theta) = k/(theta+mu) - k/mu + theta/(theta+mu) / (1 - e^-w)
                       = (T - k) / (mu (1 + x)),   T = mu / (1 - e^-w),

with x = mu/theta and w = theta log1p(x) = -log P(0), as a float64 sum of terms that cancel
where d_mu crosses zero (T = k): 10^4-fold and more on the project's suite, where the kernel
is up to ~10^4 ulp off, because T depends on w (and so e^-w) which float64 rounds.
:func:`ztnb_dmu_dd` recomputes T to ~2^-102 relative, subtracts k and divides by
mu (1 + x) in double-double and rounds once; :func:`ztnb_dmu_cancellation` tells from the
kernel's own float64 d_mu where that is worth doing.

Built on :mod:`ztbench.ddarith` (error-free transforms, double-double +, *, /, ``dd_log``,
``dd_exp_neg``); same caveats: eager execution only (an FMA-contracting compiler breaks
the error-free transforms), not differentiable (it replaces values only), inputs not
validated (k >= 1 integer < 2^53, mu > 0, theta > 0 finite assumed).

Accuracy and cost: see :func:`ztnb_dmu_dd` and tests/test_ddarith_nb.py.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import torch
from torch import Tensor

from ztbench.candidates import primitives as P
from ztbench.ddarith import (
    _dec_parts,
    _one_minus,
    dd_add,
    dd_div,
    dd_div_f,
    dd_exp_neg,
    dd_log,
    dd_mul,
    fast_two_sum,
    two_sum,
)

__all__ = [
    "DMU_CANCEL_FACTOR",
    "dd_log1p",
    "dd_one_minus_exp_neg",
    "ztnb_dmu_cancellation",
    "ztnb_dmu_dd",
]

DD = tuple[Tensor, Tensor]

with localcontext() as _ctx:
    _ctx.prec = 60
    # 1/n!, n = 0..7, as double-double pairs (the head of the expm1 series)
    _INV_FACT = [_dec_parts(1 / Decimal(math.factorial(n)), 2) for n in range(8)]

_EXPM1_HALVINGS = 6  # expm1 argument reduction: a = w / 2^6 <= 2^-6
_EXP_DD_MAX = 40.0  # above: e^-w < 2^-57, float64 exp is enough (see ztnb_dmu_dd)
_T_NEAR_ONE = 2.0**-30  # k = 1 and T - 1 below this: the non-cancelling float64 form


def _c(pair: tuple[float, ...], like: Tensor) -> DD:
    return torch.full_like(like, pair[0]), torch.full_like(like, pair[1])


# ------------------------------------------------------------------------- building blocks
def dd_log1p(x: DD) -> DD:
    """log(1 + x) for a double-double x >= 0 as a double-double (relative error ~2^-104).

    1 + x = s + d exactly as floats (:func:`two_sum` of 1 and x_hi, plus x_lo), |d| <=
    ulp(s); log(1 + x) = log(s) + log1p(d/s) with log(s) from :func:`dd_log` (~2^-106
    relative; for s near 1 its table reduction keeps the relative accuracy, and s = 1
    gives exactly 0) and log1p(t) = t - t^2/2 for t = d/s (|t| <= 2^-52: the omitted t^3/3
    is < 2^-156). Both parts are >= 0 (x >= 0), so no cancellation: relative to log1p(x)
    the error stays ~2^-104 also for tiny x (where s = 1 and t = x).
    """
    s, e = two_sum(torch.ones_like(x[0]), x[0])
    d = two_sum(e, x[1])
    t = dd_div_f(d, s)
    corr = fast_two_sum(t[0], t[1] - 0.5 * t[0] * t[0])
    return dd_add(dd_log(s), corr)


def dd_one_minus_exp_neg(w: DD) -> DD:
    """1 - e^-w for a double-double 0 < w <= 1 (w_hi <= 1) as a double-double, ~2^-102 rel.

    -expm1(-w) by argument reduction a = w/2^6 (exact), expm1(-a) from its Taylor series
    to a^13/13! (a <= 2^-6: the omitted terms are < 2^-114 relative; terms to 1/7! in
    double-double, the tail in float64, whose rounding is < 2^-110 relative), then six
    doublings expm1(2b) = expm1(b) (expm1(b) + 2) in double-double. With E = expm1(b) in
    (-1, 0) a doubling multiplies E's relative error by 1 + E/(E + 2) <= 1 and adds ~2^-104,
    so the result is within ~7 * 2^-104 relative; it keeps its relative accuracy for tiny w
    (no 1 - e^-w cancellation is ever formed).
    """
    sc = 2.0**-_EXPM1_HALVINGS
    z = (-w[0] * sc, -w[1] * sc)
    zh = z[0]
    tail = 1.0 / 40320.0 + zh * (
        1.0 / 362880.0
        + zh
        * (
            1.0 / 3628800.0
            + zh * (1.0 / 39916800.0 + zh * (1.0 / 479001600.0 + zh * (1.0 / 6227020800.0)))
        )
    )
    p = dd_add(_c(_INV_FACT[7], zh), (zh * tail, torch.zeros_like(zh)))
    for n in (6, 5, 4, 3, 2, 1):
        p = dd_add(_c(_INV_FACT[n], zh), dd_mul(z, p))
    e = dd_mul(z, p)  # expm1(-a)
    two = (torch.full_like(zh, 2.0), torch.zeros_like(zh))
    for _ in range(_EXPM1_HALVINGS):
        e = dd_mul(e, dd_add(e, two))
    return -e[0], -e[1]


def _one_minus_exp_mid(w: DD) -> DD:
    """1 - e^-w for 1 <= w_hi <= 40: e^-w = e^-w_hi (1 - w_lo + w_lo^2/2), then 1 - y exact."""
    y = dd_exp_neg(w[0])
    lo = w[1]
    c = two_sum(torch.ones_like(lo), -lo)
    c = fast_two_sum(c[0], c[1] + 0.5 * lo * lo)
    y = dd_mul(y, c)
    z0, z1, z2 = _one_minus(y)
    return fast_two_sum(z0, z1 + z2)


def _one_minus_exp_big(w: DD) -> DD:
    """1 - e^-w for w_hi > 40: y = e^-w_hi (1 - w_lo) in float64, 1 - y as a double-double."""
    y = torch.exp(-w[0]) * (1.0 - w[1])
    return fast_two_sum(torch.ones_like(y), -y)


def _on(mask: Tensor, fn, *args: DD) -> list[tuple[Tensor, DD]]:  # type: ignore[no-untyped-def]
    idx = mask.nonzero().squeeze(1)
    if not idx.numel():
        return []
    return [(idx, fn(*((a[0].index_select(0, idx), a[1].index_select(0, idx)) for a in args)))]


# ---------------------------------------------------------------------------------- d/dmu
def ztnb_dmu_dd(k: Tensor, mu: Tensor, theta: Tensor) -> Tensor:
    """d/dmu of the ZTNB loss, k/(theta+mu) - k/mu + theta/(theta+mu)/(1 - e^-w), float64.

    Computed as (T - k) / (mu (1 + x)), T = mu / (1 - e^-w), everything in double-double:

    - x = mu/theta (:func:`~ztbench.ddarith.dd_div_f`), lx = log1p(x) (:func:`dd_log1p`),
      w = theta lx: each ~2^-104 relative.
    - 1 - e^-w: w_hi <= 1 :func:`dd_one_minus_exp_neg` (series + doublings, ~2^-102
      relative); 1 < w_hi <= 40 :func:`~ztbench.ddarith.dd_exp_neg` and 1 - y formed
      exactly; w_hi > 40 float64 e^-w_hi (1 - w_lo): y < 2^-57 with relative error ~2^-52,
      so T = mu/(1 - y) = mu (1 + y/(1 - y)) is off by < 2^-108 relative. The sensitivity
      of T to w is d log T / dw = -1/expm1(w), at most 1/w, so w's relative error passes to
      T unamplified.
    - T - k (double-double; k exact), divided by mu + mu x (double-double), rounded once.
      The cancellation T - k costs nothing beyond T's ~2^-102 relative error, so a result
      that cancels 2^40-fold still has a few ulp; at the float64 nearest a zero crossing
      the result is arbitrarily small by chance and no fixed precision bounds its ulp error.
    - Exception, k = 1 with T - 1 < 2^-30 (tiny x and w, where T = 1 + (x + w)/2 + ...):
      T - 1 would lose its relative accuracy, so the kernel's non-cancelling form is used,
      num = -log1pmx(x)/log1p(x) + mu q(w), q(w) = 1/(1 - e^-w) - 1/w (both terms >= 0,
      float64 series of :mod:`~ztbench.candidates.primitives`, a few ulp).

    Measured (tests/test_ddarith_nb.py, mpmath at 60 digits certified at 90): see
    ``DMU_ULP_MAX`` there.
    """
    k = k.to(torch.float64)
    mu = mu.to(torch.float64)
    theta = theta.to(torch.float64)
    k, mu, theta = torch.broadcast_tensors(k, mu, theta)
    shape = mu.shape
    k, mu, theta = k.reshape(-1), mu.reshape(-1), theta.reshape(-1)
    zero = torch.zeros_like(mu)
    mu_d = (mu, zero)
    x = dd_div_f(mu_d, theta)
    lx = dd_log1p(x)
    w = dd_mul((theta, zero), lx)
    om_h = torch.ones_like(mu)
    om_l = torch.zeros_like(mu)
    wh = w[0]
    parts = (
        _on(wh <= 1.0, dd_one_minus_exp_neg, w)
        + _on((wh > 1.0) & (wh <= _EXP_DD_MAX), _one_minus_exp_mid, w)
        + _on(wh > _EXP_DD_MAX, _one_minus_exp_big, w)
    )
    for idx, (h, lo) in parts:
        om_h.index_copy_(0, idx, h)
        om_l.index_copy_(0, idx, lo)
    t = dd_div(mu_d, (om_h, om_l))
    num = dd_add(t, (-k, zero))
    den = dd_add(mu_d, dd_mul(mu_d, x))
    out = dd_div(num, den)[0]
    near = (k == 1.0) & (t[0] - 1.0 < _T_NEAR_ONE)
    idx = near.nonzero().squeeze(1)
    if idx.numel():
        m_s = mu.index_select(0, idx)
        x_s = x[0].index_select(0, idx)
        w_s = wh.index_select(0, idx)
        num_s = -P.log1pmx(x_s) / torch.log1p(x_s) + m_s * P.inv1mexp_minus_inv(w_s)
        out.index_copy_(0, idx, num_s / (m_s * (1.0 + x_s)))
    return out.reshape(shape)


# ----------------------------------------------------------------------- cancellation test
DMU_CANCEL_FACTOR = 2.0


def ztnb_dmu_cancellation(k: Tensor, mu: Tensor, theta: Tensor, d_mu: Tensor) -> Tensor:
    """Where the kernel's float64 d_mu can be > ~2 ulp off through cancellation (bool).

    From the kernel's own d_mu: num = d_mu mu (1 + mu/theta) = T - k (T as in
    :func:`ztnb_dmu_dd`), and one recomputed w = theta log1p(mu/theta) to tell the
    kernel's branches apart:

    - w <= 1: the kernel forms num = (T - 1) - (k - 1), T - 1 = -log1pmx(x)/lx + mu q(w)
      >= 0; condition number c = (|num + k - 1| + k - 1) / |num| (1 at k = 1).
    - w > 1: num = a + b, a = mu - k (exact near k), b = mu/expm1(w), the latter formed as
      exp(log(mu) - w)/(1 - e^-w), whose relative error grows like (|log mu| + w) ulp
      (the rounding of log(mu) and of w pass into the exponent as absolute errors):
      c = (|a| + |b| (1 + |log mu| + w)) / |num|, b = num - a.

    Flagged where c > ``DMU_CANCEL_FACTOR`` = 2. Measured on 30000 mpmath-checked points
    (20000 log-uniform, 10000 within 1e-3 relative of a zero crossing): every point
    where the kernel was > 5 ulp off was flagged; the 26 unflagged points at 3-5 ulp have
    c ~ 1 (no cancellation: the kernel's own roundings). Without the (|log mu| + w)
    weight the unflagged error reached 17 ulp (at 81 with factor 16). Flags ~1.7% of
    log-uniform points over k in [1, 1e7], mu in [1e-30, 1e9], theta in [1e-12, 1e10].
    """
    k = k.to(torch.float64)
    num = d_mu * (mu * (1.0 + mu / theta))
    km1 = k - 1.0
    w = theta * torch.log1p(mu / theta)
    c_small = (num + km1).abs() + km1
    a = mu - k
    c_big = a.abs() + (num - a).abs() * (1.0 + torch.log(mu).abs() + w)
    return torch.where(w > 1.0, c_big, c_small) > DMU_CANCEL_FACTOR * num.abs()
