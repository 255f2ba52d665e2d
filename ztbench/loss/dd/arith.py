"""Vectorised double-double (and short expansion) float64 arithmetic.

The float64 kernels of :mod:`ztbench.loss.kernels` form sums whose terms cancel where a loss
or a gradient crosses zero. :mod:`ztbench.loss.dd.ztp` and :mod:`ztbench.loss.dd.ztnb`
recompute those sums from terms known to far more than 53 bits and round once; this module
holds the arithmetic they share.

Caveats: not differentiable (the results only replace values); the error-free transforms
need every product and sum rounded separately, i.e. eager execution: a compiler that
contracts a*b + c into an FMA (torch.compile / inductor with fp-contract) breaks
:func:`two_prod` and :func:`two_sum`. Inputs are not validated.

Building blocks (no FMA assumed, no Python loop over elements; every function works
elementwise on float64 tensors of any shape):

- :func:`two_sum` (Knuth), :func:`fast_two_sum` (Dekker, needs |a| >= |b|),
  :func:`two_prod` (Dekker with Veltkamp splitting; exact for |a|, |b| < 2^996 and no
  underflow of the partial products): error-free transformations a op b = s + e exactly.
- ``dd_*``: double-double (hi, lo) add / mul / div (QD-library style, relative error
  about 2^-104).
- :func:`sum_expansion`: Ogita-Rump-Oishi SumK with K = 3 (two error-free VecSum passes and
  a final float sum) of a list of floats: the result is the exact sum rounded with error
  at most ~eps |sum| + (2 n eps)^3 sum |terms|, i.e. (almost) correctly rounded unless the
  terms cancel by more than ~2^90.
- :func:`dd_log`: log of a float64 to about 2^-110 relative (see its docstring);
  :func:`dd_log1p` of a double-double.
- :func:`dd_exp_neg`: e^-x for 1 <= x <= 40 as a double-double (about 2^-104 relative);
  :func:`one_minus_exp` (1 - e^-w), :func:`dd_expm1_neg_plus` (e^-w - 1 + w) of a
  double-double w, without forming a cancelling difference.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import torch
from torch import Tensor

__all__ = [
    "DD",
    "EXP_DD_MAX",
    "const_dd",
    "dd_add",
    "dd_div",
    "dd_div_f",
    "dd_exp_neg",
    "dd_expm1_neg_plus",
    "dd_log",
    "dd_log1p",
    "dd_log_ratio",
    "dd_mul",
    "dd_one_minus_exp_neg",
    "dec_parts",
    "fast_two_sum",
    "log_expansion",
    "one_minus",
    "one_minus_exp",
    "sum_expansion",
    "two_prod",
    "two_sum",
]

DD = tuple[Tensor, Tensor]
_SPLITTER = 134217729.0  # 2^27 + 1 (Veltkamp)


# ---------------------------------------------------------------- error-free transforms
def two_sum(a: Tensor, b: Tensor) -> DD:
    """(s, e) with s = fl(a + b) and a + b = s + e exactly (Knuth, any magnitudes)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def fast_two_sum(a: Tensor, b: Tensor) -> DD:
    """(s, e) with s = fl(a + b), a + b = s + e exactly; requires |a| >= |b| (or a = 0)."""
    s = a + b
    e = b - (s - a)
    return s, e


def _split(a: Tensor) -> DD:
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a: Tensor, b: Tensor) -> DD:
    """(p, e) with p = fl(a b) and a b = p + e exactly (Dekker; no FMA needed)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


# ------------------------------------------------------------------- double-double ops
def dd_add(a: DD, b: DD) -> DD:
    """Accurate double-double sum (both operands (hi, lo))."""
    s, e = two_sum(a[0], b[0])
    t, f = two_sum(a[1], b[1])
    e = e + t
    s, e = fast_two_sum(s, e)
    e = e + f
    return fast_two_sum(s, e)


def dd_mul(a: DD, b: DD) -> DD:
    """Double-double product (relative error ~2^-104)."""
    p, e = two_prod(a[0], b[0])
    e = e + (a[0] * b[1] + a[1] * b[0])
    return fast_two_sum(p, e)


def dd_div(a: DD, b: DD) -> DD:
    """Double-double quotient a / b (three quotient digits, relative error ~2^-104)."""
    q1 = a[0] / b[0]
    r = dd_add(a, _neg(dd_mul((q1, torch.zeros_like(q1)), b)))
    q2 = r[0] / b[0]
    r = dd_add(r, _neg(dd_mul((q2, torch.zeros_like(q2)), b)))
    q3 = r[0] / b[0]
    q1, q2 = fast_two_sum(q1, q2)
    return dd_add((q1, q2), (q3, torch.zeros_like(q3)))


def dd_div_f(a: DD, b: Tensor) -> DD:
    """Double-double / float64 quotient (two quotient digits, relative error ~2^-104)."""
    q1 = a[0] / b
    p, e = two_prod(q1, b)
    r = ((a[0] - p) - e) + a[1]  # a[0] - p is exact (Sterbenz) when q1 is faithful
    q2 = r / b
    return fast_two_sum(q1, q2)


def _neg(a: DD) -> DD:
    return -a[0], -a[1]


def sum_expansion(terms: list[Tensor]) -> Tensor:
    """Sum of float64 tensors, rounded about once (Ogita-Rump-Oishi SumK, K = 3).

    Two VecSum passes (chains of :func:`two_sum`, which leave the exact sum unchanged and
    move it into the last term) followed by a plain float sum. Error bound
    ~eps |s| + gamma_{2n}^3 sum |p_i| (gamma_m = m eps / (1 - m eps)): for ~30 terms the
    second part is below 2^-140 of the largest term.
    """
    p = list(terms)
    n = len(p)
    for _ in range(2):
        for i in range(1, n):
            p[i], p[i - 1] = two_sum(p[i], p[i - 1])
    err = p[0]
    for i in range(1, n - 1):
        err = err + p[i]
    return p[n - 1] + err


# ------------------------------------------------------------------- constants (decimal)
def dec_parts(x: Decimal, n: int, bits: int = 53) -> tuple[float, ...]:
    """x as n floats x = p_0 + p_1 + ... (each with at most `bits` significant bits)."""
    out = []
    for _ in range(n):
        f = float(x)
        if bits < 53 and f != 0.0:
            m, e = math.frexp(f)
            f = math.ldexp(round(m * 2**bits), e - bits)
        out.append(f)
        x -= Decimal(f)
    return tuple(out)


with localcontext() as _ctx:
    _ctx.prec = 80
    _LN2_DEC = Decimal(2).ln()
    # ln 2 in 42-bit parts: e * part is exact for |e| < 2^11 (every float64 exponent)
    _LN2_PARTS = dec_parts(_LN2_DEC, 3, bits=42)
    # log(1 + i/256), i = 0..256, as triples (absolute error < 2^-159)
    _LOG_TAB = [dec_parts((1 + Decimal(i) / 256).ln(), 3) for i in range(257)]
    # exp reduction: x = n ln2/256 + r; ln2/256 in 38-bit parts (n < 2^15 exact products)
    _LN2_256_PARTS = dec_parts(_LN2_DEC / 256, 3, bits=38)
    # 2^(j/256), j = 0..255, as pairs
    _EXP2_TAB = [dec_parts(Decimal(2) ** (Decimal(j) / 256), 2) for j in range(256)]
    _INV_FACT_DD = [dec_parts(1 / Decimal(math.factorial(n)), 2) for n in range(6)]
    _TWO_THIRDS = dec_parts(Decimal(2) / 3, 2)
    _TWO_FIFTHS = dec_parts(Decimal(2) / 5, 2)

_TABLE_CACHE: dict[tuple[str, torch.device], Tensor] = {}


def _table(name: str, device: torch.device) -> Tensor:
    key = (name, device)
    t = _TABLE_CACHE.get(key)
    if t is None:
        data = {"log": _LOG_TAB, "exp2": _EXP2_TAB}[name]
        t = torch.tensor(data, dtype=torch.float64, device=device)
        _TABLE_CACHE[key] = t
    return t


def const_dd(pair: tuple[float, ...], like: Tensor) -> DD:
    return torch.full_like(like, pair[0]), torch.full_like(like, pair[1])


# ---------------------------------------------------------------------------- log
def log_expansion(x: Tensor) -> list[Tensor]:
    """log(x) for finite x > 0 as an unevaluated sum of 8 floats (error ~2^-112 |log x|).

    Reduction: x = 2^e m, m in [1, 2) (frexp, exact); c = 1 + i/256 the nearest table point
    (|m - c| <= 2^-9, m - c exact by Sterbenz), u = (m - c)/c (|u| < 2^-9). Then

        log x = e ln2 + log(c) + log1p(u),   log1p(u) = 2 atanh(s),
        s = u / (2 + u) = (m - c) / (m + c),

    m + c exact as a double-double and s the double-double quotient (|s| < 2^-10, so its
    ~2^-105 relative error is < 2^-114 absolute),
    with ln2 in three 42-bit parts (e * part exact), log(c) a triple from an 80-digit
    decimal table, and 2 atanh(s) = 2s + s P(s^2), P(w) = 2w/3 + 2w^2/5 + 2w^3/7 + 2w^4/9
    (|s| < 2^-10: the omitted 2 s^11/11 < 2^-112; the two leading terms of P in
    double-double, the rest in float64, each term's rounding error below 2^-115).
    This is why a table and not Newton on exp: Newton would need e^-hi to the same
    2^-110, which is as hard as the log itself; the table makes every rounding error small
    in absolute terms because u is small.
    """
    m, e = torch.frexp(x)  # x = m 2^e, m in [0.5, 1)
    m = m * 2.0
    ef = (e - 1).to(torch.float64)
    i = torch.round((m - 1.0) * 256.0)
    c = 1.0 + i / 256.0
    d = m - c  # exact
    zero = torch.zeros_like(d)
    s = dd_div((d, zero), two_sum(m, c))  # s = u/(2 + u) = (m - c)/(m + c), m + c exact
    w = dd_mul(s, s)
    wh = w[0]
    tail = wh * (2.0 / 7.0 + wh * (2.0 / 9.0))  # 2w/7 + 2w^2/9
    b = dd_add(const_dd(_TWO_FIFTHS, d), (tail, zero))  # 2/5 + 2w/7 + 2w^2/9
    a = dd_add(const_dd(_TWO_THIRDS, d), dd_mul(w, b))
    p = dd_mul(w, a)  # P(w)
    at = dd_add((2.0 * s[0], 2.0 * s[1]), dd_mul(s, p))  # 2 atanh(s) = log1p(u)
    # i is in [0, 256] for finite x > 0; clamped so that a NaN or inf (an overflowed
    # operand upstream) gives NaN, not an out-of-range index
    tab = _table("log", x.device)[i.long().clamp_(0, 256)]
    l1, l2, l3 = _LN2_PARTS
    return [ef * l1, ef * l2, ef * l3, tab[..., 0], tab[..., 1], tab[..., 2], at[0], at[1]]


def _renorm2(terms: list[Tensor]) -> DD:
    """The sum of an expansion as a double-double (hi = the rounded sum)."""
    hi = sum_expansion(terms)
    lo = sum_expansion([*terms, -hi])
    return hi, lo


def dd_log(x: Tensor) -> DD:
    """log(x) for float64 x > 0 as a double-double (hi, lo), relative error ~2^-106.

    Computed by table reduction (see :func:`log_expansion`, which keeps ~2^-112 as an
    8-term expansion) and renormalised; hi is log(x) correctly rounded except in rare
    near-halfway cases.
    """
    return _renorm2(log_expansion(x))


def dd_log_ratio(a: Tensor, b: Tensor) -> DD:
    """log(a) - log(b) for float64 a, b > 0 as a double-double (relative error ~2^-104
    where the two logs do not cancel), from their :func:`log_expansion`: log(a/b) where
    the quotient a/b overflows float64."""
    return _renorm2([*log_expansion(a), *(-t for t in log_expansion(b))])


# ---------------------------------------------------------------------------- exp
def dd_exp_neg(x: Tensor) -> DD:
    """e^-x for 1 <= x <= 40 as a double-double (relative error ~2^-104).

    -x = n ln2/256 + r, n = round(-x 256/ln2) (|n| < 2^14), |r| <= ln2/512 < 2^-9.5, with
    ln2/256 in three 38-bit parts (n * part exact; the first subtraction exact by
    Sterbenz); n = 256 q + j, so e^-x = 2^q 2^(j/256) e^r with 2^(j/256) from a
    double-double table and e^r = 1 + r (1 + r (1/2 + r (1/6 + r (1/24 + r Z)))) in
    double-double, Z = 1/120 + r/720 + ... (to r^5/10!, float64 beyond 1/120).
    """
    zero = torch.zeros_like(x)
    n = torch.round(-x * (256.0 / math.log(2.0)))
    r0 = -x - n * _LN2_256_PARTS[0]
    r = two_sum(r0, -n * _LN2_256_PARTS[1])
    r = fast_two_sum(r[0], r[1] - n * _LN2_256_PARTS[2])
    rh = r[0]
    wt = 1.0 / 720.0 + rh * (
        1.0 / 5040.0 + rh * (1.0 / 40320.0 + rh * (1.0 / 362880.0 + rh * (1.0 / 3628800.0)))
    )
    p = dd_add(const_dd(_INV_FACT_DD[5], x), (rh * wt, zero))
    for deg in (4, 3, 2, 1, 0):
        p = dd_add(const_dd(_INV_FACT_DD[deg], x), dd_mul(r, p))
    q = torch.floor(n / 256.0)
    j = (n - 256.0 * q).long()
    tab = _table("exp2", x.device)[j]
    y = dd_mul((tab[..., 0], tab[..., 1]), p)
    sc = torch.ldexp(torch.ones_like(x), q.to(torch.int32))
    return y[0] * sc, y[1] * sc



# ---------------------------------------------------------------- 1 - e^-w, expm1
EXP_DD_MAX = 40.0  # above: e^-w < 2^-57, so float64 exp is accurate enough next to 1
_EXPM1_HALVINGS = 6  # expm1 argument reduction: a = w / 2^6 <= 2^-6
with localcontext() as _ctx:
    _ctx.prec = 60
    # 1/n!, n = 0..7, as double-double pairs (the head of the expm1 series)
    _INV_FACT = [dec_parts(1 / Decimal(math.factorial(n)), 2) for n in range(8)]


def one_minus(y: DD) -> list[Tensor]:
    """1 - y (y a double-double in [0, 1)) as three floats, exactly."""
    s, s_lo = two_sum(torch.ones_like(y[0]), -y[0])
    u, u_lo = two_sum(s_lo, -y[1])
    return [s, u, u_lo]


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
    p = dd_add(const_dd(_INV_FACT[7], zh), (zh * tail, torch.zeros_like(zh)))
    for n in (6, 5, 4, 3, 2, 1):
        p = dd_add(const_dd(_INV_FACT[n], zh), dd_mul(z, p))
    e = dd_mul(z, p)  # expm1(-a)
    two = (torch.full_like(zh, 2.0), torch.zeros_like(zh))
    for _ in range(_EXPM1_HALVINGS):
        e = dd_mul(e, dd_add(e, two))
    return -e[0], -e[1]


def dd_expm1_neg_plus(w: DD) -> DD:
    """g(w) = e^-w - 1 + w for a double-double 0 < w <= 1, double-double, ~2^-101 relative.

    G(z) = expm1(z) - z at z = -w/2^6 from its Taylor series z^2 sum_{n>=2} z^(n-2)/n!
    (to z^13/13!; terms to 1/7! in double-double), then six doublings
    G(2z) = G(z)^2 + 2 G(z) (1 + z) + z^2, a sum of positive terms (G > 0, 1 + z > 0):
    no cancellation, so g keeps its relative accuracy (g ~ w^2/2 for small w, where
    w - (1 - e^-w) would cancel).
    """
    sc = 2.0**-_EXPM1_HALVINGS
    z = (-w[0] * sc, -w[1] * sc)
    zh = z[0]
    zero = torch.zeros_like(zh)
    tail = 1.0 / 40320.0 + zh * (
        1.0 / 362880.0
        + zh
        * (
            1.0 / 3628800.0
            + zh * (1.0 / 39916800.0 + zh * (1.0 / 479001600.0 + zh * (1.0 / 6227020800.0)))
        )
    )
    p = dd_add(const_dd(_INV_FACT[7], zh), (zh * tail, zero))
    for n in (6, 5, 4, 3, 2):
        p = dd_add(const_dd(_INV_FACT[n], zh), dd_mul(z, p))
    g = dd_mul(dd_mul(z, z), p)
    one = (torch.ones_like(zh), zero)
    for _ in range(_EXPM1_HALVINGS):
        t = dd_mul(g, dd_add(one, z))
        g = dd_add(dd_add(dd_mul(g, g), (2.0 * t[0], 2.0 * t[1])), dd_mul(z, z))
        z = (2.0 * z[0], 2.0 * z[1])
    return g


def _one_minus_exp_mid(w: DD) -> DD:
    """1 - e^-w for 1 <= w_hi <= 40: e^-w = e^-w_hi (1 - w_lo + w_lo^2/2), then 1 - y exact."""
    y = dd_exp_neg(w[0])
    lo = w[1]
    c = two_sum(torch.ones_like(lo), -lo)
    c = fast_two_sum(c[0], c[1] + 0.5 * lo * lo)
    y = dd_mul(y, c)
    z0, z1, z2 = one_minus(y)
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


def one_minus_exp(w: DD) -> DD:
    """1 - e^-w for a flat double-double w > 0, each branch on its own elements only."""
    wh = w[0]
    om_h = torch.ones_like(wh)
    om_l = torch.zeros_like(wh)
    parts = (
        _on(wh <= 1.0, dd_one_minus_exp_neg, w)
        + _on((wh > 1.0) & (wh <= EXP_DD_MAX), _one_minus_exp_mid, w)
        + _on(wh > EXP_DD_MAX, _one_minus_exp_big, w)
    )
    for idx, (h, lo) in parts:
        om_h.index_copy_(0, idx, h)
        om_l.index_copy_(0, idx, lo)
    return om_h, om_l
