"""ztbench.loss.dd.ztnb against mpmath (60 digits, certified at 90) at the hard points of the
ZTNB loss's d/dmu and (theta <= 16) d/dtheta.

Hard points: the float64 neighbours (0, +-1 .. +-100 ulp in mu) of the zero crossings of
d_mu = k/(theta+mu) - k/mu + theta/(theta+mu)/(1 - e^-w) for several k and theta (the
crossing is where T = mu/(1 - e^-w) = k), the worst point of the float64 kernel on the
project's suite, random log-uniform points, tiny mu, huge theta, tiny theta. d/dtheta: the
float64 neighbours (0 .. +-100 ulp in mu) of its zero crossings in mu for several k and
theta <= 16 (located by bisection with ztnb_dtheta_dd itself: only where the points are),
the kernel's worst point, random log-uniform points with theta <= 16.
"""

from __future__ import annotations

import math
import random
from functools import cache

import mpmath as mp
import numpy as np
import pytest
import torch

from ztbench.core.metrics import step_floats, ulp_error
from ztbench.loss.dd import arith as A
from ztbench.loss.dd import ztnb as N
from ztbench.loss.kernels import ztnb_kernel

DPS = 60
OFFSETS = (0, 1, 2, 3, 5, 10, 30, 100)
DMU_ULP_MAX = 4.0  # every set but the float64 nearest the zero crossings
DMU_ULP_MAX_AT_ROOT = 256.0  # offset 0: the result is arbitrarily small by chance
KERNEL_UNFLAGGED_MAX = 6.0  # the kernel's own rounding where nothing cancels
ROOT_KS = (2, 3, 5, 10, 30, 100, 1000, 10**4, 10**5, 10**7)
ROOT_THETAS = (1e-6, 1e-3, 0.1, 1.5, 3.0, 10.0, 100.0, 1e4, 1e8)
WORST = (2.0, 1.584893192461114, 100.0)

Point = tuple[float, float, float]


def _t_mp(mu: mp.mpf, theta: mp.mpf) -> mp.mpf:
    w = theta * mp.log1p(mu / theta)
    return mu / -mp.expm1(-w)


def _dmu_ref(k: float, mu: float, theta: float) -> mp.mpf:
    m, t = mp.mpf(mu), mp.mpf(theta)
    w = t * mp.log1p(m / t)
    # (T - k)/(mu (1 + x)) with T - k = (mu - k) + mu/expm1(w): no -k/mu against
    # k/(theta+mu), and no e^-w lost against 1 when w is large
    return (m - k + m / mp.expm1(w)) / (m * (1 + m / t))


def _root(k: int, theta: float) -> mp.mpf:
    """mu > 0 with T(mu) = k (T increases from 1 at mu -> 0 to ~mu), by bisection in log mu."""
    t = mp.mpf(theta)
    lo, hi = mp.log(mp.mpf(10) ** -300), mp.log(mp.mpf(k))
    for _ in range(400):
        mid = (lo + hi) / 2
        if _t_mp(mp.exp(mid), t) < k:
            lo = mid
        else:
            hi = mid
    return mp.exp((lo + hi) / 2)


def _neighbours(root: mp.mpf) -> list[float]:
    """The float64 nearest ``root`` first, then its neighbours OFFSETS floats either side."""
    steps = [0] + [sign * off for off in OFFSETS if off for sign in (1, -1)]
    return step_floats(float(root), "float64", steps).tolist()


def _loguni(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


@cache
def _sets() -> dict[str, list[Point]]:
    rng = random.Random(1234)
    with mp.workdps(DPS):
        near = [(float(k), _neighbours(_root(k, th)), th) for k in ROOT_KS for th in ROOT_THETAS]
    roots = [(k, mu, th) for k, mus, th in near for mu in mus[1:] if 1e-30 <= mu <= 1e9]
    roots0 = [(k, mus[0], th) for k, mus, th in near if 1e-30 <= mus[0] <= 1e9]
    worst = [(WORST[0], mu, WORST[2]) for mu in _neighbours(mp.mpf(WORST[1]))]
    rand = [
        (float(round(_loguni(rng, 1, 1e7))), _loguni(rng, 1e-30, 1e9), _loguni(rng, 1e-12, 1e10))
        for _ in range(1500)
    ]
    tiny_mu = [
        (float(k), _loguni(rng, 1e-30, 1e-8), _loguni(rng, 1e-12, 1e10))
        for k in (1, 1, 2, 7, 1000)
        for _ in range(40)
    ]
    huge_theta = [
        (float(round(_loguni(rng, 1, 1e7))), _loguni(rng, 1e-30, 1e9), _loguni(rng, 1e6, 1e10))
        for _ in range(200)
    ]
    tiny_theta = [
        (float(round(_loguni(rng, 1, 1e7))), _loguni(rng, 1e-30, 1e9), _loguni(rng, 1e-12, 1e-4))
        for _ in range(200)
    ]
    # w near the branch points 1 and 40 (theta large: w ~ mu), k near T
    wedge = [
        (float(max(1, round(mu / -math.expm1(-mu)))), mu, 1e8)
        for mu in (0.999, 1.0, 1.001, 1.5, 39.99, 40.0, 40.01, 41.0, 700.0, 750.0)
    ]
    troots = _dtheta_roots()
    t_near = [(k, _step(m, o), th) for k, m, th in troots for o in TOFFSETS if abs(o) <= 3]
    t_far = [(k, _step(m, o), th) for k, m, th in troots for o in TOFFSETS if abs(o) > 3]
    t_worst = [(TWORST[0], _step(TWORST[1], o), TWORST[2]) for o in range(-20, 21)]
    t_rand = [
        (float(round(_loguni(rng, 1, 1e7))), _loguni(rng, 1e-30, 1e9), _loguni(rng, 1e-12, 16))
        for _ in range(1000)
    ] + [
        (float(rng.randint(1, 40)), _loguni(rng, 1e-30, 1e9), _loguni(rng, 1e-12, 16))
        for _ in range(500)
    ]
    return {
        "t_near": t_near,
        "t_far": t_far,
        "t_worst": t_worst,
        "t_rand": t_rand,
        "roots": roots,
        "roots0": roots0,
        "worst": worst,
        "random": rand,
        "tiny_mu": tiny_mu,
        "huge_theta": huge_theta,
        "tiny_theta": tiny_theta,
        "wedge": wedge,
    }


def _ulp_err(computed: torch.Tensor, refs: list[float]) -> list[float]:
    """float64 ulp errors (:func:`ztbench.core.metrics.ulp_error`) against mpmath references."""
    return ulp_error(computed.numpy(), np.array(refs, dtype=np.float64), "float64").tolist()


def _measure_grad(name: str, quantity: str) -> dict[str, list[float]]:
    """dd and kernel ulp errors and the cancellation flags of d_mu or d_theta on a set."""
    ref_fn, dd_fn, flag_fn, col = {
        "d_mu": (_dmu_ref, N.ztnb_dmu_dd, N.ztnb_dmu_cancellation, 1),
        "d_theta": (_dtheta_ref, N.ztnb_dtheta_dd, N.ztnb_dtheta_cancellation, 2),
    }[quantity]
    pts = _sets()[name]
    k, mu, th = (torch.tensor(c, dtype=torch.float64) for c in zip(*pts, strict=True))
    with mp.workdps(DPS):
        ref = [float(ref_fn(*p)) for p in pts]
    with mp.workdps(DPS + 30):  # certify: a higher precision rounds to the same float64
        assert ref == [float(ref_fn(*p)) for p in pts]
    g64 = ztnb_kernel(k, mu, th, True)[col]
    assert g64 is not None
    return {
        "dd": _ulp_err(dd_fn(k, mu, th), ref),
        "f64": _ulp_err(g64, ref),
        "flag": [float(f) for f in flag_fn(k, mu, th, g64).tolist()],
    }


@cache
def _measure_theta(name: str) -> dict[str, list[float]]:
    return _measure_grad(name, "d_theta")


TNAMES = ("t_near", "t_far", "t_worst", "t_rand")


@pytest.mark.parametrize("name", TNAMES)
def test_dtheta_accuracy(name: str) -> None:
    bound = DTHETA_ULP_MAX_NEAR if name == "t_near" else DTHETA_ULP_MAX
    assert max(_measure_theta(name)["dd"]) <= bound


@pytest.mark.parametrize("name", TNAMES)
def test_dtheta_flags_every_bad_float64_point(name: str) -> None:
    m = _measure_theta(name)
    pairs = list(zip(m["f64"], m["flag"], strict=True))
    missed = [i for i, (e, f) in enumerate(pairs) if e > 2 and not f]
    assert len(missed) <= 0.01 * len(pairs) + 1
    assert all(m["f64"][i] <= DTHETA_KERNEL_UNFLAGGED_MAX for i in missed)


def test_dtheta_sets_are_hard_for_float64() -> None:
    assert max(_measure_theta("t_near")["f64"]) > 1000
    assert max(_measure_theta("t_worst")["f64"]) > 1000


def test_dtheta_large_theta_is_finite_and_flagged_by_condition() -> None:
    """theta > 16 is covered too (tests/loss/test_dd_ztnb_value.py measures it against mpmath);
    the flag there follows the kernel's condition number: a benign point is not flagged."""
    one = torch.ones(2, dtype=torch.float64)
    out = N.ztnb_dtheta_dd(one, one, torch.tensor([2.0, 20.0], dtype=torch.float64))
    assert all(math.isfinite(v) for v in out.tolist())
    # k = 50, mu = 1, theta = 20: E = k/theta - (psi(k + theta) - psi(theta)) ~ 1.25
    # dominates (condition ~1.2)
    k5 = torch.full((2,), 50.0, dtype=torch.float64)
    th = torch.tensor([20.0, 20.0], dtype=torch.float64)
    _, _, d_theta = ztnb_kernel(k5, one, th, True)
    assert not N.ztnb_dtheta_cancellation(k5, one, th, d_theta).any()


@cache
def _measure(name: str) -> dict[str, list[float]]:
    return _measure_grad(name, "d_mu")


TOFFSETS = (0, 1, -1, 2, -2, 3, -3, 5, -5, 10, -10, 30, -30, 100, -100)
DTHETA_ULP_MAX = 8.0  # offsets >= 5 from a crossing, random sets (measured 5)
DTHETA_ULP_MAX_NEAR = 512.0  # within 3 ulp of a crossing (measured 127 theta <= 4, 392 <= 16)
DTHETA_KERNEL_UNFLAGGED_MAX = 4.0
TWORST = (25.0, 1e4, 0.03162277660168379)


def _dtheta_ref(k: float, mu: float, theta: float) -> mp.mpf:
    m, t = mp.mpf(mu), mp.mpf(theta)
    x = m / t
    s = mp.log1p(x) - x / (1 + x)
    return mp.digamma(t) - mp.digamma(k + t) + k / (t + m) + s / -mp.expm1(-t * mp.log1p(x))


def _step(v: float, off: int) -> float:
    for _ in range(abs(off)):
        v = math.nextafter(v, math.copysign(math.inf, off))
    return v


def _dtheta_roots() -> list[Point]:
    """Zero crossings of d_theta in mu: sign changes on a log grid, then vectorised
    bisection (geometric, then arithmetic) evaluated with ztnb_dtheta_dd."""
    f64 = torch.float64
    grid = torch.logspace(-30, 9, 300, dtype=f64)
    lo, hi, ks, ths = [], [], [], []
    for k in (1, 2, 5, 25, 1000, 10**5, 10**7):
        for th in (1e-9, 0.0316, 0.3, 1.0, 3.9, 8.0, 16.0):
            v = N.ztnb_dtheta_dd(torch.tensor(float(k), dtype=f64), grid, torch.tensor(th))
            ch = ((v[:-1] < 0) != (v[1:] < 0)).nonzero().squeeze(1).tolist()
            for i in ch:
                lo.append(grid[i].item())
                hi.append(grid[i + 1].item())
                ks.append(float(k))
                ths.append(th)
    a, b = torch.tensor(lo, dtype=f64), torch.tensor(hi, dtype=f64)
    k_t, t_t = torch.tensor(ks, dtype=f64), torch.tensor(ths, dtype=f64)
    sa = N.ztnb_dtheta_dd(k_t, a, t_t) < 0
    for it in range(200):
        m = torch.sqrt(a * b) if it < 100 else a + (b - a) / 2
        sm = N.ztnb_dtheta_dd(k_t, m, t_t) < 0
        a, b = torch.where(sm == sa, m, a), torch.where(sm == sa, b, m)
    return list(zip(ks, a.tolist(), ths, strict=True))


NAMES = ("roots", "roots0", "worst", "random", "tiny_mu", "huge_theta", "tiny_theta", "wedge")


@pytest.mark.parametrize("name", NAMES)
def test_dmu_accuracy(name: str) -> None:
    bound = DMU_ULP_MAX_AT_ROOT if name == "roots0" else DMU_ULP_MAX
    assert max(_measure(name)["dd"]) <= bound


@pytest.mark.parametrize("name", NAMES)
def test_cancellation_flags_every_bad_float64_point(name: str) -> None:
    """Every point where the kernel is > 2 ulp off is flagged, except a few (< 1%) where
    nothing cancels and the kernel's own roundings reach 3-6 ulp."""
    m = _measure(name)
    pairs = list(zip(m["f64"], m["flag"], strict=True))
    missed = [i for i, (e, f) in enumerate(pairs) if e > 2 and not f]
    assert len(missed) <= 0.01 * len(pairs) + 1
    assert all(m["f64"][i] <= KERNEL_UNFLAGGED_MAX for i in missed), [
        (_sets()[name][i], m["f64"][i]) for i in missed
    ]


def test_root_sets_are_hard_for_float64() -> None:
    m = _measure("roots")
    assert max(m["f64"]) > 1000
    assert max(_measure("worst")["f64"]) > 1000


def test_log1p_and_one_minus_exp() -> None:
    z = torch.zeros(6, dtype=torch.float64)
    xs = [1e-40, 1e-17, 2.0**-30, 0.3, 7.0, 1e21]
    lx = A.dd_log1p((torch.tensor(xs, dtype=torch.float64), z))
    ws = [1e-30, 1e-9, 0.01, 0.5, 0.999, 1.0]
    om = A.dd_one_minus_exp_neg((torch.tensor(ws, dtype=torch.float64), z))
    with mp.workdps(DPS):
        for i, (xi, wi) in enumerate(zip(xs, ws, strict=True)):
            r = mp.log1p(xi)
            assert abs(mp.mpf(lx[0][i].item()) + lx[1][i].item() - r) <= mp.mpf(2) ** -103 * r
            r = -mp.expm1(-mp.mpf(wi))
            assert abs(mp.mpf(om[0][i].item()) + om[1][i].item() - r) <= mp.mpf(2) ** -100 * r


def test_shapes_and_broadcast() -> None:
    k = torch.tensor([[2.0], [5.0]], dtype=torch.float64)
    mu = torch.tensor([0.5, 3.0, 50.0], dtype=torch.float64)
    out = N.ztnb_dmu_dd(k, mu, torch.tensor(10.0, dtype=torch.float64))
    assert out.shape == (2, 3)
    assert out.dtype == torch.float64


def main() -> None:  # pragma: no cover - measurement helper
    for name in TNAMES:
        m = _measure_theta(name)
        bad = [e > 2 for e in m["f64"]]
        print(
            f"{name:11s} n={len(m['dd']):5d} dd max {max(m['dd']):7.2f} ulp | float64 max "
            f"{max(m['f64']):9.1f} ulp, >2 ulp {sum(bad)}, flagged {int(sum(m['flag']))}"
        )
    for name in NAMES:
        m = _measure(name)
        bad = [e > 2 for e in m["f64"]]
        print(
            f"{name:11s} n={len(m['dd']):5d} dd max {max(m['dd']):7.2f} ulp | float64 max "
            f"{max(m['f64']):9.1f} ulp, >2 ulp {sum(bad)}, flagged {int(sum(m['flag']))}"
        )


if __name__ == "__main__":  # pragma: no cover
    main()


def test_dmu_theta_one_is_the_closed_form() -> None:
    # theta = 1: d_mu = (1 + mu - k) / (mu (1 + mu)) exactly, zero at mu = k - 1; exact
    # rational arithmetic in mpmath (no log/exp), at mu = k - 1 and its float64 neighbours
    rows = []
    for k in (2.0, 5.0, 100.0, 1e6):
        m = k - 1.0
        for mu in (m, math.nextafter(m, 0.0), math.nextafter(m, math.inf), m * (1 + 2**-40)):
            rows.append((k, mu))
    k = torch.tensor([r[0] for r in rows], dtype=torch.float64)
    mu = torch.tensor([r[1] for r in rows], dtype=torch.float64)
    got = N.ztnb_dmu_dd(k, mu, torch.ones_like(mu)).tolist()
    with mp.workdps(60):
        for (kk, mm), g in zip(rows, got, strict=True):
            ref = (1 + mp.mpf(mm) - kk) / (mp.mpf(mm) * (1 + mp.mpf(mm)))
            if ref == 0:
                assert g == 0.0
            else:
                assert abs(mp.mpf(g) - ref) <= 2 * mp.mpf(math.ulp(float(ref))), (kk, mm, g)
