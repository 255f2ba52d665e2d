"""Double-double refinement of the ZTNB loss value (and full value), d/dmu and d/dtheta.

The float64 ZTNB kernel (:func:`ztbench.loss.kernels.ztnb_kernel`) computes

    value = lgamma(theta) - lgamma(k+theta) + k log1p(theta/mu) + log(expm1(w))
    d_mu(k, mu, theta) = k/(theta+mu) - k/mu + theta/(theta+mu) / (1 - e^-w)
                       = (T - k) / (mu (1 + x)),   T = mu / (1 - e^-w),
    d_theta = psi(theta) - psi(k+theta) + k/(theta+mu) + s/(1 - e^-w),

with x = mu/theta, w = theta log1p(x) = -log P(0), s = log1p(x) - x/(1+x), as float64 sums
whose terms cancel where the value or a gradient crosses zero: 10^4-fold and more on the
project's suite, where the kernel is ~10^4 ulp off (w, e^-w and the digamma difference are
rounded). :func:`ztnb_value_dd` (:func:`ztnb_full_value_dd` with lgamma(k + 1)),
:func:`ztnb_dmu_dd` and :func:`ztnb_dtheta_dd` recompute the terms to ~2^-104 relative to
the largest, sum them in double-double and round once; :func:`ztnb_value_cancellation`,
:func:`ztnb_dmu_cancellation` and :func:`ztnb_dtheta_cancellation` tell from the kernel's
own float64 results where that is worth doing.

Accuracy (held by tests/loss/test_dd_ztnb.py and tests/loss/test_dd_ztnb_value.py against mpmath at
60-90 digits): each refined sum is within ~2^-104 of its largest term before the final
rounding, so the result is within a few ulp wherever the terms cancel by less than ~2^50.
At the float64 nearest a zero crossing the result is small by chance and no fixed
precision bounds its ulp error: the refinement hands the results whose condition number
(:func:`ztnb_value_condition`, :func:`ztnb_dmu_dd_magnitude`, :func:`ztnb_dtheta_condition`)
is beyond the double-double reach to :mod:`ztbench.loss.last_resort`. The d_theta
crossings for theta <= 16 are shallow (the result is 2^-55 .. 2^-62 of the largest
term), so there the double-double sum is at its limit. The d_theta form costs the most:
31 double-double reciprocals for the digamma
recurrence; the flags are a few elementwise passes over the kernel's own results.

Built on :mod:`ztbench.loss.dd.arith` (error-free transforms, double-double +, *, /, ``dd_log``,
``dd_exp_neg``); same caveats: eager execution only (an FMA-contracting compiler breaks
the error-free transforms), not differentiable (they replace values only), inputs not
validated (k >= 1 integer < 2^53, mu > 0, theta > 0 finite assumed). Not covered: the
exact zero of d_mu at theta = 1, mu = k - 1 (returned as ~1e-30, not 0).
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import torch
from torch import Tensor

from ztbench.loss import primitives as P
from ztbench.loss.dd.arith import (
    DD,
    const_dd,
    dd_add,
    dd_div,
    dd_div_f,
    dd_expm1_neg_plus,
    dd_log1p,
    dd_log_ratio,
    dd_mul,
    dd_one_minus_exp_neg,
    dec_parts,
    log_expansion,
    one_minus_exp,
    sum_expansion,
    two_sum,
)
from ztbench.loss.dd.lgamma import (
    dd_log1p_signed,
    dd_log1pmx,
    lgamma_diff_terms,
    log_dd_terms,
    log_factorial_terms,
    neg,
    scale_terms,
)

__all__ = [
    "DMU_CANCEL_FACTOR",
    "DTHETA_CANCEL_FACTOR",
    "DTHETA_THETA_MAX",
    "FULL_CANCEL_FACTOR",
    "VALUE_CANCEL_FACTOR",
    "ztnb_dmu_cancellation",
    "ztnb_dmu_condition",
    "ztnb_dmu_dd",
    "ztnb_dmu_dd_magnitude",
    "ztnb_dtheta_cancellation",
    "ztnb_dtheta_condition",
    "ztnb_dtheta_dd",
    "ztnb_dtheta_magnitude",
    "ztnb_full_value_dd",
    "ztnb_value_cancellation",
    "ztnb_value_condition",
    "ztnb_value_dd",
    "ztnb_value_magnitude",
    "ztnb_value_terms",
]


_T_NEAR_ONE = 2.0**-30  # k = 1 and T - 1 below this: the non-cancelling float64 form


def _flat64(k: Tensor, mu: Tensor, theta: Tensor) -> tuple[Tensor, Tensor, Tensor, torch.Size]:
    """k, mu, theta as flat float64 tensors of their broadcast shape (returned last)."""
    k, mu, theta = torch.broadcast_tensors(
        k.to(torch.float64), mu.to(torch.float64), theta.to(torch.float64)
    )
    return k.reshape(-1), mu.reshape(-1), theta.reshape(-1), mu.shape


# ---------------------------------------------------------------------------------- d/dmu
def ztnb_dmu_dd(k: Tensor, mu: Tensor, theta: Tensor) -> Tensor:
    """d/dmu of the ZTNB loss, k/(theta+mu) - k/mu + theta/(theta+mu)/(1 - e^-w), float64.

    Computed as (T - k) / (mu (1 + x)), T = mu / (1 - e^-w), everything in double-double:

    - x = mu/theta (:func:`~ztbench.loss.dd.arith.dd_div_f`), lx = log1p(x) (:func:`dd_log1p`),
      w = theta lx: each ~2^-104 relative.
    - 1 - e^-w: w_hi <= 1 :func:`dd_one_minus_exp_neg` (series + doublings, ~2^-102
      relative); 1 < w_hi <= 40 :func:`~ztbench.loss.dd.arith.dd_exp_neg` and 1 - y formed
      exactly; w_hi > 40 float64 e^-w_hi (1 - w_lo): y < 2^-57 with relative error ~2^-52,
      so T = mu/(1 - y) = mu (1 + y/(1 - y)) is off by < 2^-108 relative. The sensitivity
      of T to w is d log T / dw = -1/expm1(w), at most 1/w, so w's relative error passes to
      T unamplified.
    - T - k (double-double; k exact), divided by mu + mu x (double-double), rounded once.
      The cancellation T - k costs nothing beyond T's ~2^-102 relative error, so a result
      that cancels 2^40-fold still has a few ulp; at the float64 nearest a zero crossing
      the result is arbitrarily small by chance and no fixed precision bounds its ulp error.
    - theta = 1: the closed form (1 + mu - k) / (mu (1 + mu)) in double-double (its zero at
      mu = k - 1 is exact).
    - Exception, k = 1 with T - 1 < 2^-30 (tiny x and w, where T = 1 + (x + w)/2 + ...):
      T - 1 would lose its relative accuracy, so the kernel's non-cancelling form is used,
      num = -log1pmx(x)/log1p(x) + mu q(w), q(w) = 1/(1 - e^-w) - 1/w (both terms >= 0,
      float64 series of :mod:`~ztbench.loss.primitives`, a few ulp).

    Measured: see the module docstring (<= 3 ulp except at the float64 nearest a zero
    crossing, 148 ulp there at worst).
    """
    k, mu, theta, shape = _flat64(k, mu, theta)
    zero = torch.zeros_like(mu)
    mu_d = (mu, zero)
    x = dd_div_f(mu_d, theta)
    lx = dd_log1p(x)
    w = dd_mul((theta, zero), lx)
    wh = w[0]
    t = dd_div(mu_d, one_minus_exp(w))
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
    # theta = 1: w = log1p(mu) and d_mu = (1 + mu - k) / (mu (1 + mu)) exactly, whose zero
    # at mu = k - 1 is exact; the general sum leaves a ~2^-105 residue there (~1e-30 for
    # an exact 0, an unbounded ulp error), so the closed form is used, in double-double
    one = theta == 1.0
    if bool(one.any()):
        ones = torch.ones_like(mu)
        one_mu = two_sum(ones, mu)
        closed = dd_div(dd_add(one_mu, (-k, zero)), dd_mul(mu_d, one_mu))[0]
        out = torch.where(one, closed, out)
    return out.reshape(shape)


def ztnb_dmu_dd_magnitude(k: Tensor, mu: Tensor, theta: Tensor, d_mu: Tensor) -> Tensor:
    """The magnitude of :func:`ztnb_dmu_dd`'s own sum T - k, in units of d_mu:
    (|T| + k) / (mu (1 + x)), with T - k = d_mu mu (1 + x), x = mu/theta, from a d_mu
    that need not be accurate (T ~ k either way); |d_mu| where it does not form that
    difference (k = 1 with T - 1 < 2^-30, theta = 1). Over the refined |d_mu|: the
    condition number of the double-double sum.

    Not the kernel's magnitude (:func:`ztnb_dmu_condition`), which measures mu - k against
    mu/expm1(w): where mu ~ k that is far smaller than T ~ k, while the double-double error
    is ~2^-102 of T."""
    k = k.to(torch.float64)
    den = mu * (1.0 + mu / theta)
    t = d_mu * den + k
    exempt = ((k == 1.0) & (t - 1.0 < _T_NEAR_ONE)) | (theta == 1.0)
    return torch.where(exempt, d_mu.abs(), (t.abs() + k) / den)


# ----------------------------------------------------------------------- cancellation test
DMU_CANCEL_FACTOR = 2.0


def ztnb_dmu_cancellation(k: Tensor, mu: Tensor, theta: Tensor, d_mu: Tensor,
                          scale: float = 1.0) -> Tensor:  # fmt: skip
    """Where the kernel's float64 d_mu can be > ~2 ulp off through cancellation (bool):
    :func:`ztnb_dmu_condition` above ``DMU_CANCEL_FACTOR`` (times ``scale``)."""
    return ztnb_dmu_condition(k, mu, theta, d_mu) > DMU_CANCEL_FACTOR * scale


def ztnb_dmu_condition(k: Tensor, mu: Tensor, theta: Tensor, d_mu: Tensor) -> Tensor:
    """The condition number of the kernel's float64 d_mu sum (sum of |terms| / |d_mu|).

    From d_mu itself (the kernel's, or a refined one): num = d_mu mu (1 + mu/theta) = T - k (T as in
    :func:`ztnb_dmu_dd`), and one recomputed w = theta log1p(mu/theta) to tell the
    kernel's branches apart:

    - w <= 1: the kernel forms num = (T - 1) - (k - 1), T - 1 = -log1pmx(x)/lx + mu q(w)
      >= 0; condition number c = (|num + k - 1| + k - 1) / |num| (1 at k = 1).
    - w > 1: num = a + b, a = mu - k (exact near k), b = mu/expm1(w), the latter formed as
      exp(log(mu) - w)/(1 - e^-w), whose relative error grows like (|log mu| + w) ulp
      (the rounding of log(mu) and of w pass into the exponent as absolute errors):
      c = (|a| + |b| (1 + |log mu| + w)) / |num|, b = num - a.

    The kernel's d_mu is flagged for refinement where c > ``DMU_CANCEL_FACTOR`` = 2.
    Measured on 30000 mpmath-checked points (20000 log-uniform, 10000 within 1e-3
    relative of a zero crossing): every point where the kernel was > 5 ulp off was
    flagged; the 26 unflagged points at 3-5 ulp have c ~ 1 (no cancellation: the
    kernel's own roundings). Without the (|log mu| + w) weight the unflagged error
    reached 17 ulp (at 81 with factor 16). Flags ~1.7% of log-uniform points over k in
    [1, 1e7], mu in [1e-30, 1e9], theta in [1e-12, 1e10].
    """
    k = k.to(torch.float64)
    num = d_mu * (mu * (1.0 + mu / theta))
    km1 = k - 1.0
    w = theta * torch.log1p(mu / theta)
    c_small = (num + km1).abs() + km1
    a = mu - k
    c_big = a.abs() + (num - a).abs() * (1.0 + torch.log(mu).abs() + w)
    return torch.where(w > 1.0, c_big, c_small) / num.abs()


# ------------------------------------------------------------------------------- d/dtheta
DTHETA_THETA_MAX = 16.0  # ztnb_dtheta_dd is accurate for theta <= this (see its docstring)
_PSI_SHIFT = 32  # digamma: recurrence up to theta + 32, asymptotic series beyond
with localcontext() as _ctx:
    _ctx.prec = 60
    # 1/(2j + 1), j = 0..13 (the atanh series of _dd_s_small)
    _ODD_INV = [dec_parts(1 / Decimal(2 * j + 1), 2) for j in range(14)]
    # B_2n / (2n), n = 1..12: the digamma asymptotic series' coefficients
    _PSI_C = [
        dec_parts(Decimal(a) / b / (2 * (n + 1)), 2) for n, (a, b) in enumerate(P.BERNOULLI_2N)
    ]


def _psi_minus_log(z: DD) -> DD:
    """psi(z) - log(z) for a double-double z >= 32 (absolute error ~2^-110).

    -1/(2z) - sum_{n=1}^{12} B_2n/(2n) u^n, u = 1/z^2 <= 2^-10: the first omitted term
    is < 2^-113; the coefficients to n = 4 in double-double (n >= 5: their float64 rounding
    is < 2^-110 absolute), u and the Horner steps in double-double.
    """
    one = (torch.ones_like(z[0]), torch.zeros_like(z[0]))
    inv = dd_div(one, z)
    p = _psi_tail_dd(inv)
    return dd_add((-0.5 * inv[0], -0.5 * inv[1]), (-p[0], -p[1]))


def _psi_tail_dd(inv: DD) -> DD:
    """P(z) = sum_{n=1}^{12} B_2n/(2n) z^-2n from inv = 1/z (a double-double, z >= 32):
    log(z) - 1/(2z) - psi(z); absolute error ~2^-110 z^-2."""
    u = dd_mul(inv, inv)
    uh = u[0]
    tail = torch.full_like(uh, _PSI_C[11][0])
    for n in range(10, 3, -1):
        tail = _PSI_C[n][0] + uh * tail
    p = dd_add(const_dd(_PSI_C[3], uh), (uh * tail, torch.zeros_like(uh)))
    for n in (2, 1, 0):
        p = dd_add(const_dd(_PSI_C[n], uh), dd_mul(u, p))
    return dd_mul(u, p)


def _digamma_diff1(k: Tensor, theta: Tensor) -> DD:
    """psi(theta + 1) - psi(k + theta) = psi(theta) - psi(k + theta) + 1/theta, double-double.

    (k >= 1 integer, theta > 0; 0 at k = 1.) -sum_{1 <= j < min(k, 32)} 1/(theta + j)
    (each term a double-double quotient, theta + j exact by :func:`two_sum`), plus for
    k > 32 the difference psi(a) - psi(b), a = theta + 32, b = theta + k (both >= 32) as
    -log1p((k - 32)/a) (:func:`dd_log1p`: no
    cancellation of log(b) - log(a)) + (psi - log)(a) - (psi - log)(b)
    (:func:`_psi_minus_log`). Absolute error ~2^-104 times the largest term (1/theta or
    log(k)): without the 1/theta term, which the caller cancels analytically.
    """
    zero = torch.zeros_like(theta)
    acc = (zero, zero)
    one = (torch.ones_like(theta), zero)
    for j in range(1, _PSI_SHIFT):
        term = dd_div(one, two_sum(theta, torch.full_like(theta, float(j))))
        on = k > j
        acc = dd_add(acc, (torch.where(on, term[0], zero), torch.where(on, term[1], zero)))
    out = (-acc[0], -acc[1])
    idx = (k > _PSI_SHIFT).nonzero().squeeze(1)
    if idx.numel():
        ks = k.index_select(0, idx)
        th = theta.index_select(0, idx)
        a = two_sum(th, torch.full_like(th, float(_PSI_SHIFT)))
        b = two_sum(th, ks)
        q = dd_div((ks - _PSI_SHIFT, torch.zeros_like(ks)), a)
        lg = dd_log1p(q)
        pa = _psi_minus_log(a)
        pb = _psi_minus_log(b)
        d = dd_add(dd_add(pa, (-pb[0], -pb[1])), (-lg[0], -lg[1]))
        h, lo = dd_add((out[0].index_select(0, idx), out[1].index_select(0, idx)), d)
        out[0].index_copy_(0, idx, h)
        out[1].index_copy_(0, idx, lo)
    return out


_S_SERIES_MAX = 0.125  # x below: s by its atanh series (no lx - y cancellation)


def _dd_s_small(x: DD) -> DD:
    """s = log1p(x) - x/(1 + x) for a double-double 0 <= x <= 1/8, ~2^-103 relative.

    With v = x/(2 + x) (<= 1/17), log1p(x) = 2 atanh(v) and x/(1 + x) = 2v/(1 + v), so
    s = 2v^2/(1 + v) + 2 v^3 P(v^2), P(u) = sum_{j>=1} u^(j-1)/(2j + 1), and
    2v^2/(1 + v) = x^2/((1 + x)(2 + x)): positive terms only (lx - y would cancel
    ~2/x-fold). P to j = 13 (omitted < 2^-110 of s) with double-double coefficients.
    """
    one = (torch.ones_like(x[0]), torch.zeros_like(x[0]))
    two = (2.0 * one[0], one[1])
    xp2 = dd_add(two, x)
    v = dd_div(x, xp2)
    u = dd_mul(v, v)
    p = const_dd(_ODD_INV[13], x[0])
    for j in range(12, 0, -1):
        p = dd_add(const_dd(_ODD_INV[j], x[0]), dd_mul(u, p))
    tail = dd_mul(dd_mul(v, u), p)
    head = dd_div(dd_mul(x, x), dd_mul(dd_add(one, x), xp2))
    return dd_add(head, (2.0 * tail[0], 2.0 * tail[1]))


def ztnb_dtheta_dd(k: Tensor, mu: Tensor, theta: Tensor) -> Tensor:
    """d/dtheta of the ZTNB loss, float64 (theta > 16: :func:`_dtheta_big_dd`).

    For theta <= 16:

    psi(theta) - psi(k+theta) + k/(theta+mu) + s/(1 - e^-w), s = log1p(x) - x/(1+x),
    every term a double-double, summed and rounded once:

    - the digamma difference by :func:`_digamma_diff` (recurrence + asymptotic series);
    - k/(theta + mu) a double-double quotient (theta + mu exact by :func:`two_sum`); for
      x < 1 the 1/theta of psi(theta) and k/(theta + mu) are regrouped exactly as
      (k - 1)/theta - k y/theta (else at k = 1 and tiny x, -1/theta + 1/(theta + mu) =
      -y/theta would cancel ~1/x-fold);
    - s = lx - y with lx = :func:`dd_log1p` of x = mu/theta and y = x/(1 + x) in
      double-double for x > 1/8 (at most ~4 bits lost to the cancellation), by
      :func:`_dd_s_small` for x <= 1/8; 1 - e^-w as in :func:`ztnb_dmu_dd`.

    The error is ~2^-104 times the largest term (up to ~1/theta, |log k|, s/(1 - e^-w)),
    so the zero crossings keep a few ulp. Why only theta <= 16: for theta >> k, mu the
    terms are ~k/theta and the result ~(k - mu)^2/theta^2 (the Poisson limit), a
    cancellation ~theta/k that this plain sum does not remove (the kernel's regrouping
    around log1pmx((k - mu)/(theta + mu)) does); theta <= 16 bounds it to 16-fold
    (measured 5 .. 100 ulp from a crossing: <= 5 ulp at theta = 64 but 824 within 3
    ulp; 69 ulp at theta = 1000, 46553 at 1e6). For x >= 1 the 1/theta of psi(theta)
    and the 1/theta inside s/(1 - e^-w) (s/w = 1/theta - y/w) are cancelled
    analytically too: the sum is psi(theta + 1) - psi(k + theta) + k/(theta + mu) - y/w
    + s q(w), q(w) = 1/(1 - e^-w) - 1/w = g(w)/(w (1 - e^-w)) for w <= 1
    (:func:`dd_expm1_neg_plus`, no cancellation) and 1/(1 - e^-w) - 1/w for w > 1 (at
    most 2-fold); without it the result lost ~log1p(x) (up to ~48-fold) to 1/theta.
    """
    k, mu, theta, shape = _flat64(k, mu, theta)
    out = torch.full_like(mu, math.nan)
    big = (theta > DTHETA_THETA_MAX).nonzero().squeeze(1)
    if big.numel():
        out.index_copy_(0, big, _dtheta_big_dd(*(t.index_select(0, big) for t in (k, mu, theta))))
    idx = (theta <= DTHETA_THETA_MAX).nonzero().squeeze(1)
    if not idx.numel():
        return out.reshape(shape)
    k, mu, theta = (t.index_select(0, idx) for t in (k, mu, theta))
    zero = torch.zeros_like(mu)
    x = dd_div_f((mu, zero), theta)
    lx = dd_log1p(x)
    w = dd_mul((theta, zero), lx)
    one_x = dd_add((torch.ones_like(mu), zero), x)
    y = dd_div(x, one_x)
    s = dd_add(lx, (-y[0], -y[1]))
    small_x = x[0] <= _S_SERIES_MAX
    xs = (torch.where(small_x, x[0], zero), torch.where(small_x, x[1], zero))
    s_ser = _dd_s_small(xs)
    s = (torch.where(small_x, s_ser[0], s[0]), torch.where(small_x, s_ser[1], s[1]))
    om = one_minus_exp(w)
    sq = dd_div(s, om)
    d1 = _digamma_diff1(k, theta)
    # x < 1: psi(theta) - psi(k+theta) + k/(theta+mu) = d1 + (k - 1)/theta - k y/theta
    # (1/(theta+mu) = (1 - y)/theta): the 1/theta and k/theta parts cancelled exactly
    ky = dd_div_f(dd_mul((k, zero), y), theta)
    lo_x = dd_add(dd_div_f((k - 1.0, zero), theta), (-ky[0], -ky[1]))
    lo_x = dd_add(lo_x, sq)
    # x >= 1: d1 + k/(theta + mu) - y/w + s q(w): s/(1 - e^-w) - 1/theta = s q(w) - y/w
    # (s/w = 1/theta - y/w), q(w) = 1/(1 - e^-w) - 1/w = g(w)/(w (1 - e^-w)) for w <= 1
    c = dd_div((k, zero), two_sum(theta, mu))
    yw = dd_div(y, w)
    w_s = w[0] <= 1.0
    ws = (torch.where(w_s, w[0], 0.5 * torch.ones_like(mu)), torch.where(w_s, w[1], zero))
    g = dd_expm1_neg_plus(ws)
    q_s = dd_div(g, dd_mul(ws, dd_one_minus_exp_neg(ws)))
    inv_w = dd_div((torch.ones_like(mu), zero), w)
    q_b = dd_add(dd_div((torch.ones_like(mu), zero), om), (-inv_w[0], -inv_w[1]))
    q = (torch.where(w_s, q_s[0], q_b[0]), torch.where(w_s, q_s[1], q_b[1]))
    hi_x = dd_add(dd_add(c, (-yw[0], -yw[1])), dd_mul(s, q))
    below = x[0] < 1.0
    mid = (torch.where(below, lo_x[0], hi_x[0]), torch.where(below, lo_x[1], hi_x[1]))
    tot = dd_add(d1, mid)
    out.index_copy_(0, idx, tot[0] + tot[1])
    return out.reshape(shape)


_PSI_ASYM_MIN = 32.0  # psi's asymptotic series in double-double from here on


def _phi_diff_dd(k: Tensor, theta: Tensor) -> DD:
    """Phi(theta) - Phi(k + theta), Phi = psi - log, for theta > 16, k >= 1 (double-double).

    While z = theta + j < 32 (at most 16 steps, j < k): Phi(z) - Phi(z + 1) =
    log1pmx(1/z) (:func:`~ztbench.loss.dd.lgamma.dd_log1pmx`, all of one sign); then, from
    z0 = theta + j (a double-double) with m = k - j steps left,
    Phi(z0) - Phi(z0 + m) = -m/(2 z0 (z0 + m)) - (P(z0) - P(z0 + m)) with P the
    asymptotic tail of psi (:func:`_psi_tail_dd`): the 1/(2z) parts subtracted
    analytically, so the result ~ -k/(2 theta^2) keeps its relative accuracy for
    theta >> k (P(z0) - P(z0 + m) is ~1/(6 theta) of it; its cancellation costs
    ~2^-104/k relative).
    """
    zero = torch.zeros_like(theta)
    acc = (zero, zero)
    steps = zero
    one = (torch.ones_like(theta), zero)
    for j in range(int(_PSI_ASYM_MIN - DTHETA_THETA_MAX)):
        z = two_sum(theta, torch.full_like(theta, float(j)))
        use = (k > j) & (z[0] < _PSI_ASYM_MIN)
        if not bool(use.any()):
            break
        zs = (torch.where(use, z[0], torch.full_like(theta, 64.0)), torch.where(use, z[1], zero))
        st = dd_log1pmx(dd_div(one, zs))
        acc = dd_add(acc, (torch.where(use, st[0], zero), torch.where(use, st[1], zero)))
        steps = steps + use.to(theta.dtype)
    z0 = two_sum(theta, steps)
    m = k - steps
    z1 = dd_add(z0, (m, zero))
    lead = dd_div((0.5 * m, zero), dd_mul(z0, z1))
    p0 = _psi_tail_dd(dd_div(one, z0))
    p1 = _psi_tail_dd(dd_div(one, z1))
    rest = dd_add(neg(lead), dd_add(neg(p0), p1))
    return dd_add(acc, rest)


def _dd_log1pmx_t(k: Tensor, mu: Tensor, theta: Tensor) -> DD:
    """log1pmx(t), t = (k - mu)/(theta + mu) > -1, as a double-double (~2^-103 relative).

    t from the exact k - mu and theta + mu (:func:`two_sum`); t >= -1/8:
    :func:`~ztbench.loss.dd.lgamma.dd_log1pmx` (its series holds for |t| <= 1/8 of either
    sign); t < -1/8: log((k + theta)/(theta + mu)) - t, the quotient in double-double (1 + t
    formed from t would lose the relative accuracy of a small (k + theta)/(theta + mu)).
    """
    zero = torch.zeros_like(mu)
    num = two_sum(k, -mu)
    den = two_sum(theta, mu)
    t = dd_div(num, den)
    low = t[0] < -0.125
    ts = (torch.where(low, zero, t[0]), torch.where(low, zero, t[1]))
    ser = dd_log1pmx(ts)
    kt = two_sum(k, theta)
    q = dd_div(kt, den)
    lq = log_dd_terms(q)
    hi = sum_expansion([*lq, -t[0], -t[1]])
    lo = sum_expansion([*lq, -t[0], -t[1], -hi])
    return torch.where(low, hi, ser[0]), torch.where(low, lo, ser[1])


def _dtheta_big_dd(k: Tensor, mu: Tensor, theta: Tensor) -> Tensor:
    """d/dtheta for theta > 16 (flat float64), the kernel's regroupings in double-double.

    w <= 1: E - (k - 1) y/theta + log1pmx(x)/((1 + x) w) + s q(w) with E = k/theta -
    (psi(k + theta) - psi(theta)) = [Phi(theta) - Phi(k + theta)] - log1pmx(k/theta) and
    q(w) = g(w)/(w (1 - e^-w)) (no term ~1/theta: at k = 1 and tiny mu the result
    ~ -mu/(2 theta^2) keeps its relative accuracy). w > 1:

        d/dtheta = [Phi(theta) - Phi(k + theta)] - log1pmx(t) + s/expm1(w),
        t = (k - mu)/(theta + mu),  s = log1p(x) - x/(1 + x),  Phi = psi - log

    (psi(theta) - psi(k + theta) + k/(theta + mu) + s/(1 - e^-w) with the logs of the
    digamma difference, k/(theta + mu) and s cancelled analytically into -log1pmx(t),
    which is ~t^2/2 with k - mu exact: the Poisson limit's (k - mu)^2). Phi difference by
    :func:`_phi_diff_dd`, log1pmx(t) by :func:`_dd_log1pmx_t`, s as in
    :func:`ztnb_dtheta_dd`, s/expm1(w) = s (1 - o)/o with o = 1 - e^-w
    (:func:`one_minus_exp`). Every term within ~2^-104 of itself; all three are
    O(1/theta^2) for large theta, so the sum's cancellation is the zero crossing's own.
    """
    zero = torch.zeros_like(mu)
    one = (torch.ones_like(mu), zero)
    x = dd_div_f((mu, zero), theta)
    lx = dd_log1p(x)
    w = dd_mul((theta, zero), lx)
    y = dd_div(x, dd_add(one, x))
    s = dd_add(lx, neg(y))
    small_x = x[0] <= _S_SERIES_MAX
    xs = (torch.where(small_x, x[0], zero), torch.where(small_x, x[1], zero))
    s_ser = _dd_s_small(xs)
    s = (torch.where(small_x, s_ser[0], s[0]), torch.where(small_x, s_ser[1], s[1]))
    om = one_minus_exp(w)
    phi = _phi_diff_dd(k, theta)
    # w > 1
    sq = dd_div(dd_mul(s, dd_add(one, neg(om))), om)
    big = dd_add(dd_add(phi, neg(_dd_log1pmx_t(k, mu, theta))), sq)
    # w <= 1: E - (k - 1) y/theta + log1pmx(x)/((1 + x) w) + s q(w),
    # E = k/theta - (psi(k + theta) - psi(theta)) = Phi diff - log1pmx(k/theta) (0 at k = 1)
    w_s = w[0] <= 1.0
    ws = (torch.where(w_s, w[0], torch.full_like(mu, 0.5)), torch.where(w_s, w[1], zero))
    e = dd_add(phi, neg(dd_log1pmx(dd_div_f((k, zero), theta))))
    e = (torch.where(k > 1.0, e[0], zero), torch.where(k > 1.0, e[1], zero))
    ky = dd_div_f(dd_mul((k - 1.0, zero), y), theta)
    lpm = dd_div(dd_log1pmx(x), dd_mul(dd_add(one, x), ws))
    q = dd_div(dd_expm1_neg_plus(ws), dd_mul(ws, dd_one_minus_exp_neg(ws)))
    small = dd_add(dd_add(e, neg(ky)), dd_add(lpm, dd_mul(s, q)))
    return torch.where(w_s, small[0] + small[1], big[0] + big[1])


DTHETA_CANCEL_FACTOR = 2.0


def ztnb_dtheta_cancellation(k: Tensor, mu: Tensor, theta: Tensor, d_theta: Tensor) -> Tensor:
    """Where the kernel's float64 d_theta can be > ~2 ulp off through cancellation (bool):
    :func:`ztnb_dtheta_condition` above ``DTHETA_CANCEL_FACTOR``."""
    return ztnb_dtheta_condition(k, mu, theta, d_theta) > DTHETA_CANCEL_FACTOR


def ztnb_dtheta_condition(k: Tensor, mu: Tensor, theta: Tensor, d_theta: Tensor) -> Tensor:
    """The condition number of the kernel's float64 d_theta sum:
    :func:`ztnb_dtheta_magnitude` / |d_theta|."""
    return ztnb_dtheta_magnitude(k, mu, theta, d_theta) / d_theta.abs()


def ztnb_dtheta_magnitude(k: Tensor, mu: Tensor, theta: Tensor, d_theta: Tensor) -> Tensor:
    """The sum of the magnitudes of the kernel's float64 d_theta terms (see below for the
    flags built on it).

    theta > ``DTHETA_THETA_MAX`` = 16: the condition number of the kernel's regrouped sum
    (:func:`_dtheta_big_magnitude`) against ``DTHETA_CANCEL_FACTOR`` (measured on 1000
    mpmath-checked points, half with k ~ mu: unflagged within 5 ulp, 8 on a suite point
    at condition 1.9; flags ~16% of that set). theta <= 16: from the kernel's own d_theta
    and the regrouped terms of
    :func:`ztnb_dtheta_dd` recomputed in float64: D1 = psi(theta + 1) - psi(k + theta)
    (``torch.digamma``), for x < 1 t1 = (k - 1)/theta, t2 = -k y/theta, for x >= 1
    t1 = k/(theta + mu), t2 = -y/w, and the rest r = d_theta - D1 - t1 - t2; flagged where
    (|D1| + |t1| + |t2| + |r|) > ``DTHETA_CANCEL_FACTOR`` |d_theta|.

    Factor 2 measured on ~10800 mpmath-checked points with theta <= 16 (10000 log-uniform,
    the rest at d_theta's zero crossings): the unflagged points were within 3 ulp (7 at
    3 ulp); factor 4 left 7 ulp, 8 left 14. Flags ~10% of log-uniform points with
    theta <= 16 (~6% over theta in [1e-12, 1e10]).
    """
    k = k.to(torch.float64)
    x = mu / theta
    y = x / (1.0 + x)
    w = theta * torch.log1p(x)
    d1 = torch.digamma(theta + 1.0) - torch.digamma(k + theta)
    below = x < 1.0
    t1 = torch.where(below, (k - 1.0) / theta, k / (theta + mu))
    t2 = torch.where(below, -k * y / theta, -y / w)
    r = d_theta - d1 - t1 - t2
    cond = d1.abs() + t1.abs() + t2.abs() + r.abs()
    return torch.where(theta <= DTHETA_THETA_MAX, cond, _dtheta_big_magnitude(k, mu, theta))


def _dtheta_big_magnitude(k: Tensor, mu: Tensor, theta: Tensor) -> Tensor:
    """Sum of the magnitudes of the float64 kernel's d_theta terms for theta > 16.

    w > 1: |psi(theta) - psi(k + theta) + log1p(k/theta)| + |log1pmx(t)| + s/expm1(w)
    (for |t| > 1/2 |log1p(t)| + |t| instead of |log1pmx(t)|: the kernel's difference);
    w <= 1: |E| + (k - 1) y/theta + |log1pmx(x)|/((1 + x) w) + s q(w) (see
    :func:`_dtheta_big_dd`; the float64 primitives the kernel uses).
    """
    th = torch.where(theta > DTHETA_THETA_MAX, theta, torch.full_like(theta, 32.0))
    x = mu / th
    lx = torch.log1p(x)
    one_x = 1.0 + x
    y = x / one_x
    w = th * lx
    s = torch.where(y <= 0.5, -P.log1pmx(-torch.where(y <= 0.5, y, 0.25 * torch.ones_like(y))),
                    lx - y)
    t = (k - mu) / (th + mu)
    # |t| > 1/2: the kernel forms log((k + theta)/(theta + mu)) - t, both counted
    lpm_t = torch.log((k + th) / (th + mu)).abs() + t.abs()
    lpm_t = torch.where(t.abs() <= 0.5, P.log1pmx(torch.where(t.abs() <= 0.5, t, 0.0 * t)), lpm_t)
    w_b = torch.where(w > 1.0, w, torch.full_like(w, 2.0))
    # unflagged (condition <= 2) the kernel was measured within 8 ulp (k = mu = 2,
    # theta = 7.2e6: its float64 digamma series carry a few ulp; weighting them 4x would
    # flag ~60% of theta > 16 for 4 ulp: not worth it against the 16-ulp gradient goal)
    big = P.digamma_log_difference(k, th).abs() + lpm_t.abs() + s / torch.expm1(w_b)
    w_s = torch.where(w > 1.0, torch.full_like(w, 0.5), w)
    e, _ = P.digamma_excess(k, th)
    small = (e.abs() + (k - 1.0) * y / th + P.log1pmx(x).abs() / (one_x * w_s)
             + s * P.inv1mexp_minus_inv(w_s))
    return torch.where(w > 1.0, big, small)


# ---------------------------------------------------------------------------------- value
VALUE_CANCEL_FACTOR = 2.0
# the full value: value + lgamma(k + 1) flagged by the same rule (measured: unflagged
# within 2 ulp up to factor 4, 8 ulp at 8); where Loader's form
# (:func:`ztbench.loss.stirlerr.ztnb_full_value`) is used, its condition number
# (:func:`ztbench.loss.stirlerr.ztnb_full_condition`) against this factor (measured on
# 1600 mpmath-checked points, 900 with k ~ mu: unflagged within 2 ulp with factor 3,
# which leaves 69% of the Loader points unrefined; 3 ulp with 4 (82%), 6 with 8)
FULL_CANCEL_FACTOR = 3.0


def _h_terms(w: DD) -> list[Tensor]:
    """h(w) = log(expm1(w)/w) for a flat double-double w > 0 as an expansion.

    w_hi <= 1: w + log1p(-g/w), g = e^-w - 1 + w (:func:`dd_expm1_neg_plus`; 1 - e^-w =
    w - g, so expm1(w)/w = e^w (w - g)/w): both parts ~w, h ~ w/2 keeps its relative
    accuracy for tiny w; w_hi > 1: w + log(1 - e^-w) - log(w) (:func:`one_minus_exp`).
    """
    wh = w[0]
    zero = torch.zeros_like(wh)
    small = wh <= 1.0
    ws = (torch.where(small, wh, torch.full_like(wh, 0.5)), torch.where(small, w[1], zero))
    g = dd_expm1_neg_plus(ws)
    ls = dd_log1p_signed(neg(dd_div(g, ws)))
    wb = (torch.where(small, torch.full_like(wh, 2.0), wh), torch.where(small, zero, w[1]))
    big = [*log_dd_terms(one_minus_exp(wb)), *(-t for t in log_dd_terms(wb))]
    out = [w[0], w[1]]
    out += [torch.where(small, ls[0], zero), torch.where(small, ls[1], zero)]
    out += [torch.where(small, zero, t) for t in big]
    return out


def ztnb_value_terms(k: Tensor, mu: Tensor, theta: Tensor) -> list[Tensor]:
    """The ZTNB loss lgamma(theta) - lgamma(k+theta) + k log1p(theta/mu) + log(expm1(w)) as
    an expansion (flat float64 inputs), in the float64 kernel's grouping:

    - x = mu/theta < 1: -Delta + k log(theta) - (k - 1) log(mu) + k log1p(x) + log(r) + h(w),
      r = log1p(x)/x (log r = log1p(log1pmx(x)/x): ~-x/2 to full relative accuracy);
    - x >= 1: -Delta + log(theta) + k log1p(1/x) + log(log1p(x)) + h(w);

    Delta = lgamma(k + theta) - lgamma(theta) (:func:`~ztbench.loss.dd.lgamma.lgamma_diff_terms`),
    h(w) = log(expm1(w)/w) (:func:`_h_terms`), w = theta log1p(x), every piece a
    double-double or an exact product of k with an 8-float log expansion. The sum is
    within a few units of 2^-104 of the largest term (Delta's, k log theta's or
    (k - 1) log mu's), so a loss that cancels 2^40-fold keeps a few ulp.
    """
    zero = torch.zeros_like(mu)
    huge = torch.isinf(mu / theta)  # x overflows: lx = log(mu) - log(theta), 1/x ~ 0
    x = dd_div_f((mu, zero), torch.where(huge, mu, theta))  # (x = 1 stands in there)
    lx = dd_log1p(x)
    if bool(huge.any()):
        lr = dd_log_ratio(mu, theta)
        lx = (torch.where(huge, lr[0], lx[0]), torch.where(huge, lr[1], lx[1]))
    w = dd_mul((theta, zero), lx)
    below = x[0] < 1.0
    out = [-t for t in lgamma_diff_terms(k, theta)]
    out += _h_terms(w)
    log_th = log_expansion(theta)
    # x < 1
    xb = (torch.where(below, x[0], torch.full_like(mu, 0.5)), torch.where(below, x[1], zero))
    log_r = dd_log1p_signed(dd_div(dd_log1pmx(xb), xb))
    klx = dd_mul((k, zero), lx)
    lo = [*scale_terms(k, log_th), *scale_terms(1.0 - k, log_expansion(mu)), *klx, *log_r]
    out += [torch.where(below, t, zero) for t in lo]
    # x >= 1
    inv_x = dd_div_f((theta, zero), torch.where(below, theta, mu))
    kl1 = dd_mul((k, zero), dd_log1p(inv_x))
    # huge x: k log1p(1/x) = k theta/mu (< 2^-1024 k; the quotient overflows in dd_div_f)
    kl1 = (torch.where(huge, k * (theta / mu), kl1[0]), torch.where(huge, zero, kl1[1]))
    lxa = (torch.where(below, torch.ones_like(mu), lx[0]), torch.where(below, zero, lx[1]))
    hi = [*log_th, *kl1, *log_dd_terms(lxa)]
    out += [torch.where(below, zero, t) for t in hi]
    return out


def ztnb_value_dd(k: Tensor, mu: Tensor, theta: Tensor) -> Tensor:
    """The ZTNB loss (no lgamma(k + 1)), float64, from :func:`ztnb_value_terms` summed once."""
    k, mu, theta, shape = _flat64(k, mu, theta)
    return sum_expansion(ztnb_value_terms(k, mu, theta)).reshape(shape)


def ztnb_full_value_dd(k: Tensor, mu: Tensor, theta: Tensor) -> Tensor:
    """-log P(X = k) of the ZTNB law (the loss plus lgamma(k + 1)), float64: the terms of
    :func:`ztnb_value_terms` and of lgamma(k + 1)
    (:func:`~ztbench.loss.dd.lgamma.log_factorial_terms`) summed once, so lgamma(k + 1)
    cancels against lgamma(k + theta) without a float64 rounding in between."""
    k, mu, theta, shape = _flat64(k, mu, theta)
    terms = ztnb_value_terms(k, mu, theta) + log_factorial_terms(k)
    return sum_expansion(terms).reshape(shape)


def ztnb_value_magnitude(k: Tensor, mu: Tensor, theta: Tensor, full: bool = False) -> Tensor:
    """Sum of the magnitudes of the float64 kernel's value terms (float64); ``full``: of
    value + lgamma(k + 1), lgamma(k + 1) being one more term.

    The kernel (:func:`ztbench.loss.kernels.ztnb_kernel`) forms, with D, G of
    :func:`~ztbench.loss.primitives.lgamma_excess`: x < 1 and theta >= 10:
    -D - (k - 1) log(mu) + k lx + log r + h; x < 1 and theta < 10: -G - (k - 1) log(x) +
    k lx + log r + h; x >= 1: -G + k log1p(1/x) + log(lx) + h. Each term carries a few ulp
    of itself (D and G: of what they sum, :func:`~ztbench.loss.primitives.lgamma_excess_magnitude`),
    so |value| against this sum is the condition number of the value.
    """
    x = mu / theta
    lx = P.log1p_ratio(x, mu, theta)
    w = theta * lx
    d, g = P.lgamma_excess(k, theta)
    m_d, m_g = P.lgamma_excess_magnitude(k, theta, d, g)
    below = x < 1.0
    second = torch.where(
        theta >= P.STIRLING_MIN,
        m_d + ((k - 1.0) * torch.log(mu)).abs(),
        m_g + ((k - 1.0) * (torch.log(mu) - torch.log(theta))).abs(),
    )
    h = P.log_expm1_over_x(w).abs()
    lo = second + k * lx + 0.5 * x + h
    x_a = torch.where(below, torch.full_like(x, 2.0), x)
    lx_a = torch.where(below, torch.full_like(x, math.log1p(2.0)), lx)
    hi = m_g + k * torch.log1p(1.0 / x_a) + torch.log(lx_a).abs() + h
    mag = torch.where(below, lo, hi)
    return mag + torch.lgamma(k.to(torch.float64) + 1.0) if full else mag


def ztnb_value_cancellation(
    k: Tensor, mu: Tensor, theta: Tensor, value: Tensor, full: bool = False
) -> Tensor:
    """Where the float64 value (``full``: value + lgamma(k + 1)) can be > ~2 ulp off (bool).

    Flagged where the sum of the magnitudes of its terms (:func:`ztnb_value_magnitude`,
    plus lgamma(k + 1) for the full form) exceeds ``VALUE_CANCEL_FACTOR`` (resp.
    ``FULL_CANCEL_FACTOR``) times |value|.
    """
    factor = FULL_CANCEL_FACTOR if full else VALUE_CANCEL_FACTOR
    return ztnb_value_condition(k, mu, theta, value, full) > factor


def ztnb_value_condition(
    k: Tensor, mu: Tensor, theta: Tensor, value: Tensor, full: bool = False
) -> Tensor:
    """The condition number of the float64 value (``full``: value + lgamma(k + 1)): the sum
    of the magnitudes of its terms (:func:`ztnb_value_magnitude`, plus lgamma(k + 1) for
    the full form) over |value|."""
    return ztnb_value_magnitude(k.to(torch.float64), mu, theta, full) / value.abs()
