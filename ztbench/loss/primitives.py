"""Stable building blocks, each implemented once and shared by the candidates.

Every function here computes in its input's dtype and on its input's device, and is safe
under autograd over its whole documented domain: where two branches are combined with
``torch.where``, each branch is fed *safe* inputs where it is not taken (see
:func:`split`), because ``torch.where`` back-propagates a NaN or inf from the branch not
taken (a zero upstream gradient times an infinite local derivative is NaN).

The primitives of the shipped loss's kernels take a dispatcher ``D``
(:mod:`ztbench.loss.dispatch`): ``WHERE`` (the default: every branch everywhere, the form
above) or ``INDEX`` (each branch on its own elements, the eager path). Each branch formula
is written once, as a local function, and the dispatcher joins them.

Contents:

- :func:`split`: the safe-input idiom for ``torch.where``.
- :func:`log1mexp`: log(1 - e^-a), Maechler's two-branch rule.
- :func:`log_expm1`: log(e^w - 1), the truncation term of both families.
- :func:`log_expm1_over_x`: log(expm1(x) / x), the ZTP truncation term minus log(x).
- :func:`softplus`: log(1 + e^x), exact in both tails (torch's has a threshold).
- :func:`log1p_over_x`: log(1 + x) / x, 1 at x = 0.
- :func:`nb_log_p0`: w = theta log1p(mu/theta) = -log P(X = 0) of the negative binomial.
- :func:`log1p_ratio`: log1p(mu/theta), also where the quotient overflows.
- :func:`log1pmx`: log(1 + x) - x without cancellation for small x.
- :func:`stirling_correction`: lgamma(z) minus Stirling's approximation, z >= 10.
- :func:`lgamma_difference`: lgamma(k + theta) - lgamma(theta) without cancellation for
  large theta.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ztbench.loss.dispatch import WHERE, Dispatcher

LOG2 = math.log(2.0)
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def split(cond: Tensor, x: Tensor, safe_true: float, safe_false: float) -> tuple[Tensor, Tensor]:
    """Inputs for the two branches of ``torch.where(cond, f(x_t), g(x_f))``.

    ``x_t`` equals ``x`` where ``cond`` holds and ``safe_true`` elsewhere; ``x_f`` equals
    ``x`` where ``cond`` fails and ``safe_false`` elsewhere. Each branch then only ever
    sees inputs from its own domain (or a harmless constant), so neither its value nor
    its local derivative is inf/NaN where it is not taken, and the gradient of the
    ``where`` is exactly the taken branch's.
    """
    x_t = torch.where(cond, x, torch.full_like(x, safe_true))
    x_f = torch.where(cond, torch.full_like(x, safe_false), x)
    return x_t, x_f


def log1mexp(a: Tensor) -> Tensor:
    """log(1 - e^-a) for a >= 0 (-inf at a = 0).

    Maechler (2012, "Accurately computing log(1 - exp(-|a|))"):
    ``log(-expm1(-a))`` for a <= log 2, ``log1p(-exp(-a))`` above; each branch is
    accurate where it is used, and fed safe inputs elsewhere (see :func:`split`).
    """
    small = a <= LOG2
    a_s, a_l = split(small, a, LOG2, 1.0)
    return torch.where(small, torch.log(-torch.expm1(-a_s)), torch.log1p(-torch.exp(-a_l)))


def log_expm1(w: Tensor) -> Tensor:
    """log(e^w - 1) for w >= 0 (the inverse of softplus).

    ``log(expm1(w))`` for w <= 1 (expm1 is accurate to a few ulp and does not overflow;
    for tiny w this is log(w) + w/2 to working precision with no series needed), and
    ``w + log1p(-exp(-w))`` above, which never overflows (the log1p term is at most
    0.46 in magnitude there, so the sum loses at most a bit to cancellation). Derivative
    1 / (1 - e^-w) is finite for every w > 0.
    """
    small = w <= 1.0
    w_s, w_l = split(small, w, 1.0, 2.0)
    return torch.where(small, torch.log(torch.expm1(w_s)), w_l + torch.log1p(-torch.exp(-w_l)))


# (e^x - 1 - x) / x = sum_{n >= 1} x^n / (n + 1)!; 18 terms reach 1/19! ~ 8e-18 at x = 1.
H_COEFFS = tuple(1.0 / math.factorial(n + 1) for n in range(1, 19))


def log_expm1_over_x(x: Tensor, D: Dispatcher = WHERE) -> Tensor:
    """log(expm1(x) / x) for x >= 0; about x/2 for small x, x - log(x) for large x.

    The ZTP loss is ``-(k - 1) log(lam) + log_expm1_over_x(lam)``: writing it this way
    removes the cancellation between -k log(lam) and log(expm1(lam)) ~ log(lam) at small
    lam (for k = 1 the loss is ~lam/2, and the naive gradient -1/lam + 1/(1 - e^-lam)
    cancels two terms of size 1/lam). For x < 1: ``log1p(h)`` with
    h = expm1(x)/x - 1 = sum_{n>=1} x^n/(n+1)! summed as a polynomial (no cancellation);
    for x >= 1: ``log_expm1(x) - log(x)`` (the result is at least half the larger term,
    so no cancellation).
    """
    return D.branch(x < 1.0, _h_small_fn(D), _h_large, (x,), (0.5,), (2.0,))


def _h_small_fn(D: Dispatcher):  # type: ignore[no-untyped-def]
    def h_small(x: Tensor) -> Tensor:
        """log1p(sum_{n>=1} x^n/(n+1)!) (x < 1), the polynomial by Horner's rule."""
        rc = H_COEFFS[::-1]
        h = x * rc[0]
        for c in rc[1:]:
            h = h.add_(c).mul_(x) if D.inplace else (h + c) * x
        return torch.log1p(h)

    return h_small


def _h_large(x: Tensor) -> Tensor:
    """log(expm1(x)/x) for x >= 1."""
    return log_expm1(x) - torch.log(x)


def softplus(x: Tensor) -> Tensor:
    """log(1 + e^x), accurate in both tails, derivative sigmoid(x) exactly.

    ``x + log1p(exp(-x))`` for x > 0 and ``log1p(exp(x))`` otherwise (never overflows).
    torch.nn.functional.softplus is not used: it returns x itself above its threshold 20,
    a relative error up to e^-20/20 ~ 1e-10 (visible in float64), and routes the
    gradient at x = 0 differently from a plain formula.
    """
    pos = x > 0
    x_p, x_n = split(pos, x, 1.0, -1.0)
    return torch.where(pos, x_p + torch.log1p(torch.exp(-x_p)), torch.log1p(torch.exp(x_n)))


# log1p(x)/x = sum_{n>=0} (-x)^n / (n + 1); six terms leave x^6/7 < 2e-19 below x = 1e-3.
_LOG1P_OVER_X_COEFFS = tuple((-1.0) ** n / (n + 1) for n in range(6))
LOG1P_OVER_X_SERIES_MAX = 1e-3


def log1p_over_x(x: Tensor) -> Tensor:
    """log(1 + x) / x for x >= 0 (1 at x = 0).

    Series 1 - x/2 + x^2/3 - ... (six terms) for x < 1e-3, where the quotient would be
    0/0 at x = 0 and its autograd derivative 1/(x(1+x)) - log1p(x)/x^2 cancels; the
    quotient itself above.
    """
    small = x < LOG1P_OVER_X_SERIES_MAX
    x_s, x_l = split(small, x, 0.0, 1.0)
    s = torch.zeros_like(x_s)
    for c in reversed(_LOG1P_OVER_X_COEFFS):
        s = s * x_s + c
    return torch.where(small, s, torch.log1p(x_l) / x_l)


def nb_log_p0(mu: Tensor, theta: Tensor, logit: Tensor | None = None) -> Tensor:
    """w = theta log1p(mu / theta) = theta softplus(l) = -log P(X = 0), l = log(mu/theta).

    For l >= 0: ``theta * softplus(l)``. For l < 0: ``mu * log1p_over_x(exp(l))``, which
    equals it but never forms softplus(l) ~ mu/theta, a number that is subnormal (so
    imprecise) in float32 once mu/theta < 1e-38 and whose autograd chain
    theta * (1/w) then overflows; here w is mu times a factor in (log 2, 1] and
    dw/dmu ~ 1. ``logit`` (= l) may be passed when already computed.
    """
    if logit is None:
        logit = torch.log(mu) - torch.log(theta)
    neg = logit < 0
    l_n, l_p = split(neg, logit, -1.0, 0.0)
    w_n = mu * log1p_over_x(torch.exp(l_n))
    w_p = theta * softplus(l_p)
    return torch.where(neg, w_n, w_p)


# log1p(x) - x = -x*u + 2 * sum_{j>=1} u^(2j+1) / (2j+1),  u = x / (2 + x)
# (from log1p(x) = 2 atanh(u) and 2u - x = -x*u). For |x| <= 1/2, |u| <= 1/3, u^2 <= 1/9:
# 17 terms leave (1/9)^17 ~ 1.7e-17 relative.
_ATANH_COEFFS = tuple(1.0 / (2 * j + 1) for j in range(1, 18))


def log1p_ratio(x: Tensor, mu: Tensor, theta: Tensor) -> Tensor:
    """log1p(x) for x = mu/theta (given, float64), also where the quotient overflows to inf:
    there log(mu) - log(theta), which is log1p(x) to its rounding (log1p(x) - log(x) =
    log1p(theta/mu) < 2^-1024, below an ulp of log(x) > 709)."""
    lx = torch.log1p(x)
    huge = torch.isinf(x)
    # eager on the CPU, where a host check is free: nothing to patch (the common case)
    if x.device.type == "cpu" and not torch.compiler.is_compiling() and not bool(huge.any()):
        return lx
    return torch.where(huge, torch.log(mu) - torch.log(theta), lx)


def log1pmx(x: Tensor, D: Dispatcher = WHERE) -> Tensor:
    """log(1 + x) - x for x > -1, without the cancellation of the direct difference.

    For |x| <= 1/2: ``-x*u + 2 u^3 * (1/3 + u^2/5 + u^4/7 + ...)`` with u = x / (2 + x)
    (the atanh series; the first term dominates, both have the same sign for x > 0, so no
    cancellation). Elsewhere ``log1p(x) - x`` directly (the result is at least a fifth of
    |x| there).
    """

    def series(x: Tensor) -> Tensor:
        u = x / (2.0 + x)
        u2 = u * u
        return -x * u + 2.0 * u * u2 * D.horner(u2, _ATANH_COEFFS)

    def direct(x: Tensor) -> Tensor:
        return torch.log1p(x) - x

    return D.branch(x.abs() <= 0.5, series, direct, (x,), (0.25,), (1.0,))


def log1pmx_over_x(x: Tensor, D: Dispatcher = WHERE) -> Tensor:
    """(log(1 + x) - x) / x for x > -1 (0 at x = 0, its limit), without underflow.

    For |x| <= 1/2: :func:`log1pmx`'s series divided by x analytically (x = u (2 + x)):
    ``-u + 2 u^2 (1/3 + u^2/5 + ...) / (2 + x)``, u = x / (2 + x) ~ x/2. Dividing the
    series' value by x instead would fail for |x| below ~1e-154, where its x u ~ x^2/2
    underflows (to 0 past ~1e-162, a relative error of 100% in -x/2).
    Elsewhere ``(log1p(x) - x) / x`` directly.
    """

    def series(x: Tensor) -> Tensor:
        u = x / (2.0 + x)
        u2 = u * u
        return -u + 2.0 * u2 * D.horner(u2, _ATANH_COEFFS) / (2.0 + x)

    def direct(x: Tensor) -> Tensor:
        return (torch.log1p(x) - x) / x

    return D.branch(x.abs() <= 0.5, series, direct, (x,), (0.25,), (1.0,))


def log1pmx_over_x2(x: Tensor, D: Dispatcher = WHERE) -> Tensor:
    """(log(1 + x) - x) / x^2 for x > -1 (-1/2 at x = 0, its limit).

    For |x| <= 1/2: :func:`log1pmx`'s series divided by x^2 analytically (x = u (2 + x)):
    ``-1/(2 + x) + 2 u (1/3 + u^2/5 + ...) / (2 + x)^2``, u = x / (2 + x): two terms of
    opposite sign whose sum is at least half the first, and whose derivatives (1/(2 + x)^2
    and about 1/12) add without cancelling, so autograd differentiates it accurately
    where the quotient (log1p(x) - x)/x^2 would cancel. Elsewhere that quotient.
    """

    def series(x: Tensor) -> Tensor:
        u = x / (2.0 + x)
        return -1.0 / (2.0 + x) + 2.0 * u * D.horner(u * u, _ATANH_COEFFS) / (2.0 + x) ** 2

    def direct(x: Tensor) -> Tensor:
        return (torch.log1p(x) - x) / (x * x)

    return D.branch(x.abs() <= 0.5, series, direct, (x,), (0.25,), (1.0,))


# lgamma(z) - [(z - 1/2) log z - z + log(2 pi)/2] = sum_n B_2n / (2n (2n - 1) z^(2n-1)).
_STIRLING_COEFFS = (
    1.0 / 12.0,
    -1.0 / 360.0,
    1.0 / 1260.0,
    -1.0 / 1680.0,
    1.0 / 1188.0,
    -691.0 / 360360.0,
    1.0 / 156.0,
)
STIRLING_MIN = 10.0


def stirling_correction(z: Tensor, D: Dispatcher = WHERE) -> Tensor:
    """lgamma(z) - ((z - 1/2) log z - z + log(2 pi)/2) for z >= 10 (7 terms of the series).

    Evaluated by Horner in 1/z^2 (no overflow of z^13 in low precision). The first
    omitted term is below 3e-17 at z = 10.
    """
    r = 1.0 / z
    return D.horner(r * r, _STIRLING_COEFFS) * r


def lgamma_difference(k: Tensor, theta: Tensor) -> Tensor:
    """lgamma(k + theta) - lgamma(theta) for k >= 0, theta > 0.

    For theta >= 10 (TOMS 708 ``algdiv`` / TFP ``log_gamma_difference`` idea: subtract
    Stirling expansions analytically instead of two large lgammas), with x = k / theta::

        k log(theta) + (k - 1/2) log1p(x) + theta * log1pmx(x)
            + stirling_correction(k + theta) - stirling_correction(theta)

    which follows from Stirling's formula and k = theta x; theta * log1pmx(x) ~ -k x / 2
    is the part that cancels catastrophically when written as
    (k + theta - 1/2) log(k + theta) - (theta - 1/2) log(theta) - k. Each term is computed
    to relative accuracy and the terms do not cancel for large theta (the first dominates),
    so the result stays accurate up to theta = 1e10 where the direct difference loses
    log10(theta log theta / (k log theta)) digits. For theta < 10 the direct difference
    ``lgamma(k + theta) - lgamma(theta)`` (both lgammas are moderate there unless k is
    large, where the first dominates). Gradients (autograd) approximate
    digamma(k + theta) - digamma(theta) with the same absence of cancellation.
    """
    big = theta >= STIRLING_MIN
    th_b, th_s = split(big, theta, STIRLING_MIN, 1.0)
    k_b = torch.where(big, k, torch.zeros_like(k))
    x = k_b / th_b
    stirling = (
        k_b * torch.log(th_b)
        + (k_b - 0.5) * torch.log1p(x)
        + th_b * log1pmx(x)
        + (stirling_correction(k_b + th_b) - stirling_correction(th_b))
    )
    direct = torch.lgamma(k + th_s) - torch.lgamma(th_s)
    return torch.where(big, stirling, direct)


# ------------------------------------------------------------------------------------
# Primitives of the analytic gradients and of the large-theta excess terms (ztbench.loss.kernels)
# ------------------------------------------------------------------------------------

# Bernoulli numbers B_2 .. B_24 as exact (numerator, denominator) pairs: the float series
# below use B_2 .. B_22 (each rounded once), the double-double digamma series all twelve.
BERNOULLI_2N = (
    (1, 6),
    (-1, 30),
    (1, 42),
    (-1, 30),
    (5, 66),
    (-691, 2730),
    (7, 6),
    (-3617, 510),
    (43867, 798),
    (-174611, 330),
    (854513, 138),
    (-236364091, 2730),
)
_BERNOULLI_2N = tuple(a / b for a, b in BERNOULLI_2N[:11])
# 1/(1 - e^-x) - 1/x = 1/2 + sum_{n>=1} B_2n x^(2n-1) / (2n)!  (radius 2 pi); at x = 1
# the first omitted term is about 2 (1/(2 pi))^24 < 1e-19.
Q_COEFFS = tuple(b / math.factorial(2 * n) for n, b in enumerate(_BERNOULLI_2N, start=1))
# psi(z) ~ log z - 1/(2z) - sum_{n>=1} B_2n / (2n z^2n); at z = 10, 11 terms leave < 1e-19.
_PSI_COEFFS = tuple(b / (2 * n) for n, b in enumerate(_BERNOULLI_2N, start=1))


def inv1mexp_minus_inv(x: Tensor, D: Dispatcher = WHERE) -> Tensor:
    """q(x) = 1/(1 - e^-x) - 1/x for x > 0 (1/2 at x = 0, 1 - 1/x for large x).

    The derivative of log(expm1(x)) is 1/(1 - e^-x) = 1/x + q(x); splitting off 1/x lets
    the gradients cancel the 1/x analytically against -k/mu-like terms. For x < 1 the
    Bernoulli series 1/2 + x/12 - x^3/720 + ... (11 terms, all relative error from
    rounding only; the direct difference would cancel up to 1/(x q) ~ 2/x times); for
    x >= 1 the direct difference, which loses at most 1.6/0.58 < 3x to cancellation.
    """
    return D.branch(x < 1.0, _q_small_fn(D), _q_large, (x,), (0.5,), (2.0,))


def _q_small_fn(D: Dispatcher):  # type: ignore[no-untyped-def]
    def q_small(x: Tensor) -> Tensor:
        """q(x) by its Bernoulli series (x < 1)."""
        return 0.5 + x * D.horner(x * x, Q_COEFFS)

    return q_small


def _q_large(x: Tensor) -> Tensor:
    """q(x) directly (x >= 1)."""
    return 1.0 / (-torch.expm1(-x)) - 1.0 / x


def _psi_tail(z: Tensor, D: Dispatcher = WHERE) -> Tensor:
    """sum_{n>=1} B_2n / (2n z^2n) for z >= 10 (Horner in 1/z^2)."""
    r2 = 1.0 / (z * z)
    return D.horner(r2, _PSI_COEFFS) * r2


LGAMMA_EXCESS_DIRECT_K = 8


def lgamma_terms(j: int, theta: Tensor) -> tuple[Tensor, Tensor]:
    """The j-th terms of the direct sums of :func:`lgamma_excess`: log1p(j/theta), log(j+theta)."""
    return torch.log1p(j / theta), torch.log(j + theta)


def digamma_terms(j: int, theta: Tensor) -> tuple[Tensor, Tensor]:
    """The j-th terms of the direct sums of :func:`digamma_excess`: j/(theta (j+theta)),
    1/(j+theta)."""
    inv = 1.0 / (j + theta)
    return j * inv / theta, inv


def direct_sums(
    k: Tensor,
    theta: Tensor,
    terms: Callable[[int, Tensor], tuple[Tensor, Tensor]],
    D: Dispatcher = WHERE,
) -> tuple[Tensor, Tensor]:
    """(sum_j a_j, sum_j b_j) over 0 < j < min(k, LGAMMA_EXCESS_DIRECT_K), (a_j, b_j) =
    terms(j, theta), accumulated in j order."""
    acc = (torch.zeros_like(theta), torch.zeros_like(theta))
    for j in range(1, LGAMMA_EXCESS_DIRECT_K):
        acc = D.accumulate(k > j, acc, lambda th, j=j: terms(j, th), (theta,), (None,))
    return acc[0], acc[1]


def lgamma_of_sum(a: Tensor, b: Tensor) -> Tensor:
    """lgamma(a + b) at the exact sum of two float64 tensors (a + b > 0): lgamma(s) +
    e psi(s), s = a + b rounded and e = a + b - s its rounding error (Knuth's two-sum,
    exact), to first order (the next term, e^2 psi'(s)/2, is below 2^-100 of it). The
    rounding alone moves lgamma by up to u s psi(s), several ulp of a result that is a
    difference of two lgammas."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return torch.lgamma(s) + e * torch.digamma(s)


def lgamma_excess(k: Tensor, theta: Tensor, D: Dispatcher = WHERE) -> tuple[Tensor, Tensor]:
    """(D, G) with D = lgamma(k+theta) - lgamma(theta) - k log(theta) = sum_{j<k} log1p(j/theta)
    and G = lgamma(k+theta) - lgamma(1+theta) = sum_{0<j<k} log(theta + j); k >= 1 integer.

    Both are exactly 0 at k = 1. For theta >= 10 (and k >= 2), Stirling's formula
    subtracted analytically (TOMS 708 algdiv idea), with x = k/theta::

        D = (k - 1/2) log1p(x) + theta log1pmx(x) + [corr(k + theta) - corr(theta)]

    whose two main terms are ~ k^2/theta and -k^2/(2 theta) (cancellation at most a
    factor 3 at k = 2, none for large k); G = D + (k - 1) log(theta) (both positive).
    For theta < 10: G = lgamma(k + theta) - lgamma(1 + theta) (lgamma(theta) ~ -log theta
    is never formed; each at the exact sum, :func:`lgamma_of_sum`), or for k <= 8 the
    direct sum of log(j + theta) (no cancellation);
    D = G - (k - 1) log(theta), or the direct sum of log1p(j/theta) for k <= 8.
    """
    def stirling(k: Tensor, th: Tensor) -> tuple[Tensor, Tensor]:  # theta >= 10, k >= 2
        x = k / th
        d = (
            (k - 0.5) * torch.log1p(x)
            + th * log1pmx(x, D)
            + (stirling_correction(k + th, D) - stirling_correction(th, D))
        )
        return d, d + (k - 1.0) * torch.log(th)

    def lg(k: Tensor, th: Tensor) -> tuple[Tensor, Tensor]:  # theta < 10, k > 8
        g = lgamma_of_sum(k, th) - lgamma_of_sum(torch.ones_like(th), th)
        return g - (k - 1.0) * torch.log(th), g

    def direct(k: Tensor, th: Tensor) -> tuple[Tensor, Tensor]:  # theta < 10, k <= 8
        return direct_sums(k, th, lgamma_terms, D)

    return _excess_regimes(D, k, theta, stirling, direct, lg)


def lgamma_excess_magnitude(k: Tensor, theta: Tensor, d: Tensor,
                            g: Tensor) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Magnitudes of what :func:`lgamma_excess` sums to form (D, G) = (``d``, ``g``), its
    float64 results at float64 (k, theta): each result carries a few ulp of these, not of
    itself. Stirling's form (theta >= 10): (k - 1/2) log1p(x) + theta min(x^2/2, x), a
    bound on theta |log1pmx(x)| (x = k/theta, up to 3-fold cancellation), for D, plus
    (k - 1) |log theta| for G; theta < 10 and k > 8: |lgamma(k + theta)| +
    |lgamma(1 + theta)| (+ 1, the lgamma's absolute error near its zeros; their
    arguments' rounding is corrected, :func:`lgamma_of_sum`) for G, plus
    (k - 1) |log theta| for D; the direct sums
    (theta < 10, k <= 8) have no cancellation: |D|, |G|."""
    big = theta >= STIRLING_MIN
    th_b = torch.where(big, theta, torch.full_like(theta, STIRLING_MIN))
    x = k / th_b
    # theta |log1pmx(x)| <= theta min(x^2/2, x): a bound, without log1pmx's series
    m_stirling = (k - 0.5).abs() * torch.log1p(x) + th_b * torch.minimum(0.5 * x * x, x)
    th_s = torch.where(big, torch.ones_like(theta), theta)
    m_lgamma = torch.lgamma(k + th_s).abs() + torch.lgamma(1.0 + th_s).abs() + 1.0
    log_th = (k - 1.0) * torch.log(theta).abs()
    special = ~big & (k > LGAMMA_EXCESS_DIRECT_K)
    m_d = torch.where(big, m_stirling, torch.where(special, m_lgamma + log_th, d.abs()))
    m_g = torch.where(big, m_stirling + log_th, torch.where(special, m_lgamma, g.abs()))
    one = k == 1.0  # both exactly 0
    return (torch.where(one, 0.0, torch.maximum(m_d, d.abs())),
            torch.where(one, 0.0, torch.maximum(m_g, g.abs())))  # fmt: skip


def _excess_regimes(D: Dispatcher, k: Tensor, theta: Tensor, big, direct, special):  # type: ignore[no-untyped-def]
    """The regimes of :func:`lgamma_excess` and :func:`digamma_excess`: (0, 0) at k = 1;
    for k >= 2, ``big`` for theta >= 10, ``direct`` for theta < 10 and k <= 8,
    ``special`` for theta < 10 and k > 8 (each a function of (k, theta) to a pair)."""

    def small(k: Tensor, th: Tensor) -> tuple[Tensor, Tensor]:
        none = (None, None)
        return D.branch(k <= LGAMMA_EXCESS_DIRECT_K, direct, special, (k, th), none, none)  # type: ignore[return-value]

    def many(k: Tensor, th: Tensor) -> tuple[Tensor, Tensor]:
        return D.branch(th >= STIRLING_MIN, big, small, (k, th), (None, STIRLING_MIN), (None, 1.0))  # type: ignore[return-value]

    return D.branch(k > 1.0, many, None, (k, theta), (2.0, None), (None, None))  # type: ignore[return-value]


def digamma_excess(k: Tensor, theta: Tensor, D: Dispatcher = WHERE) -> tuple[Tensor, Tensor]:
    """(E, F) with E = k/theta - (psi(k+theta) - psi(theta)) = sum_{j<k} j/(theta(theta+j))
    and F = psi(k+theta) - psi(1+theta) = sum_{0<j<k} 1/(theta+j); k >= 1 integer.

    Both are exactly 0 at k = 1. For theta >= 10, the asymptotic series of psi subtracted
    analytically, with x = k/theta::

        E = -log1pmx(x) - k/(2 theta (theta + k)) + P(theta + k) - P(theta),
        P(z) = sum B_2n/(2n z^2n)

    (the first two terms are ~ k^2/(2 theta^2) and -k/(2 theta^2): cancellation at most a
    factor 2 at k = 2), F = (k - 1)/theta - E. For theta < 10: direct sums for k <= 8,
    else F = digamma(k + theta) - digamma(1 + theta) and E = (k - 1)/theta - F.
    """
    def asym(k: Tensor, th: Tensor) -> tuple[Tensor, Tensor]:  # theta >= 10, k >= 2
        x = k / th
        e = (
            -log1pmx(x, D)
            - k / (2.0 * th * (th + k))
            + (_psi_tail(th + k, D) - _psi_tail(th, D))
        )
        return e, (k - 1.0) / th - e

    def dg(k: Tensor, th: Tensor) -> tuple[Tensor, Tensor]:  # theta < 10, k > 8
        f = torch.digamma(k + th) - torch.digamma(1.0 + th)
        return (k - 1.0) / th - f, f

    def direct(k: Tensor, th: Tensor) -> tuple[Tensor, Tensor]:  # theta < 10, k <= 8
        return direct_sums(k, th, digamma_terms, D)

    return _excess_regimes(D, k, theta, asym, direct, dg)


def digamma_log_difference(k: Tensor, theta: Tensor, D: Dispatcher = WHERE) -> Tensor:
    """psi(theta) - psi(k + theta) + log1p(k/theta) = Phi(theta) - Phi(k + theta), Phi = psi - log.

    The part of the digamma difference left after its logarithmic growth is taken out
    (k >= 0 integer, theta > 0); negative. Phi(z) - Phi(z + 1) = log1pmx(1/z) < 0, so
    while z = theta + j < 10 (at most 10 steps, j < k) the steps are summed as
    log1pmx(1/(theta + j)) (all of one sign: no cancellation, no digamma); the rest,
    from z >= 10 on, is -m/(2z(z + m)) + P(z + m) - P(z) with P the asymptotic tail of
    psi (no cancellation either).
    """
    def step(z: Tensor) -> tuple[Tensor, Tensor]:
        return log1pmx(1.0 / z, D), torch.ones_like(z)

    def steps(k: Tensor, th: Tensor) -> tuple[Tensor, Tensor]:  # theta < 10
        acc = (torch.zeros_like(th), torch.zeros_like(th))
        for j in range(int(STIRLING_MIN)):
            z = th + j
            acc = D.accumulate((k > j) & (z < STIRLING_MIN), acc, step, (z,), (2.0,))
        return acc

    def tail(acc: Tensor, z0: Tensor, m: Tensor) -> Tensor:  # z0 >= 10, m > 0
        return acc + (-m / (2.0 * z0 * (z0 + m)) + (_psi_tail(z0 + m, D) - _psi_tail(z0, D)))

    def no_tail(acc: Tensor, z0: Tensor, m: Tensor) -> Tensor:
        return acc

    acc, n = D.branch(theta < STIRLING_MIN, steps, None, (k, theta), (None, 1.0), (None, None))
    z0 = theta + n
    m = k - n
    rest = (m > 0) & (z0 >= STIRLING_MIN)
    return D.branch(rest, tail, no_tail, (acc, z0, m), (None, STIRLING_MIN, 1.0), (None,) * 3)  # type: ignore[return-value]
