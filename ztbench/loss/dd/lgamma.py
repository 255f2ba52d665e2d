"""Double-double log-gamma pieces: lgamma(k + theta) - lgamma(theta), lgamma(k + 1), logs.

The ZTNB loss contains -[lgamma(k + theta) - lgamma(theta)] and its full form adds
lgamma(k + 1); both cancel against the other terms where the loss crosses zero (or, in
the full form, against each other: at k = 250000, mu = 300, theta = 1e-5 the terms are
~3e6 and the result ~30). This module returns those quantities as *expansions* (lists of
float64 tensors whose exact sum is the quantity to ~2^-104 of its largest part), so that
the callers (:mod:`ztbench.loss.dd.ztnb`, :mod:`ztbench.loss.dd.ztp`) can sum every term
of the loss once with :func:`~ztbench.loss.dd.arith.sum_expansion` and round once.

Public functions (flat float64 tensors, k integer-valued >= 1, theta > 0 finite):

- :func:`lgamma_diff_terms`: lgamma(k + theta) - lgamma(theta). Three regimes, all
  relative to the largest term (``a few units of 2^-104``):

  * product form, k <= 32: sum over groups of four of log((theta + j) ... (theta + j + 3)),
    each product a double-double (relative error ~2^-103), each log an 8-float expansion
    of its head plus the tail's first-order correction;
  * Stirling difference, theta >= 32 (any k): with x = k/theta,
    k log(theta) + (k - 1/2) log1p(x) + theta log1pmx(x) + corr(k + theta) - corr(theta),
    corr(z) = lgamma(z) - Stirling = sum_{n<=12} B_2n / (2n (2n - 1) z^(2n - 1))
    (z >= 32: the first omitted term is < 2^-114); theta log1pmx(x) is the part that
    would cancel catastrophically if written as a difference of two (z - 1/2) log z;
  * theta < 32 < k: the product form for j < 32 and the Stirling difference at base
    b = theta + 32 (a double-double, >= 32) with k - 32 steps. This also covers theta ~ k
    (there x ~ 1 and the Stirling terms are all of the size of the result: no
    cancellation, so no separate digamma-series form is needed).

- :func:`log_factorial_terms`: lgamma(k + 1) = log(k!), exact 3-float table for k < 32,
  else (k + 1/2) log k - k + log(2 pi)/2 + corr(k) (corr in float64 beyond its
  double-double first term: its float64 rounding is < 2^-70 absolute).
- :func:`log_dd_terms`: log of a positive double-double; :func:`dd_log1p_signed`:
  log1p of a double-double z > -1 with full relative accuracy also for small negative z;
  :func:`dd_log1pmx`: log(1 + x) - x of a double-double x >= 0.

Same caveats as :mod:`ztbench.loss.dd.arith`: eager only (no FMA contraction), not
differentiable, inputs not validated.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import torch
from torch import Tensor

from ztbench.loss.dd.arith import (
    DD,
    const_dd,
    dd_add,
    dd_div,
    dd_log,
    dd_log1p,
    dd_mul,
    dec_parts,
    fast_two_sum,
    log_expansion,
    two_prod,
    two_sum,
)
from ztbench.loss.primitives import BERNOULLI_2N

__all__ = [
    "HALF_LOG_2PI_DD",
    "LGAMMA_PRODUCT_K",
    "PI_DEC",
    "dd_log1p_signed",
    "dd_log1pmx",
    "lgamma_diff_terms",
    "log_dd_terms",
    "log_factorial_terms",
    "neg",
    "scale_terms",
]

LGAMMA_PRODUCT_K = 32  # product form below, Stirling difference from theta + 32 on
_GROUP = 4  # factors per double-double product (theta + j <= 1e10 + 32: no overflow)
PI_DEC = Decimal("3.14159265358979323846264338327950288419716939937510582097494")
with localcontext() as _ctx:
    _ctx.prec = 70
    # corr(z) = sum_n B_2n / (2n (2n - 1)) z^(1 - 2n): coefficients as double-doubles
    _CORR_C = [
        dec_parts(Decimal(a) / b / ((2 * n) * (2 * n - 1)), 2)
        for n, (a, b) in enumerate(BERNOULLI_2N, start=1)
    ]
    HALF_LOG_2PI_DD = dec_parts((2 * PI_DEC).ln() / 2, 3)
    # log(k!) for k < 32 as three floats (exact to ~2^-159 relative)
    _LOG_FACT = [dec_parts(Decimal(math.factorial(k)).ln(), 3) for k in range(LGAMMA_PRODUCT_K)]
    # 1/(2j + 1), j = 0..13 (atanh series)
    _ODD_INV = [dec_parts(1 / Decimal(2 * j + 1), 2) for j in range(14)]

_TABLE_CACHE: dict[torch.device, Tensor] = {}


def neg(a: DD) -> DD:
    """-a for a double-double a."""
    return -a[0], -a[1]


def scale_terms(c: Tensor, terms: list[Tensor]) -> list[Tensor]:
    """c * (sum of terms) as an exact expansion (each product split by :func:`two_prod`;
    c a float64 integer or half-integer below 2^52 is exact in every product)."""
    out: list[Tensor] = []
    for t in terms:
        p, e = two_prod(c, t)
        out += [p, e]
    return out


# ---------------------------------------------------------------------------------- logs
def log_dd_terms(a: DD) -> list[Tensor]:
    """log(a_hi + a_lo) for a positive double-double as an expansion (~2^-110 relative).

    log(a_hi) by :func:`~ztbench.loss.dd.arith.log_expansion` plus log1p(t) = t - t^2/2,
    t = a_lo/a_hi (|t| <= 2^-53: the omitted t^3/3 is < 2^-159).
    """
    t = a[1] / a[0]  # its own rounding is < 2^-106 |t| <= 2^-159
    return [*log_expansion(a[0]), t, -0.5 * t * t]


def _dd_atanh_log1p(z: DD) -> DD:
    """log1p(z) = 2 atanh(v), v = z/(2 + z), for a double-double |z| <= 1/16 (~2^-104 rel.).

    2 atanh(v) = 2v + 2 v^3 P(v^2), P(u) = sum_{j>=1} u^(j-1)/(2j + 1) to j = 13
    (|v| <= 1/31: the omitted term is < 2^-120 of the result). No cancellation for
    either sign of z (every term has the sign of z).
    """
    two = (torch.full_like(z[0], 2.0), torch.zeros_like(z[0]))
    v = dd_div(z, dd_add(two, z))
    u = dd_mul(v, v)
    p = const_dd(_ODD_INV[13], z[0])
    for j in range(12, 0, -1):
        p = dd_add(const_dd(_ODD_INV[j], z[0]), dd_mul(u, p))
    tail = dd_mul(dd_mul(v, u), p)
    return dd_add((2.0 * v[0], 2.0 * v[1]), (2.0 * tail[0], 2.0 * tail[1]))


def dd_log1p_signed(z: DD) -> DD:
    """log(1 + z) for a double-double z > -1, ~2^-104 relative for either sign of z.

    |z| <= 1/16: :func:`_dd_atanh_log1p` (relative accuracy for tiny |z|); z > 1/16:
    :func:`~ztbench.loss.dd.arith.dd_log1p`; -1 < z < -1/16: 1 + z formed exactly as
    s + d (:func:`two_sum`), log(s) + d/s (|log(1 + z)| >= 0.064, so the ~2^-110
    absolute error of the table log is ~2^-106 relative).
    """
    zh = z[0]
    small = zh.abs() <= 1.0 / 16.0
    zero = torch.zeros_like(zh)
    zs = (torch.where(small, zh, zero), torch.where(small, z[1], zero))
    ser = _dd_atanh_log1p(zs)
    pos = zh > 0
    zp = (torch.where(pos, zh, zero), torch.where(pos, z[1], zero))
    lp = dd_log1p(zp)
    s, e = two_sum(torch.ones_like(zh), torch.where(pos | small, -0.5 * torch.ones_like(zh), zh))
    d = e + torch.where(pos | small, zero, z[1])
    ln = dd_add(dd_log(s), fast_two_sum(d / s, zero))
    hi = torch.where(small, ser[0], torch.where(pos, lp[0], ln[0]))
    lo = torch.where(small, ser[1], torch.where(pos, lp[1], ln[1]))
    return hi, lo


def dd_log1pmx(x: DD) -> DD:
    """log(1 + x) - x for a double-double x >= 0 (~2^-103 relative to the result).

    x <= 1/8: -x^2/(2 + x) + 2 v^3 P(v^2), v = x/(2 + x) (2v - x = -x^2/(2 + x), the
    atanh tail 2 v^3 P ~ x^3/12 of the other sign is at most x/6 of the first: no
    cancellation); x > 1/8: dd_log1p(x) - x (at most ~17-fold cancellation, at x = 1/8).
    """
    xh = x[0]
    zero = torch.zeros_like(xh)
    small = xh <= 0.125
    xs = (torch.where(small, xh, zero), torch.where(small, x[1], zero))
    two = (torch.full_like(xh, 2.0), zero)
    xp2 = dd_add(two, xs)
    v = dd_div(xs, xp2)
    u = dd_mul(v, v)
    p = const_dd(_ODD_INV[13], xh)
    for j in range(12, 1, -1):
        p = dd_add(const_dd(_ODD_INV[j], xh), dd_mul(u, p))
    p = dd_add(const_dd(_ODD_INV[1], xh), dd_mul(u, p))
    tail = dd_mul(dd_mul(v, u), p)
    head = dd_div(dd_mul(xs, xs), xp2)
    ser = dd_add((2.0 * tail[0], 2.0 * tail[1]), neg(head))
    xl = (torch.where(small, torch.ones_like(xh), xh), torch.where(small, zero, x[1]))
    direct = dd_add(dd_log1p(xl), neg(xl))
    return torch.where(small, ser[0], direct[0]), torch.where(small, ser[1], direct[1])


# ------------------------------------------------------------------------ Stirling pieces
def _corr_dd(z: DD) -> DD:
    """corr(z) = lgamma(z) - ((z - 1/2) log z - z + log(2 pi)/2) for a double-double z >= 32.

    (1/z) sum_{n=1}^{12} c_n u^(n-1), u = 1/z^2 <= 2^-10, c_n = B_2n/(2n (2n - 1)) as
    double-doubles; the first omitted term is < 2^-114 (absolute, z >= 32).
    """
    one = (torch.ones_like(z[0]), torch.zeros_like(z[0]))
    inv = dd_div(one, z)
    u = dd_mul(inv, inv)
    p = const_dd(_CORR_C[-1], z[0])
    for c in reversed(_CORR_C[:-1]):
        p = dd_add(const_dd(c, z[0]), dd_mul(u, p))
    return dd_mul(inv, p)


def _stirling_diff_terms(m: Tensor, b: DD) -> list[Tensor]:
    """lgamma(b + m) - lgamma(b) for a double-double b >= 32 and integer m >= 0 (float64).

    m log(b) + (m - 1/2) log1p(x) + b log1pmx(x) + corr(b + m) - corr(b), x = m/b: the
    Stirling expansions of both log-gammas subtracted analytically (TOMS 708 ``algdiv``
    idea, here in double-double). 0 exactly at m = 0 (every term is 0 or cancels exactly:
    corr(b + 0) - corr(b) are the same expansion).
    """
    zero = torch.zeros_like(m)
    x = dd_div((m, zero), b)
    lb = log_dd_terms(b)
    l1p = dd_log1p(x)
    lpm = dd_log1pmx(x)
    t1 = dd_mul((m - 0.5, zero), l1p)
    t2 = dd_mul(b, lpm)
    c_hi = _corr_dd(dd_add(b, (m, zero)))
    c_lo = _corr_dd(b)
    return [*scale_terms(m, lb), t1[0], t1[1], t2[0], t2[1], c_hi[0], c_hi[1], -c_lo[0], -c_lo[1]]


def _group_product(theta: DD, start: int, k: Tensor) -> DD:
    """prod_{j = start}^{start + 3, j < k} (theta + j) as a double-double (1 where j >= k)."""
    one = (torch.ones_like(k), torch.zeros_like(k))
    prod = one
    for j in range(start, start + _GROUP):
        f = dd_add(theta, (torch.full_like(k, float(j)), torch.zeros_like(k)))
        on = k > j
        f = (torch.where(on, f[0], one[0]), torch.where(on, f[1], one[1]))
        prod = dd_mul(prod, f)
    return prod


def _product_terms(k: Tensor, theta: Tensor, n: int) -> list[Tensor]:
    """sum_{0 <= j < min(k, n)} log(theta + j) as an expansion (groups of four factors)."""
    th = (theta, torch.zeros_like(theta))
    terms: list[Tensor] = []
    for start in range(0, n, _GROUP):
        if not bool((k > start).any()):
            break
        terms += log_dd_terms(_group_product(th, start, k))
    return terms


def lgamma_diff_terms(k: Tensor, theta: Tensor) -> list[Tensor]:
    """lgamma(k + theta) - lgamma(theta) as an expansion (flat float64 k >= 1 integer, theta > 0).

    See the module docstring for the three regimes. Every element takes the path of its
    regime only where its terms are nonzero: the expansion is the concatenation, with
    zeros where a regime does not apply.
    """
    zero = torch.zeros_like(theta)
    big = (theta >= float(LGAMMA_PRODUCT_K)) & (k >= 2.0)  # k = 1: log(theta), exactly
    few = ~big & (k <= LGAMMA_PRODUCT_K)
    mixed = ~big & ~few
    n = LGAMMA_PRODUCT_K
    out: list[Tensor] = []
    # product form (few), or its first n factors (mixed); big: theta is irrelevant here
    kp = torch.where(big, torch.zeros_like(k), torch.where(few, k, torch.full_like(k, float(n))))
    thp = torch.where(big, torch.ones_like(theta), theta)
    out += [torch.where(big, zero, t) for t in _product_terms(kp, thp, n)]
    # Stirling difference: (k, theta) for big, (k - n, theta + n) for mixed
    if bool((big | mixed).any()):
        base = two_sum(torch.where(big | mixed, theta, torch.full_like(theta, float(n))),
                       torch.where(mixed, torch.full_like(theta, float(n)), zero))
        m = torch.where(big, k, torch.where(mixed, k - n, torch.zeros_like(k)))
        use = big | mixed
        out += [torch.where(use, t, zero) for t in _stirling_diff_terms(m, base)]
    return out


def log_factorial_terms(k: Tensor) -> list[Tensor]:
    """lgamma(k + 1) = log(k!) as an expansion, flat float64 integer-valued k >= 0.

    k < 32: an exact table (three floats). Else (k + 1/2) log k - k + log(2 pi)/2 +
    corr(k), with log k an 8-float expansion multiplied exactly by k + 1/2 (exact for
    k < 2^52) and corr(k) by :func:`_corr_dd` (k >= 32).
    """
    dev = k.device
    tab = _TABLE_CACHE.get(dev)
    if tab is None:
        tab = torch.tensor(_LOG_FACT, dtype=torch.float64, device=dev)
        _TABLE_CACHE[dev] = tab
    small = k < LGAMMA_PRODUCT_K
    zero = torch.zeros_like(k)
    ks = torch.where(small, k, zero).long()
    rows = tab[ks]
    kb = torch.where(small, torch.full_like(k, float(LGAMMA_PRODUCT_K)), k)
    corr = _corr_dd((kb, zero))
    big_terms = [
        *scale_terms(kb + 0.5, log_expansion(kb)),
        -kb,
        *(torch.full_like(k, c) for c in HALF_LOG_2PI_DD),
        corr[0],
        corr[1],
    ]
    out = [torch.where(small, zero, t) for t in big_terms]
    out += [torch.where(small, rows[..., i], zero) for i in range(3)]
    return out
