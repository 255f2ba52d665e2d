"""Peer wrappers (statsmodels, SciPy, R actuar) agree with the reference in benign regions;
they run on CPU float64 only and report "no gradient" (empty grads), not an error."""

from __future__ import annotations

import numpy as np
import pytest

from ztbench.candidates import get_candidate, list_candidates
from ztbench.candidates.peers import r_actuar_status
from ztbench.measure.evaluate import evaluate
from ztbench.reference import compute_references

R_OK, R_REASON = r_actuar_status()
needs_r = pytest.mark.skipif(not R_OK, reason=f"R actuar peer unavailable: {R_REASON}")


def benign(family: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    n = 200
    k = rng.integers(1, 60, n).astype(np.float64)
    if family == "ztpoisson":
        return {"k": k, "lam": np.exp(rng.uniform(np.log(0.05), np.log(80.0), n))}
    return {
        "k": k,
        "mu": np.exp(rng.uniform(np.log(0.05), np.log(80.0), n)),
        "theta": np.exp(rng.uniform(np.log(0.1), np.log(50.0), n)),
    }


def check(cid: str) -> None:
    cand = get_candidate(cid)
    pts = benign(cand.family)
    ref = compute_references(cand.family, pts, cache_dir=False, progress=False)
    ev = evaluate(cand, pts, "float64")
    assert ev.status == "ok", ev.reason
    assert ev.grads == {}
    assert cand.form == "full"
    np.testing.assert_allclose(ev.value, ref["nll"].to_numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cid", ["ztpoisson/statsmodels", "ztnb/statsmodels"])
def test_statsmodels_agrees_with_reference(cid: str) -> None:
    check(cid)


@pytest.mark.parametrize("cid", ["ztpoisson/scipy", "ztnb/scipy"])
def test_scipy_agrees_with_reference(cid: str) -> None:
    check(cid)


@needs_r
@pytest.mark.needs_r
@pytest.mark.parametrize("cid", ["ztpoisson/r-actuar", "ztnb/r-actuar"])
def test_r_actuar_agrees_with_reference(cid: str) -> None:
    check(cid)


@needs_r
@pytest.mark.needs_r
def test_r_actuar_one_batch_and_exact_transfer() -> None:
    """Many points in one call (one Rscript process); the binary transfer keeps inputs
    exact, so a point that needs all 17 digits is evaluated at itself."""
    lam = np.array([0.1 + 2.0**-50, 1.0, 3.0])
    ev = evaluate(get_candidate("ztpoisson/r-actuar"), {"k": np.ones(3), "lam": lam}, "float64")
    ref = compute_references("ztpoisson", {"k": np.ones(3), "lam": lam}, cache_dir=False)
    np.testing.assert_allclose(ev.value, ref["nll"].to_numpy(), rtol=1e-14)
    empty = get_candidate("ztnb/r-actuar").fn(np.zeros(0), np.zeros(0), np.zeros(0))
    assert empty.shape == (0,)


def test_r_actuar_absent_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    from ztbench.candidates import peers

    monkeypatch.setattr(peers, "r_actuar_status", lambda: (False, "Rscript not found"))
    ev = evaluate(get_candidate("ztnb/r-actuar"), benign("ztnb"), "float64")
    assert ev.status == "unsupported" and "Rscript" in ev.reason


@pytest.mark.parametrize(
    "cand", [c for c in list_candidates() if c.kind == "peer"], ids=lambda c: c.id
)
def test_peers_float64_cpu_eager_only(cand) -> None:
    pts = {k: v[:3] for k, v in benign(cand.family).items()}
    for kw in (
        {"dtype": "float32"},
        {"dtype": "float64", "device": "cuda"},
        {"dtype": "float64", "mode": "compile"},
    ):
        ev = evaluate(cand, pts, **kw)
        assert ev.status == "unsupported" and ev.reason
