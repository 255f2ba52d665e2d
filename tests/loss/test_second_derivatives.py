"""Second derivatives of the shipped loss (double backward, torch.func.hessian) against exact
Hessians in mpmath.

The reference is derived by hand from the NLL, independently of the kernels:

- ZTP: NLL = -k log(lam) + log(expm1(lam)) + const, d2/dlam2 = k/lam^2 - e^lam/expm1(lam)^2.
- ZTNB: NLL = A + B with A = lgamma(theta) - lgamma(k + theta) - theta log(theta) +
  (theta + k) log(theta + mu) - k log(mu) + const and B = g(w) = log(1 - e^-w), w = theta
  log((theta + mu)/theta); B_ab = g''(w) w_a w_b + g'(w) w_ab with g' = 1/expm1(w),
  g'' = -e^w/expm1(w)^2.

It is evaluated with enough bits to absorb every cancellation (k/mu^2 against terms of the
result's size), and itself checked against mpmath's numerical differentiation.

The goal (docs/loss.md), over the benchmark's domain (k <= 1e7, lam and mu in [1e-30, 1e9],
theta in [1e-12, 1e10]): every second derivative in natural parameters within a relative
error of :data:`GOAL`; in log parameters, where d2/dlog a dlog b = a b H_ab + [a = b] a d_a
can cancel to far below its terms, within :data:`GOAL` of the larger of the result and the
chain rule's terms (|a b H_ab| + [a = b] |a d_a|).
"""

from __future__ import annotations

import functools
import itertools
import math

import mpmath as mp
import numpy as np
import pytest
import torch

from ztbench.loss import zt_negbin_nll, zt_poisson_nll

GOAL = 1e-8
KS = (1, 2, 7, 100, 10**4, 10**7)


def _bits(*xs: float) -> int:
    # the terms reach 1/x^2 of each input and k/mu^2: twice each input's exponent, plus margin
    return 256 + 2 * int(max(abs(math.log2(x)) for x in xs))


def ztnb_exact(k: float, mu: float, theta: float) -> dict[str, float]:
    """First and second derivatives of the ZTNB NLL in (mu, theta), exact to float64."""
    with mp.workprec(_bits(k, mu, theta)):
        k, mu, th = mp.mpf(k), mp.mpf(mu), mp.mpf(theta)
        s = th + mu
        w = th * mp.log(s / th)
        g1 = 1 / mp.expm1(w)
        g2 = -mp.exp(w) / mp.expm1(w) ** 2
        w_m, w_t = th / s, mp.log(s / th) - mu / s
        w_mm, w_mt, w_tt = -th / s**2, mu / s**2, 1 / s - 1 / th + mu / s**2
        a_m = (th + k) / s - k / mu
        a_t = -mp.digamma(k + th) + mp.digamma(th) - mp.log(th) - 1 + mp.log(s) + (th + k) / s
        a_mm = k / mu**2 - (th + k) / s**2
        a_mt = (mu - k) / s**2
        a_tt = -mp.psi(1, k + th) + mp.psi(1, th) - 1 / th + 2 / s - (th + k) / s**2
        out = {
            "m": a_m + g1 * w_m,
            "t": a_t + g1 * w_t,
            "mm": a_mm + g2 * w_m * w_m + g1 * w_mm,
            "mt": a_mt + g2 * w_m * w_t + g1 * w_mt,
            "tt": a_tt + g2 * w_t * w_t + g1 * w_tt,
        }
        # in log parameters: d2/dlog a dlog b = a b H_ab + [a = b] a d_a, and its terms' size
        out["MM"] = mu * mu * out["mm"] + mu * out["m"]
        out["MT"] = mu * th * out["mt"]
        out["TT"] = th * th * out["tt"] + th * out["t"]
        out["MM_terms"] = abs(mu * mu * out["mm"]) + abs(mu * out["m"])
        out["MT_terms"] = abs(out["MT"])
        out["TT_terms"] = abs(th * th * out["tt"]) + abs(th * out["t"])
        return {key: float(v) for key, v in out.items()}


def ztp_exact(k: float, lam: float) -> dict[str, float]:
    """d/dlam and d2/dlam2 of the ZTP NLL (and d2/dlog(lam)2), exact to float64."""
    with mp.workprec(_bits(k, lam)):
        k, lam = mp.mpf(k), mp.mpf(lam)
        d = -k / lam + mp.exp(lam) / mp.expm1(lam)
        h = k / lam**2 - mp.exp(lam) / mp.expm1(lam) ** 2
        return {"l": float(d), "ll": float(h), "LL": float(lam * lam * h + lam * d),
                "LL_terms": float(abs(lam * lam * h) + abs(lam * d))}


def _rel(got: np.ndarray, exact: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """|got - exact| / max(|exact|, scale); inf where ``got`` is not finite."""
    size = np.abs(exact) if scale is None else np.maximum(np.abs(exact), scale)
    with np.errstate(all="ignore"):
        err = np.abs(got - exact) / size
    return np.where(np.isfinite(got), err, np.inf)


def _ztnb_hessian(k: np.ndarray, mu: np.ndarray, theta: np.ndarray, log: bool
                  ) -> dict[str, np.ndarray]:  # fmt: skip
    """Double backward of the shipped loss, summed over independent elements."""
    p = [torch.tensor(np.log(v) if log else v, requires_grad=True) for v in (mu, theta)]
    kw = {"log_mu": p[0], "log_theta": p[1]} if log else {"mu": p[0], "theta": p[1]}
    nll = zt_negbin_nll(torch.tensor(k), reduction="sum", **kw)
    g_m, g_t = torch.autograd.grad(nll, p, create_graph=True)
    h_mm, h_mt = torch.autograd.grad(g_m.sum(), p, retain_graph=True)
    _, h_tt = torch.autograd.grad(g_t.sum(), p)
    names = ("MM", "MT", "TT") if log else ("mm", "mt", "tt")
    return dict(zip(names, (h.detach().numpy() for h in (h_mm, h_mt, h_tt)), strict=True))


def test_reference_matches_numerical_differentiation() -> None:
    """The hand-derived Hessian equals mpmath's numerical one at moderate points (a check of
    the derivation, not of the loss)."""

    def nll(k: mp.mpf, mu: mp.mpf, th: mp.mpf) -> mp.mpf:
        log_p = (mp.loggamma(k + th) - mp.loggamma(th) - mp.loggamma(k + 1)
                 + th * mp.log(th / (th + mu)) + k * mp.log(mu / (th + mu)))  # fmt: skip
        return -log_p + mp.log(1 - (th / (th + mu)) ** th)

    with mp.workdps(60):
        for k, mu, th in [(1, 0.3, 2.0), (5, 40.0, 0.2), (2, 1e-3, 30.0)]:
            exact = ztnb_exact(k, mu, th)
            f = functools.partial(nll, mp.mpf(k))
            for key, order in (("mm", (2, 0)), ("mt", (1, 1)), ("tt", (0, 2))):
                num = mp.diff(f, (mp.mpf(mu), mp.mpf(th)), order)
                assert float(num) == pytest.approx(exact[key], rel=1e-14)
            ztp_nll = functools.partial(
                lambda kk, lam: -kk * mp.log(lam) + mp.log(mp.expm1(lam)), k)
            lam_h = mp.diff(ztp_nll, mp.mpf(mu), 2)
            assert float(lam_h) == pytest.approx(ztp_exact(k, mu)["ll"], rel=1e-14)


@pytest.mark.parametrize("point", [(1, 1e-8, 1.0), (1, 1e-12, 1.0), (1, 1e-12, 1e3)])
def test_ztnb_d2_dmu2_at_small_mu(point: tuple[float, float, float]) -> None:
    """At k = 1 and mu << theta, d2/dmu2 is O(1) while k/mu^2 and the truncation term's
    curvature are O(1/mu^2): double backward and torch.func.hessian both keep its digits."""
    k, mu, theta = point
    exact = ztnb_exact(k, mu, theta)
    got = _ztnb_hessian(np.array([k], float), np.array([mu]), np.array([theta]), log=False)
    assert _rel(got["mm"], np.array([exact["mm"]]))[0] <= 1e-13

    def loss(p: torch.Tensor) -> torch.Tensor:
        return zt_negbin_nll(torch.tensor([float(k)], dtype=torch.float64), p[:1], p[1:],
                             reduction="sum")  # fmt: skip

    h = torch.func.hessian(loss)(torch.tensor([mu, theta], dtype=torch.float64))
    want = np.array([[exact["mm"], exact["mt"]], [exact["mt"], exact["tt"]]])
    assert np.all(_rel(h.numpy(), want) <= 1e-13)


@pytest.mark.parametrize("log", [False, True], ids=["natural", "log"])
def test_ztnb_hessian_meets_its_goal_over_the_domain(log: bool) -> None:
    grid = np.array(list(itertools.product(KS, np.logspace(-30, 9, 14), np.logspace(-12, 10, 12))))
    k, mu, theta = grid.T
    if log:  # the exact inputs are the float64 exp of the log-parameters the loss receives
        mu, theta = np.exp(np.log(mu)), np.exp(np.log(theta))
    got = _ztnb_hessian(k, mu, theta, log)
    exact = [ztnb_exact(*p) for p in zip(k, mu, theta, strict=True)]
    for name, h in got.items():
        want = np.array([e[name] for e in exact])
        scale = np.array([e[f"{name}_terms"] for e in exact]) if log else None
        err = _rel(h, want, scale)
        worst = int(np.argmax(err))
        assert err[worst] <= GOAL, (name, grid[worst], h[worst], want[worst])


@pytest.mark.parametrize("log", [False, True], ids=["natural", "log"])
def test_ztp_second_derivative_meets_its_goal_over_the_domain(log: bool) -> None:
    grid = np.array(list(itertools.product(KS, np.logspace(-30, 9, 60))))
    k, lam = grid.T
    if log:
        lam = np.exp(np.log(lam))
    p = torch.tensor(np.log(lam) if log else lam, requires_grad=True)
    kw = {"log_lam": p} if log else {"lam": p}
    nll = zt_poisson_nll(torch.tensor(k), reduction="sum", **kw)
    (g,) = torch.autograd.grad(nll, p, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), p)
    exact = [ztp_exact(a, b) for a, b in zip(k, lam, strict=True)]
    want = np.array([e["LL" if log else "ll"] for e in exact])
    scale = np.array([e["LL_terms"] for e in exact]) if log else None
    err = _rel(h.detach().numpy(), want, scale)
    worst = int(np.argmax(err))
    assert err[worst] <= GOAL, (grid[worst], h[worst].item(), want[worst])
