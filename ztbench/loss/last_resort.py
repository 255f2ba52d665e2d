"""The last resort of the float64 refinement: the ZTNB loss, full value, d/dmu and d/dtheta
in decimal arithmetic, at a precision raised until an error bound certifies the float64
result (Ziv's strategy).

The double-double refinement (:mod:`ztbench.loss.dd.ztnb`) sums terms exact to ~2^-104 of
the largest: a result that cancels 2^50-fold keeps a few ulp, but at the float64 nearest a
zero crossing the result is small by chance, and 2^64 .. 2^74-fold cancellations occur
(k = 5, mu = 929.09, theta = 3.5e-8: the loss is 2.6e-19, its terms ~17). The refinement
hands those elements (:func:`needs_last_resort`) to the functions here, which evaluate the
same formulas in Python's :mod:`decimal` (standard library, correctly rounded +, -, *, /,
ln, exp at any precision):

    value   = lgamma(theta) - lgamma(k + theta) + k log1p(theta/mu) + log(expm1(w))
    full    = value + lgamma(k + 1)
    d_mu    = (T - k) / (mu (1 + x)),   T = mu / (1 - e^-w)
    d_theta = psi(theta) - psi(k + theta) + k/(theta + mu) + s / (1 - e^-w)

with x = mu/theta, w = theta log1p(x), s = log1p(x) - x/(1 + x).

Each evaluation returns the result r and M, the sum of the magnitudes of every term and
every intermediate sum it formed (the Stirling sums and shift products inside lgamma and
psi included). Each of the few hundred operations is rounded to ``prec`` digits, an error
of at most 10^(1 - prec)/2 of a quantity bounded by M, so |error| <= 10^(6 - prec) M with
room to spare (the Stirling and de Moivre series are cut where a term is below
10^(-prec - 3) of M). The result is accepted when that bound is below 2^-62 |r|, 1/512 ulp
of float64 (the rounding to float64 then adds at most half an ulp), or below 2^-1076, a
quarter of the smallest subnormal (an exact zero of the formula, e.g. d/dmu at theta = 1,
mu = k - 1, comes out as 0 or the smallest subnormal). Otherwise the precision doubles,
up to :data:`MAX_DIGITS`, where M < 10^50 reaches the second bound. Those are the
bounds of :data:`FLOAT64`; results of float32 precision or less need far less
(:data:`NARROW`: 2^-40 relative or 2^-160), and their exact zeros stop at 80 digits.

Cost: a Python loop over the elements, ~0.2-2 ms each (tens of milliseconds for an exact
zero in float64); it runs on the elements whose double-double result is not certified,
a handful in a million outside adversarial tests.
Inputs: k >= 1 integer, mu > 0, theta > 0 finite (as the refinement's).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, getcontext, localcontext
from fractions import Fraction
from functools import cache

import torch
from torch import Tensor

__all__ = [
    "FLOAT64",
    "MAX_DIGITS",
    "NARROW",
    "Goal",
    "needs_last_resort",
    "ztnb_dmu_exact",
    "ztnb_dtheta_exact",
    "ztnb_full_value_exact",
    "ztnb_value_exact",
]

START_DIGITS = 40
MAX_DIGITS = 640
Result = tuple[Decimal, Decimal]  # (value, magnitude bound of everything formed)


@dataclass(frozen=True)
class Goal:
    """What the last resort certifies, for results of one precision.

    ``factor``: the condition number of a double-double sum above which its result goes to
    the last resort; ``accept``: the error bound accepted, relative to |r|; ``negligible``:
    an absolute error bound that certifies any result, however small (the exact zeros of
    a formula end the precision loop there)."""

    factor: float
    accept: Decimal
    negligible: Decimal


# Float64 results. The double-double sums are within ~2^-104 of their largest term, which
# the kernel's term magnitudes (the refinement's flags) estimate to within a few powers of
# two: a condition number above 2^36 leaves less than 2^-60 relative margin. 2^-62 is
# 1/512 ulp; 2^-1076 a quarter of the smallest subnormal.
FLOAT64 = Goal(2.0**36, Decimal(2) ** -62, Decimal(2) ** -1076)
# Results of float32 precision or less (float32, bfloat16, float16, and float64 values
# reduced before one rounding to those): 2^-40 relative is 2^-16 ulp of float32; a
# double-double sum keeps it up to a condition number of 2^58; 2^-160 is below every
# subnormal of those formats. Exact zeros (k = 3, mu = theta = 4 for the value) end at
# 80 digits instead of float64's 640.
NARROW = Goal(2.0**58, Decimal(2) ** -40, Decimal(2) ** -160)


def needs_last_resort(condition: Tensor, goal: Goal = FLOAT64) -> Tensor:
    """Where a refined result is not certified: the condition number of its sum (the
    magnitude of its terms over |result|) exceeds ``goal.factor``, or is NaN (0/0)."""
    return ~(condition <= goal.factor)


# ------------------------------------------------------------------------- constants
@cache
def _bernoulli_2n(n: int) -> tuple[Fraction, ...]:
    """B_2, B_4, ..., B_2n exactly (Akiyama-Tanigawa)."""
    m = 2 * n
    a = [Fraction(0)] * (m + 1)
    out: list[Fraction] = []
    for j in range(m + 1):
        a[j] = Fraction(1, j + 1)
        for i in range(j, 0, -1):
            a[i - 1] = i * (a[i - 1] - a[i])
        if j >= 2 and j % 2 == 0:
            out.append(a[0])
    return tuple(out)


@cache
def _half_log_2pi(digits: int) -> Decimal:
    """log(2 pi)/2 to ``digits`` digits; pi by Machin's formula."""
    with localcontext(_context(digits + 10)):
        def atan_inv(n: int) -> Decimal:
            x = Decimal(1) / n
            x2, term, total, j = x * x, x, x, 1
            while term > Decimal(10) ** -(digits + 12):
                term *= x2
                j += 2
                total += (-term if j % 4 == 3 else term) / j
            return total

        pi = 16 * atan_inv(5) - 4 * atan_inv(239)
        return +((2 * pi).ln() / 2)


def _context(digits: int) -> Context:
    return Context(prec=digits, Emax=MAX_EMAX, Emin=MIN_EMIN)


# --------------------------------------------------------------------------- primitives
# Each takes Decimals in the current context and returns (value, magnitude).
def _eps() -> Decimal:
    return Decimal(10) ** -(_prec() + 3)


def _prec() -> int:
    return getcontext().prec


def _log1p(x: Decimal) -> Decimal:
    """log(1 + x), x > -1: 2 atanh(x/(2 + x)) by its series for |x| < 1/64 (1 + x would
    lose x's low digits), else ln(1 + x) (error 10^-prec absolute, relative <= 64x that)."""
    if abs(x) >= Decimal(1) / 64:
        return (1 + x).ln()
    z = x / (2 + x)
    z2, term, total, j, eps = z * z, z, z, 1, _eps()
    while abs(term) > eps * abs(total):
        term *= z2
        j += 2
        total += term / j
    return 2 * total


def _one_minus_exp_neg(w: Decimal) -> Decimal:
    """1 - e^-w, w > 0: its series for w < 1/64, else 1 - exp(-w)."""
    if w >= Decimal(1) / 64:
        return 1 - (-w).exp()
    term, total, n, eps = w, w, 1, _eps()
    while abs(term) > eps * abs(total):
        n += 1
        term = -term * w / n
        total += term
    return total


def _stirling_shift(x: Decimal) -> tuple[Decimal, int]:
    """z = x + m, the smallest shift with z >= the precision in digits (Stirling's and de
    Moivre's series then converge past 10^-prec within ~prec/2 terms)."""
    n = max(_prec(), 20)
    m = max(0, math.ceil(n - float(x))) if x < n else 0
    return x + m, m


def _bernoulli_series(z: Decimal, first: int, weight: Callable[[int], int],
                      mag: Decimal) -> Decimal:  # fmt: skip
    """sum_{n>=1} B_2n / (weight(n) z^(2n - 2 + first)), cut after the first term below
    10^(-prec - 3) of ``mag``: the tail of Stirling's series (first = 1) and de Moivre's
    (first = 2) at z >= the precision in digits."""
    inv2 = 1 / (z * z)
    power = 1 / z if first == 1 else inv2
    tail, eps = Decimal(0), _eps()
    for n, b in enumerate(_bernoulli_2n(_prec() // 2 + 5), start=1):
        term = Decimal(b.numerator) / b.denominator / weight(n) * power
        tail += term
        if abs(term) <= eps * mag:
            break
        power *= inv2
    return tail


def _lgamma(x: Decimal) -> Result:
    """lgamma(x), x > 0: Stirling's series at z = x + m, minus log prod_{i<m} (x + i)."""
    z, m = _stirling_shift(x)
    prod = Decimal(1)
    for i in range(m):
        prod *= x + i
    log_prod = prod.ln() if m else Decimal(0)
    main = (z - Decimal("0.5")) * z.ln() - z + _half_log_2pi(_prec())
    mag = abs(main) + abs(log_prod) + z
    tail = _bernoulli_series(z, 1, lambda n: 2 * n * (2 * n - 1), mag)
    return main + tail - log_prod, mag


def _digamma(x: Decimal) -> Result:
    """psi(x), x > 0: de Moivre's series at z = x + m, minus sum_{i<m} 1/(x + i)."""
    z, m = _stirling_shift(x)
    shift = sum((1 / (x + i) for i in range(m)), Decimal(0))
    main = z.ln() - 1 / (2 * z)
    mag = abs(main) + shift
    tail = _bernoulli_series(z, 2, lambda n: 2 * n, mag)
    return main - tail - shift, mag


def _log_expm1(w: Decimal) -> Decimal:
    """log(e^w - 1), w > 0, as w + log(1 - e^-w) (no overflow)."""
    return w + _one_minus_exp_neg(w).ln()


# ---------------------------------------------------------------------------- formulas
def _common(mu: Decimal, theta: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    x = mu / theta
    lx = _log1p(x)
    return x, lx, theta * lx


def _value(k: Decimal, mu: Decimal, theta: Decimal, full: bool) -> Result:
    _, _, w = _common(mu, theta)
    g_th, m_th = _lgamma(theta)
    g_kth, m_kth = _lgamma(k + theta)
    t3 = k * _log1p(theta / mu)
    t4 = _log_expm1(w)
    r = g_th - g_kth + t3 + t4
    mag = m_th + m_kth + abs(t3) + abs(t4) + abs(w)
    if full:
        g_k, m_k = _lgamma(k + 1)
        r += g_k
        mag += m_k
    return r, mag


def _dmu(k: Decimal, mu: Decimal, theta: Decimal) -> Result:
    x, _, w = _common(mu, theta)
    t = mu / _one_minus_exp_neg(w)
    den = mu * (1 + x)
    return (t - k) / den, (t + k) / den


def _dtheta(k: Decimal, mu: Decimal, theta: Decimal) -> Result:
    x, lx, w = _common(mu, theta)
    y = x / (1 + x)
    if y <= Decimal("0.5"):  # s = -log(1 - y) - y = sum_{n>=2} y^n / n
        power, s, n, eps = y * y, Decimal(0), 2, _eps()
        while True:
            term = power / n
            s += term
            if term <= eps * s:
                break
            power *= y
            n += 1
    else:
        s = lx - y
    p_th, m_th = _digamma(theta)
    p_kth, m_kth = _digamma(k + theta)
    t3 = k / (theta + mu)
    t4 = s / _one_minus_exp_neg(w)
    return p_th - p_kth + t3 + t4, m_th + m_kth + t3 + t4 + lx


def _certified(formula: Callable[..., Result], goal: Goal, *args: float) -> float:
    """formula at ``args`` (exact Decimals of the floats), rounded to float64 once its
    error bound 10^(6 - prec) M is below ``goal.accept`` |r| (or ``goal.negligible``):
    Ziv's loop over the precision."""
    digits = START_DIGITS
    while True:
        with localcontext(_context(digits)):
            r, mag = formula(*(Decimal(a) for a in args))
            bound = Decimal(10) ** (6 - digits) * mag
            if (bound <= goal.accept * abs(r) or bound <= goal.negligible
                    or digits >= MAX_DIGITS):  # fmt: skip
                return float(r)
        digits *= 2


def _elementwise(formula: Callable[..., Result], goal: Goal, *args: Tensor) -> Tensor:
    """formula on each element (flat float64 tensors of one shape) as a float64 tensor."""
    cols = [a.to(torch.float64).reshape(-1).tolist() for a in args]
    out = [_certified(formula, goal, *row) for row in zip(*cols, strict=True)]
    return torch.tensor(out, dtype=torch.float64, device=args[0].device).reshape(args[0].shape)


def ztnb_value_exact(k: Tensor, mu: Tensor, theta: Tensor, goal: Goal = FLOAT64) -> Tensor:
    """The ZTNB loss (no lgamma(k + 1)), float64, certified to within half an ulp plus
    ``goal.accept`` relative (2^-62 for float64 results); one Python evaluation per
    element (see the module docstring)."""
    return _elementwise(lambda a, b, c: _value(a, b, c, False), goal, k, mu, theta)


def ztnb_full_value_exact(k: Tensor, mu: Tensor, theta: Tensor,
                          goal: Goal = FLOAT64) -> Tensor:  # fmt: skip
    """-log P(X = k) of the ZTNB law, float64, certified as :func:`ztnb_value_exact`."""
    return _elementwise(lambda a, b, c: _value(a, b, c, True), goal, k, mu, theta)


def ztnb_dmu_exact(k: Tensor, mu: Tensor, theta: Tensor, goal: Goal = FLOAT64) -> Tensor:
    """d/dmu of the ZTNB loss, float64, certified as :func:`ztnb_value_exact`."""
    return _elementwise(_dmu, goal, k, mu, theta)


def ztnb_dtheta_exact(k: Tensor, mu: Tensor, theta: Tensor, goal: Goal = FLOAT64) -> Tensor:
    """d/dtheta of the ZTNB loss, float64, certified as :func:`ztnb_value_exact`."""
    return _elementwise(_dtheta, goal, k, mu, theta)
