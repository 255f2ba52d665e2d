"""The exact quantities, written once for any arbitrary-precision backend.

Both engines evaluate the same expressions, through a small table of backend functions
(``log``, ``log1p``, ``expm1``, ``lgamma``, ``digamma``) over numbers of the backend's
type (flint ``arb`` balls or mpmath ``mpf``). The forms are the exact
definitions; cancellation is not avoided here but paid for with working precision, which
the engines raise until the result is certified.

ZTP (k >= 1, lam > 0)::

    nll_loss = -k log(lam) + log(expm1(lam))
    nll      = nll_loss + lgamma(k + 1)
    d_lam    = -k/lam + 1/(1 - e^-lam)

ZTNB (k >= 1, mu > 0, theta > 0), w = theta log1p(mu/theta) = -log P(X = 0)::

    nll_loss = lgamma(theta) - lgamma(k + theta) + k log1p(theta/mu) + log(expm1(w))
    nll      = nll_loss + lgamma(k + 1)
    d_mu     = k/(theta + mu) - k/mu + theta/(theta + mu) / (1 - e^-w)
    d_theta  = digamma(theta) - digamma(k + theta) + k/(theta + mu)
               + (log1p(mu/theta) - mu/(theta + mu)) / (1 - e^-w)

The order of the returned tuple is the family's ``quantities``: (nll, nll_loss, d_...).

Log parameters (a candidate's own parameterisation, :func:`in_own_parameters`): a
parameter given as its logarithm v stands for exp(v) exactly; the formula is evaluated at
that value inside the backend (exp in the working precision, so certification covers
it), and the gradient is d/dv = exp(v) d/dp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ztbench.core.families import TORCH_NB


@dataclass(frozen=True)
class Backend:
    """Elementary functions of one arbitrary-precision number type."""

    num: Callable[[Any], Any]  # exact conversion of a float or int
    log: Callable[[Any], Any]
    log1p: Callable[[Any], Any]
    expm1: Callable[[Any], Any]
    exp: Callable[[Any], Any]
    lgamma: Callable[[Any], Any]
    digamma: Callable[[Any], Any]


def ztpoisson(b: Backend, k: int, lam: float) -> tuple[Any, ...]:
    """(nll, nll_loss, d_lam) of the zero-truncated Poisson at one point."""
    x = b.num(lam)
    one_minus_p0 = -b.expm1(-x)  # 1 - e^-lam
    loss = -k * b.log(x) + b.log(b.expm1(x))
    nll = loss + b.lgamma(b.num(k + 1))
    d_lam = -k / x + 1 / one_minus_p0
    return nll, loss, d_lam


def ztnb(b: Backend, k: int, mu: float, theta: float) -> tuple[Any, ...]:
    """(nll, nll_loss, d_mu, d_theta) of the zero-truncated negative binomial at one point."""
    m = b.num(mu)
    t = b.num(theta)
    tk = t + k
    tm = t + m
    log1p_r = b.log1p(m / t)  # log1p(mu/theta)
    w = t * log1p_r  # -log P(X = 0)
    one_minus_p0 = -b.expm1(-w)
    loss = b.lgamma(t) - b.lgamma(tk) + k * b.log1p(t / m) + b.log(b.expm1(w))
    nll = loss + b.lgamma(b.num(k + 1))
    d_mu = k / tm - k / m + (t / tm) / one_minus_p0
    d_theta = b.digamma(t) - b.digamma(tk) + k / tm + (log1p_r - m / tm) / one_minus_p0
    return nll, loss, d_mu, d_theta


FORMULAS = {"ztpoisson": ztpoisson, "ztnb": ztnb}


def in_own_parameters(
    formula: Callable[..., tuple[Any, ...]], log_mask: tuple[bool, ...]
) -> Callable[..., tuple[Any, ...]]:
    """``formula`` taking each masked parameter as its logarithm v (p = exp(v) exactly).

    Returns (nll, nll_loss, d/d(own parameter) ...), with d/dv = p d/dp for a log one.
    """
    if not any(log_mask):
        return formula

    def own(b: Backend, k: int, *params: float) -> tuple[Any, ...]:
        nat = [b.exp(b.num(v)) if lg else v for v, lg in zip(params, log_mask, strict=True)]
        out = list(formula(b, k, *nat))
        for i, lg in enumerate(log_mask):
            if lg:
                out[2 + i] = out[2 + i] * nat[i]
        return tuple(out)

    return own


def in_torch_nb_parameters(
    formula: Callable[..., tuple[Any, ...]],
) -> Callable[..., tuple[Any, ...]]:
    """The ztnb ``formula`` in torch.distributions.NegativeBinomial's parameters
    (total_count, logits): theta = total_count and mu = total_count e^logits exactly (in
    the backend's precision). Returns (nll, nll_loss, d/dtotal_count, d/dlogits) with,
    by the chain rule at fixed logits, d/dtotal_count = d/dtheta + e^logits d/dmu and
    d/dlogits = mu d/dmu.
    """

    def own(b: Backend, k: int, total_count: float, logits: float) -> tuple[Any, ...]:
        e = b.exp(b.num(logits))
        mu = b.num(total_count) * e
        nll, loss, d_mu, d_theta = formula(b, k, mu, total_count)
        return nll, loss, d_theta + e * d_mu, mu * d_mu

    return own


def cancelling_magnitude(family: str, k: int, *params: float) -> float:
    """Rough float64 size of the largest term that cancels in the family's expressions.

    The result loses about log2(this / |result|) bits to cancellation, so the engines
    skip precisions that cannot settle: they start at the first rung of their ladder
    (64 * 2^j bits) that holds 53 + log2(magnitude) + a guard. It is only a starting
    point; certification still decides when to stop.
    """
    if family == "ztpoisson":
        (lam,) = params
        return max(1.0, k * abs(math.log(lam)), lam)
    mu, theta = params
    big = max(theta, k + theta)
    return max(1.0, big * abs(math.log(big)), k * abs(math.log1p(theta / mu)))


def start_precision(family: str, k: int, params: tuple[float, ...], first: int) -> int:
    """First rung ``first * 2^j`` with room for the cancellation of :func:`cancelling_magnitude`."""
    need = 53 + 16 + math.log2(cancelling_magnitude(family, k, *params))
    prec = first
    while prec < need:
        prec *= 2
    return prec


PointFn = Callable[
    [str, Callable[..., tuple[Any, ...]], tuple, int, tuple[float, ...]], tuple[list[float], bool]
]


def _natural_hint(v: float, log: bool) -> float:
    """The float64 value of a parameter (exp of a log one, capped), for start_precision."""
    if not log:
        return v
    return math.exp(min(max(v, -745.0), 709.0))


def evaluate_points(
    point: PointFn,
    family: str,
    k: np.ndarray,
    params: tuple[np.ndarray, ...],
    log_mask: tuple[bool, ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Run an engine's per-point certifier over a chunk; the loop both engines share.

    ``point(family, formula, (k, *params), n_quantities, natural)`` returns the float64
    quantities of one point and whether they are certified (``natural``: the parameters'
    float64 values, to choose the starting precision). ``log_mask`` marks the parameters
    given as logarithms (:func:`in_own_parameters`), or is ``(TORCH_NB,)`` for ztnb in
    (total_count, logits) (:func:`in_torch_nb_parameters`). Returns ``(values, certified)`` with
    shapes (n_quantities, n) and (n,). Rows with k = 0 get NLL = +inf and NaN gradients
    (a zero-truncated law gives k = 0 probability zero), certified.
    """
    torch_nb = tuple(log_mask) == (TORCH_NB,)  # (total_count, logits): families.TORCH_NB
    log_mask = tuple(log_mask) or (False,) * len(params)
    if torch_nb:
        formula = in_torch_nb_parameters(FORMULAS[family])
    else:
        formula = in_own_parameters(FORMULAS[family], log_mask)
    nq = 2 + len(params)
    n = len(k)
    values = np.empty((nq, n), dtype=np.float64)
    certified = np.ones(n, dtype=bool)
    for j in range(n):
        kj = int(k[j])
        if kj == 0:
            values[:, j] = [np.inf, np.inf] + [np.nan] * len(params)
            continue
        args = tuple(float(p[j]) for p in params)
        if torch_nb:  # (mu, theta) = (total_count e^logits, total_count)
            hint = (args[0] * _natural_hint(args[1], True), args[0])
        else:
            hint = tuple(_natural_hint(v, lg) for v, lg in zip(args, log_mask, strict=True))
        values[:, j], certified[j] = point(family, formula, (kj, *args), nq, hint)
    return values, certified
