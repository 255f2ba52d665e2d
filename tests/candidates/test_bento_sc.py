"""The transcriptions of the published code match the real package (bento-sc 0.0.8) bit for
bit, value and gradients, in float64, float32 and bfloat16, over a grid that crosses both
of its ZTNB conditions, both clamps, the 1e-8 (tiny mu and theta) and the ZTP switch; and
the package's own candidates give the package's numbers (or "unsupported" without it)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from ztbench.candidates import bento, get_candidate
from ztbench.core import rules
from ztbench.measure.evaluate import evaluate

needs_bento = pytest.mark.skipif(not bento.available(), reason="bento-sc not installed")
DTYPES = (torch.float64, torch.float32, torch.bfloat16)
_INT = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16}


def _near(x: float) -> list[float]:
    return [float(np.nextafter(x, -np.inf)), x, float(np.nextafter(x, np.inf))]


def _ztnb_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k, mu, theta) crossing the two conditions, the clamps at 15 and the 1e-8."""
    mus = [1e-30, 1e-9, 1e-8, 1e-3, 0.5, 1.0, 1.0 + 1e-8, 1.5, 2.0, 5.0, 7.5, 14.0, 14.99,
           15.0, 16.0, 100.0, 1e7]  # fmt: skip
    thetas = [1e-12, 1e-9, 1e-8, 1e-3, 0.5, 1.0, 3.5, 7.5, 10.0, 13.9, 14.0, 14.5, 15.0,
              15.5, 20.0, 1e3, 1e6]  # fmt: skip
    rows = [(m, t) for m, t in itertools.product(mus, thetas)]
    for m in (0.5, 1.0, 2.0, 7.5, 14.0):  # on and around mu + theta = 15
        rows += [(m, t) for t in _near(rules.sum_curve_theta(m))]
    for m in (1.5, 2.0, 3.0, 6.0, 11.0):  # on and around (mu - 1 + 1e-8)(theta + 1e-8) = 15
        rows += [(m, t) for t in _near(rules.pair_curve_theta(m))]
    pm = np.array(rows)
    ks = np.array([1.0, 2.0, 7.0, 100.0])
    k = np.repeat(ks, len(pm))
    return k, np.tile(pm[:, 0], len(ks)), np.tile(pm[:, 1], len(ks))


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """True where a and b have identical bits, or are both NaN."""
    assert a.dtype == b.dtype and a.shape == b.shape
    return (a.view(_INT[a.dtype]) == b.view(_INT[b.dtype])) | (a.isnan() & b.isnan())


def _run(fn, k: torch.Tensor, *params: torch.Tensor):  # type: ignore[no-untyped-def]
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    out = fn(k, *leaves)
    grads = torch.autograd.grad(out.sum(), leaves)
    return out.detach(), grads


@needs_bento
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ztnb_published_code_matches_the_package_bit_for_bit(dtype: torch.dtype) -> None:
    k, mu, theta = _ztnb_grid()
    kt = torch.tensor(k, dtype=torch.float64).to(dtype)
    mt = torch.tensor(mu, dtype=torch.float64).to(dtype)
    lt = torch.tensor(np.log(theta), dtype=torch.float64).to(dtype)
    mine, gm = _run(get_candidate("ztnb/published-code").fn, kt, mt, lt)
    pkg, gp = _run(bento.ztnb_bento, kt, mt, lt)
    bad = ~_same_bits(mine, pkg)
    assert not bad.any(), (f"{int(bad.sum())} of {len(k)} values differ, first at "
                           f"k={k[bad][0]}, mu={mu[bad][0]}, theta={theta[bad][0]}")  # fmt: skip
    for name, a, b in zip(("d_mu", "d_log_theta"), gm, gp, strict=True):
        assert _same_bits(a, b).all(), f"{name}: {int((~_same_bits(a, b)).sum())} differ"
    # the grid really crosses what it must: both conditions, each alone, neither
    m2 = mt + torch.finfo(dtype).tiny
    t2 = (lt + torch.finfo(dtype).tiny).exp()
    pair = (m2 - 1 + rules.EPS) * (t2 + rules.EPS) > 15
    total = m2 + t2 > 15
    assert (pair & ~total).any() and (total & ~pair).any() and (~pair & ~total).any()
    assert ((t2 > 15) & ~pair & ~total).sum() == 0  # theta > 15 always approximates
    assert (t2 < 1e-6).any() and (m2 < 1e-6).any()  # where the 1e-8 decides


@needs_bento
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ztpoisson_published_matches_the_package_bit_for_bit(dtype: torch.dtype) -> None:
    lam = np.array([1e-30, 1e-9, 1e-8, 1e-3, 0.5, 1.0, 3.0, *_near(10.0), 10.5, 25.0, 88.0,
                    1e3, 1e7])  # fmt: skip
    k = np.repeat([1.0, 2.0, 7.0, 1000.0], len(lam))
    lam = np.tile(lam, 4)
    kt = torch.tensor(k, dtype=torch.float64).to(dtype)
    lt = torch.tensor(lam, dtype=torch.float64).to(dtype)
    mine, gm = _run(get_candidate("ztpoisson/published").fn, kt, lt)
    pkg, gp = _run(bento.ztpoisson_bento, kt, lt)
    assert _same_bits(mine, pkg).all()
    assert _same_bits(gm[0], gp[0]).all()


@needs_bento
def test_a_point_the_october_2024_rule_gets_wrong() -> None:
    """k = 1, mu = 6, theta = 3.5: the package gives 2.7016, the October 2024 rule 2.6708."""
    pts = {"k": np.array([1.0]), "mu": np.array([6.0]), "theta": np.array([3.5])}
    pkg = evaluate(get_candidate("ztnb/bento-sc"), {"k": pts["k"], "mu": pts["mu"],
                   "log_theta": np.log(pts["theta"])}, "float64")  # fmt: skip
    old = evaluate(get_candidate("ztnb/published-code-2024-10"), pts, "float64")
    assert abs(pkg.value[0] - 2.7016) < 1e-4
    assert abs(old.value[0] - 2.6708) < 1e-4
    assert set(pkg.grads) == {"d_mu", "d_log_theta"}


def test_rows_read_unsupported_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    bento._losses.cache_clear()
    monkeypatch.setitem(sys.modules, "bento_sc", None)  # import bento_sc now fails
    try:
        for cid, pts in (
            ("ztpoisson/bento-sc", {"k": np.ones(2), "lam": np.array([0.5, 20.0])}),
            ("ztnb/bento-sc", {"k": np.ones(2), "mu": np.ones(2), "log_theta": np.zeros(2)}),
        ):
            ev = evaluate(get_candidate(cid), pts, "float32")
            assert ev.status == "unsupported" and ev.reason == "bento-sc not installed"
    finally:
        bento._losses.cache_clear()


def test_published_code_independently_in_numpy() -> None:
    """ztnb/published-code against the package's formula written out in numpy (float64,
    lgamma in float32), without the package: both branches, the clamp and the 1e-8."""
    k = np.array([1.0, 2.0, 3.0, 1.0, 2.0])
    mu = np.array([6.0, 1.5, 0.5, 1e-12, 20.0])
    theta = np.array([3.5, 10.0, 16.0, 1e-12, 2.0])  # row 2: theta clamped at 15
    lt = np.log(theta)
    ev = evaluate(get_candidate("ztnb/published-code"), {"k": k, "mu": mu, "log_theta": lt},
                  "float64")  # fmt: skip
    tiny = np.finfo(np.float64).tiny
    lt2, m2 = lt + tiny, mu + tiny
    th = np.exp(lt2)

    def g(z):  # type: ignore[no-untyped-def]
        return torch.lgamma(torch.tensor(z, dtype=torch.float32)).double().numpy()

    base = g(th) - g(k + th) + k * np.log(th + m2) - th * lt2 - k * np.log(m2)
    approx = ((m2 - 1 + 1e-8) * (th + 1e-8) > 15) | (m2 + th > 15)
    thc = np.minimum(th, 15.0)
    exact = np.log(np.minimum(th + m2, 15.0) ** thc - thc**thc + 1e-8)
    want = base + np.where(approx, th * np.log(th + m2), exact)
    assert approx.tolist() == [True, False, True, False, True]
    np.testing.assert_allclose(ev.value, want, rtol=1e-13)
    # mu = theta = 1e-12: the 1e-8 inside the log dominates (against 2^t - 1 ~ 7e-13)
    assert abs(exact[3] - math.log(1e-8)) < 1e-4
