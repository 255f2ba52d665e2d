"""The double-double log-gamma difference, the ZTNB value / full value, d/dtheta for
theta > 16 and the ZTP full form, against mpmath (60 digits; 90 for d/dtheta).

Points: log-uniform over the whole domain (k in [1, 1e7], mu in [1e-30, 1e9], theta in
[1e-12, 1e10]), k ~ mu, the points named in the project's notes (k = 5121, mu = 2.4e-13,
theta = 4.5e-10; k = 250000, mu = 300, theta = 1e-5; k = lam = 1e7), and the float64
neighbours of zero crossings: of lgamma(k + theta) - lgamma(theta) in theta (k <= 15,
theta down to 1e-12), of the ZTNB loss in mu (located by bisection with
:func:`ztnb_value_dd` itself: only where the points are; the reference is mpmath's), and
of d/dtheta in mu for theta > 16.
"""

from __future__ import annotations

import math
import random
from functools import cache

import mpmath as mp
import numpy as np
import pytest
import torch

from ztbench.core.metrics import step_floats, ulp, ulp_error
from ztbench.loss import zt_negbin_nll, zt_poisson_nll
from ztbench.loss.dd import ztnb as N
from ztbench.loss.dd.arith import sum_expansion
from ztbench.loss.dd.lgamma import lgamma_diff_terms, log_factorial_terms
from ztbench.loss.kernels import ztnb_kernel

F64 = torch.float64
OFFSETS = (0, 1, 2, 3, 10, 30)
Point = tuple[float, float, float]


def _t(xs: list[float]) -> torch.Tensor:
    return torch.tensor(xs, dtype=F64)


def _loguni(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _ulp(computed: torch.Tensor, refs: list[float]) -> np.ndarray:
    return np.asarray(ulp_error(computed.numpy(), np.array(refs), "float64"))


# ------------------------------------------------------------------------- references
def _loss_ref(k: float, mu: float, theta: float, full: bool = False) -> float:
    with mp.workdps(60):
        kk, m, t = mp.mpf(k), mp.mpf(mu), mp.mpf(theta)
        w = t * mp.log1p(m / t)
        v = mp.loggamma(t) - mp.loggamma(kk + t) + kk * mp.log1p(t / m) + mp.log(mp.expm1(w))
        if full:
            v += mp.loggamma(kk + 1)
        return float(v)


def _dtheta_ref(k: float, mu: float, theta: float) -> float:
    with mp.workdps(90):
        kk, m, t = mp.mpf(k), mp.mpf(mu), mp.mpf(theta)
        x = m / t
        w = t * mp.log1p(x)
        s = mp.log1p(x) - x / (1 + x)
        return float(mp.digamma(t) - mp.digamma(kk + t) + kk / (t + m) + s / -mp.expm1(-w))


def _ztp_full_ref(k: float, lam: float) -> float:
    with mp.workdps(60):
        kk, lm = mp.mpf(k), mp.mpf(lam)
        return float(-kk * mp.log(lm) + mp.loggamma(kk + 1) + mp.log(mp.expm1(lm)))


# ------------------------------------------------------------------- point generation
def _random_points(n: int, seed: int, theta_lo: float = 1e-12) -> list[Point]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = float(int(_loguni(rng, 1, 1e7)))
        mu = k * _loguni(rng, 0.3, 3.0) if i % 2 else _loguni(rng, 1e-30, 1e9)
        out.append((k, mu, _loguni(rng, theta_lo, 1e10)))
    return out


def _bisect_mu(fn, k: float, theta: float, lo: float, hi: float) -> float:  # type: ignore[no-untyped-def]
    """The float64 mu in [lo, hi] where fn(k, mu, theta) changes sign (log-bisection)."""
    f_lo = fn(_t([k]), _t([lo]), _t([theta])).item()
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if mid in (lo, hi):
            break
        f_mid = fn(_t([k]), _t([mid]), _t([theta])).item()
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return lo


def _crossings(fn, ks, thetas, mu_lo: float = 1e-30, mu_hi: float = 1e9):  # type: ignore[no-untyped-def]
    """Float64 neighbours (OFFSETS ulp either side) of fn's sign changes in mu."""
    grid = np.geomspace(mu_lo, mu_hi, 120).tolist()
    out: list[Point] = []
    for k in ks:
        for th in thetas:
            vals = fn(_t([k] * len(grid)), _t(grid), _t([th] * len(grid))).tolist()
            for a, b, fa, fb in zip(grid, grid[1:], vals, vals[1:], strict=False):
                if (fa > 0) != (fb > 0):
                    root = _bisect_mu(fn, k, th, a, b)
                    for off in OFFSETS:
                        out += [
                            (k, float(step_floats(root, "float64", s * off)), th) for s in (1, -1)
                        ]
    return out


# --------------------------------------------------- lgamma(k + theta) - lgamma(theta)
@cache
def _lgdiff_points() -> list[tuple[float, float]]:
    pts = [(p[0], p[2]) for p in _random_points(300, 17)]
    pts += [(1.0, 1e-12), (2.0, 1e-12), (1e7, 1e-12), (1e7, 1e10), (5121.0, 4.5e-10),
            (250000.0, 1e-5), (33.0, 31.9), (40.0, 40.0), (1e7, 1e7), (3.0, 1e10)]  # fmt: skip
    # zero crossings in theta: theta (theta + 1) ... (theta + k - 1) = 1, k = 2 .. 15
    # (increasing in theta: bisection in mpmath on the log of the product)
    for k in range(2, 16):
        with mp.workdps(60):
            lo, hi = mp.mpf(10) ** -300, mp.mpf(1)
            for _ in range(300):
                mid = (lo + hi) / 2
                if sum(mp.log(mid + j) for j in range(k)) < 0:
                    lo = mid
                else:
                    hi = mid
            root = float(lo)
        for off in (0, 1, 5, 100):
            pts += [(float(k), float(step_floats(root, "float64", s * off))) for s in (1, -1)]
    return pts


def test_lgamma_difference_within_a_few_units_of_2_104() -> None:
    pts = _lgdiff_points()
    k, th = _t([p[0] for p in pts]), _t([p[1] for p in pts])
    terms = lgamma_diff_terms(k, th)
    hi = sum_expansion(terms)
    lo = sum_expansion([*terms, -hi])
    worst = 0.0
    with mp.workdps(60):
        for i, (kk, t) in enumerate(pts):
            a, b = mp.loggamma(mp.mpf(kk) + mp.mpf(t)), mp.loggamma(mp.mpf(t))
            err = abs(mp.mpf(hi[i].item()) + mp.mpf(lo[i].item()) - (a - b))
            scale = max(abs(a), abs(b), mp.mpf(1e-300))
            worst = max(worst, float(err / scale * mp.mpf(2) ** 104))
    assert worst <= 4.0, worst


def test_log_factorial_terms() -> None:
    ks = [1.0, 2.0, 5.0, 31.0, 32.0, 33.0, 100.0, 12345.0, 1e7, 2.0**40]
    h = sum_expansion(log_factorial_terms(_t(ks)))
    with mp.workdps(60):
        for i, k in enumerate(ks):
            ref = mp.loggamma(mp.mpf(k) + 1)
            assert abs(mp.mpf(h[i].item()) - ref) <= mp.mpf(2) ** -52 * abs(ref) + 1e-300


# ------------------------------------------------------------------- ZTNB value, full
@cache
def _value_sets() -> dict[str, list[Point]]:
    named = [(5121.0, 2.4e-13, 4.5e-10), (250000.0, 300.0, 1e-5), (1.0, 1e-30, 1e-12),
             (2.0, 1e-3, 31.6), (1e7, 1e7, 1e10), (7.0, 9.69, 304.0)]  # fmt: skip

    def value(k, mu, th):  # type: ignore[no-untyped-def]
        return N.ztnb_value_dd(k, mu, th)

    roots = _crossings(value, (2.0, 10.0, 100.0, 5121.0, 1e5, 1e7),
                       (1e-12, 1e-9, 1e-6, 1e-3, 0.1, 3.0, 100.0, 1e5, 1e10))  # fmt: skip
    return {"random": _random_points(400, 3), "named": named, "roots": roots}


@cache
def _value_measure(name: str, full: bool) -> dict[str, np.ndarray]:
    pts = _value_sets()[name]
    k, mu, th = (_t([p[i] for p in pts]) for i in range(3))
    refs = [_loss_ref(*p, full=full) for p in pts]
    v64, _, _ = ztnb_kernel(k, mu, th, False)
    if full:
        v64 = v64 + torch.lgamma(k + 1.0)
    api = zt_negbin_nll(k, mu, th, reduction="none", full=full)
    dd = (N.ztnb_full_value_dd if full else N.ztnb_value_dd)(k, mu, th)
    flag = N.ztnb_value_cancellation(k, mu, th, v64, full).numpy()
    # the sum of |terms| (the kernel's grouping): at the float64 nearest a zero crossing the
    # result can be 2^-60 of it by chance, where no fixed precision bounds the ulp error;
    # there the bound is 2^-100 of the terms, in ulp of the result
    mag = N.ztnb_value_magnitude(k, mu, th) + (torch.lgamma(k + 1.0) if full else 0.0)
    floor = mag.numpy() * 2.0**-100 / ulp(np.array(refs), "float64")
    return {"f64": _ulp(v64, refs), "dd": _ulp(dd, refs), "api": _ulp(api, refs), "flag": flag,
            "floor": np.where(np.isfinite(floor), floor, 0.0)}  # fmt: skip


def test_value_roots_are_hard_for_float64() -> None:
    assert len(_value_sets()["roots"]) > 100
    assert _value_measure("roots", False)["f64"].max() > 100


@pytest.mark.parametrize("full", [False, True], ids=["loss", "full"])
@pytest.mark.parametrize("name", ["random", "named", "roots"])
def test_value_accuracy(name: str, full: bool) -> None:
    m = _value_measure(name, full)
    assert (m["dd"] <= np.maximum(2.0, m["floor"])).all()
    assert (m["api"] <= np.maximum(4.0, m["floor"])).all()  # the shipped loss (refined)
    if name != "roots":
        assert m["api"].max() <= 4.0
    else:  # the floor applies to a few points at the crossings only
        assert (m["api"] > 4.0).mean() < 0.05


@pytest.mark.parametrize("full", [False, True], ids=["loss", "full"])
@pytest.mark.parametrize("name", ["random", "named", "roots"])
def test_value_flags_every_bad_float64_point(name: str, full: bool) -> None:
    m = _value_measure(name, full)
    assert not ((m["f64"] > 4.0) & ~m["flag"]).any()


# ---------------------------------------------------------------- d/dtheta, theta > 16
@cache
def _dtheta_sets() -> dict[str, list[Point]]:
    def dtheta(k, mu, th):  # type: ignore[no-untyped-def]
        return N.ztnb_dtheta_dd(k, mu, th)

    roots = _crossings(dtheta, (1.0, 2.0, 7.0, 100.0, 1e4, 1e7), (20.0, 304.0, 1e4, 1e7, 1e10),
                       mu_lo=1e-3)  # fmt: skip
    rand = [p for p in _random_points(600, 5, theta_lo=16.5)]
    return {"random": rand, "roots": roots, "worst": [(7.0, 9.69, 304.0), (2.0, 2.0, 7196857.0)]}


@cache
def _dtheta_measure(name: str) -> dict[str, np.ndarray]:
    pts = _dtheta_sets()[name]
    k, mu, th = (_t([p[i] for p in pts]) for i in range(3))
    refs = [_dtheta_ref(*p) for p in pts]
    _, _, d64 = ztnb_kernel(k, mu, th, True)
    th_req = th.clone().requires_grad_(True)
    zt_negbin_nll(k, mu, th_req, reduction="sum").backward()
    flag = N.ztnb_dtheta_cancellation(k, mu, th, d64).numpy()
    # as for the value: 2^-100 of the terms' magnitudes, in ulp of the result
    floor = N._dtheta_big_magnitude(k, mu, th).numpy() * 2.0**-100 / ulp(np.array(refs), "float64")
    return {"f64": _ulp(d64, refs), "dd": _ulp(N.ztnb_dtheta_dd(k, mu, th), refs),
            "api": _ulp(th_req.grad, refs), "flag": flag, "floor": floor}  # fmt: skip


def test_dtheta_large_theta_roots_are_hard_for_float64() -> None:
    assert len(_dtheta_sets()["roots"]) > 100
    assert _dtheta_measure("roots")["f64"].max() > 100


@pytest.mark.parametrize("name", ["random", "roots", "worst"])
def test_dtheta_large_theta_accuracy(name: str) -> None:
    m = _dtheta_measure(name)
    assert (m["dd"] <= np.maximum(4.0, m["floor"])).all()
    assert (m["api"] <= np.maximum(16.0, m["floor"])).all()  # the gradient goal
    if name != "roots":
        assert m["api"].max() <= 16.0
    assert not ((m["f64"] > 8.0) & ~m["flag"]).any()


# ------------------------------------------------------------------------ ZTP full form
@cache
def _ztp_full_points() -> list[tuple[float, float]]:
    rng = random.Random(11)
    pts = [(1e7, 1e7), (1e6, 1e6), (1e7, 9999999.0), (2.0, 1.0), (1000.0, 1500.0),
           (1000.0, 499.0), (1000.0, 501.0), (75121.0, 36749.78822638541)]  # fmt: skip
    for i in range(600):
        k = float(int(_loguni(rng, 1, 1e7)))
        lam = k * _loguni(rng, 0.05, 20.0) if i % 3 else _loguni(rng, 1e-30, 1e9)
        pts.append((k, lam))
    return pts


def test_ztp_full_form_meets_the_value_goal() -> None:
    pts = _ztp_full_points()
    k, lam = _t([p[0] for p in pts]), _t([p[1] for p in pts])
    refs = [_ztp_full_ref(*p) for p in pts]
    out = zt_poisson_nll(k, lam, reduction="none", full=True)
    assert _ulp(out, refs).max() <= 4.0
    # float32: one rounding of an accurate float64 result
    out32 = zt_poisson_nll(k.float(), lam.float(), reduction="none", full=True)
    pairs = zip(k.float().tolist(), lam.float().tolist(), strict=True)
    refs32 = np.array([_ztp_full_ref(a, b) for a, b in pairs])
    err32 = np.asarray(ulp_error(out32.double().numpy(), refs32, "float32"))
    assert err32.max() <= 0.5 + 1e-6


@pytest.mark.parametrize("name", ["random", "named"])
def test_loader_full_forms_unrefined_points_meet_the_goal(name: str) -> None:
    """The float64 Loader forms (stirlerr + bd0) where their condition number leaves them
    unrefined: within the value goal; and they do carry most k ~ mean points."""
    from ztbench.loss.dd.ztp import FULL_CANCEL_FACTOR as ZTP_F
    from ztbench.loss.kernels import ztp_kernel
    from ztbench.loss.stirlerr import (
        ztnb_full_condition,
        ztnb_full_value,
        ztp_full_condition,
        ztp_full_value,
    )

    pts = _value_sets()[name]
    k, mu, th = (_t([p[i] for p in pts]) for i in range(3))
    v64, _, _ = ztnb_kernel(k, mu, th, False)
    full = ztnb_full_value(k, mu, th, v64)
    keep = (ztnb_full_condition(k, mu, th, full) <= N.FULL_CANCEL_FACTOR).numpy()
    refs = [_loss_ref(*p, full=True) for p in pts]
    assert _ulp(full, refs)[keep].max() <= 4.0
    if name == "random":
        assert keep.sum() > 50
    # ZTP: lam = mu
    vp, _ = ztp_kernel(k, mu, False)
    fp = ztp_full_value(k, mu, vp)
    keep_p = (ztp_full_condition(k, mu, fp) <= ZTP_F).numpy()
    refs_p = [_ztp_full_ref(p[0], p[1]) for p in pts]
    assert _ulp(fp, refs_p)[keep_p].max() <= 4.0


# Unflagged float64 results 5-6 ulp off while the terms' magnitudes against the result
# were under the cancel factors: the lgamma excess D (Stirling's form, up to 3-fold
# cancellation inside) and Loader's bd0 terms carry several ulp of what they sum, not of
# themselves. Found by the report's goal check and by 40000-point mpmath sweeps.
ZTNB_VALUE_MISSES: list[Point] = [
    (66.0, 0.9496906311362974, 84.79872012805188),  # 6 ulp
    (19.0, 1.012680188958473, 13.01621434392658),  # 5 ulp
]
ZTP_FULL_MISSES = [(63.0, 22.612041161298446), (28.0, 10.137475046688072)]  # 5 ulp each


def test_former_unflagged_misses_meet_the_value_goal() -> None:
    k, mu, th = (_t([p[i] for p in ZTNB_VALUE_MISSES]) for i in range(3))
    refs = [_loss_ref(*p) for p in ZTNB_VALUE_MISSES]
    assert _ulp(zt_negbin_nll(k, mu, th, reduction="none"), refs).max() <= 4.0
    k, lam = (_t([p[i] for p in ZTP_FULL_MISSES]) for i in range(2))
    refs = [_ztp_full_ref(*p) for p in ZTP_FULL_MISSES]
    assert _ulp(zt_poisson_nll(k, lam, reduction="none", full=True), refs).max() <= 4.0
