"""Candidates: registry, agreement with the reference on benign points, dtype support,
finite values and gradients of the stable candidates over the whole domain, the
log1mexp-where NaN-gradient hazard, determinism, and evaluate()'s contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ztbench.candidates import (
    Candidate,
    Unsupported,
    get_candidate,
    list_candidates,
    select_candidates,
)
from ztbench.core.dtypes import round_to
from ztbench.loss import primitives as P
from ztbench.measure.evaluate import candidate_inputs, evaluate
from ztbench.reference import compute_references

REQUIRED = {
    "ztpoisson": [
        "naive",
        "published",
        "expm1",
        "branch-free",
        "log1mexp-where",
        "stable",
        "threshold",
        "torch-distributions",
        "statsmodels",
        "scipy",
        "r-actuar",
    ],
    "ztnb": [
        "naive",
        "published-code",
        "published-code-2024-10",
        "published-text",
        "softplus",
        "stable",
        "threshold-sum",
        "threshold-w",
        "torch-distributions",
        "scvi-style",
        "statsmodels",
        "scipy",
        "r-actuar",
    ],
}
TORCH = [c for c in list_candidates() if c.kind == "torch"]


def refs(family: str, points: dict[str, np.ndarray], log_params: tuple[str, ...] = ()):
    return compute_references(family, points, cache_dir=False, progress=False,
                              log_params=log_params)  # fmt: skip


def benign(family: str) -> dict[str, np.ndarray]:
    """Points where every candidate computes the exact function (no rule switches,
    no overflow): lam < 10; mu, theta <= 4 (so mu + theta <= 8, (mu-1)(theta-1) <= 9)."""
    if family == "ztpoisson":
        k, lam = np.meshgrid([1.0, 2.0, 5.0, 20.0], [0.3, 1.0, 3.0, 7.0])
        return {"k": k.ravel(), "lam": lam.ravel()}
    k, mu, theta = np.meshgrid([1.0, 2.0, 5.0, 20.0], [0.5, 2.0, 4.0], [0.5, 1.5, 4.0])
    return {"k": k.ravel(), "mu": mu.ravel(), "theta": theta.ravel()}


# --- registry ---------------------------------------------------------------------------


def test_required_ids_registered_with_metadata() -> None:
    for family, names in REQUIRED.items():
        ids = [c.id for c in list_candidates(family)]
        for name in names:
            assert f"{family}/{name}" in ids
    for c in list_candidates():
        assert isinstance(c, Candidate)
        assert c.family in REQUIRED and c.id.startswith(c.family + "/")
        assert c.form in ("full", "loss") and c.kind in ("torch", "peer")
        assert c.description and c.provenance and callable(c.fn)
        expected = (
            ("float64",) if c.kind == "peer" else ("float64", "float32", "bfloat16", "float16")
        )
        assert c.dtypes == expected
    assert get_candidate("ztpoisson/threshold").published_thresholds == (10.0,)
    assert get_candidate("ztnb/threshold-sum").published_thresholds == (15.0,)
    assert get_candidate("ztnb/threshold-w").threshold is not None
    assert get_candidate("ztnb/stable").threshold is None


def test_registry_order_and_selection() -> None:
    assert [c.id for c in list_candidates()] == [c.id for c in list_candidates()]
    assert all(c.family == "ztnb" for c in list_candidates("ztnb"))
    sel = select_candidates(["ztnb/*", "ztpoisson/stable", "ztnb/stable"])
    assert [c.id for c in sel] == ["ztpoisson/stable"] + [c.id for c in list_candidates("ztnb")]
    with pytest.raises(ValueError, match="nope/\\*"):
        select_candidates(["ztnb/stable", "nope/*"])
    with pytest.raises(ValueError, match="known: ztpoisson/naive"):
        get_candidate("ztnb/missing")


def test_forms_follow_lgamma_k_plus_one() -> None:
    """torch.distributions / scvi log-pmfs include lgamma(k+1): full; the textbook formulas do
    not: loss; peers compute log-pmfs: full; the threshold families give the full NLL (their
    rule's cost is measured in ulps of -log P >= 0); the shipped API's full=True forms: full."""
    full = {"ztpoisson/torch-distributions", "ztnb/torch-distributions", "ztnb/scvi-style",
            "ztpoisson/ztbench-full", "ztnb/ztbench-full"}
    for c in list_candidates():
        want = "full" if (c.id in full or c.kind == "peer" or c.is_threshold_family) else "loss"
        assert c.form == want, c.id


# --- agreement with the reference on benign points --------------------------------------


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-6), ("float32", 1e-4)])
@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_benign_agreement_with_reference(family: str, dtype: str, rtol: float) -> None:
    pts = {k: round_to(v, dtype) for k, v in benign(family).items()}
    ref = refs(family, pts)
    for c in list_candidates(family):
        if c.kind != "torch":
            continue  # peers: tests/candidates/test_peers.py
        own = candidate_inputs(c, pts, dtype)  # log_theta for a candidate taking log theta
        r = ref if not c.log_params else refs(family, own, c.log_params)
        ev = evaluate(c, own, dtype)
        assert ev.status == "ok", (c.id, ev.reason)
        want = r["nll" if c.form == "full" else "nll_loss"].to_numpy()
        np.testing.assert_allclose(ev.value, want, rtol=rtol, atol=rtol, err_msg=c.id)
        assert set(ev.grads) == set(c.gradients)
        for g, got in ev.grads.items():
            np.testing.assert_allclose(got, r[g].to_numpy(), rtol=rtol, atol=rtol, err_msg=c.id)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("cand", TORCH, ids=lambda c: c.id)
def test_low_precision_runs_in_dtype(cand: Candidate, dtype: str) -> None:
    """Every torch candidate runs in bfloat16/float16 on CPU (torch 2.13 has every kernel
    used) and returns that dtype; on benign points it is close to the reference."""
    pts = {k: round_to(v, dtype) for k, v in benign(cand.family).items()}
    tdt = getattr(torch, dtype)
    tensors = [torch.tensor(pts[c], dtype=tdt) for c in pts]
    out = cand.fn(*tensors)
    assert out.dtype == tdt and out.shape == tensors[0].shape
    ev = evaluate(cand, pts, dtype)
    assert ev.status == "ok", ev.reason
    want = refs(cand.family, pts)["nll" if cand.form == "full" else "nll_loss"].to_numpy()
    # low precision: a few ulp of the large terms (~ k log ... up to ~100) at most
    assert np.all(np.abs(ev.value - want) <= 0.05 * np.maximum(np.abs(want), 10.0)), cand.id


# --- the whole domain: stable candidates finite, hazards documented ----------------------

# Domain ends exactly representable in float32 (2^-99 ~ 1.6e-30 and 2^-39 ~ 1.8e-12 are the
# first powers of two inside the domain; 1e9, 1e10 and 1e7 are exact in float32).
K_GRID = np.array([1.0, 2.0, 3.0, 10.0, 1e3, 1e5, 1e7])
LAM_GRID = np.concatenate([np.geomspace(2.0**-99, 1e9, 24)[:-1], [1e9, np.log(2.0), 1.0]])
THETA_GRID = np.concatenate([np.geomspace(2.0**-39, 1e10, 16)[:-1], [1e10, 10.0, 14.0, 15.0]])


def domain_grid(family: str) -> dict[str, np.ndarray]:
    if family == "ztpoisson":
        k, lam = np.meshgrid(K_GRID, LAM_GRID)
        return {"k": k.ravel(), "lam": lam.ravel()}
    k, mu, theta = np.meshgrid(K_GRID, LAM_GRID, THETA_GRID)
    return {"k": k.ravel(), "mu": mu.ravel(), "theta": theta.ravel()}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "cid",
    [
        "ztpoisson/stable",
        "ztpoisson/threshold",
        "ztnb/stable",
        "ztnb/threshold-sum",
        "ztnb/threshold-w",
    ],
)
def test_stable_finite_over_whole_domain(cid: str, dtype: str) -> None:
    cand = get_candidate(cid)
    pts = {k: round_to(v, dtype) for k, v in domain_grid(cand.family).items()}
    ev = evaluate(cand, pts, dtype)
    assert ev.status == "ok"
    assert np.isfinite(ev.value).all(), cid
    for g, arr in ev.grads.items():
        bad = ~np.isfinite(arr)
        assert not bad.any(), (cid, g, {c: pts[c][bad][:3] for c in pts})


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_stable_candidates_error_bounded_by_term_size(dtype: str) -> None:
    """Over the whole grid the stable forms' absolute error is a few ulp of the size of the
    terms they add (k |log mu| + k |log theta| + |NLL| + 1), i.e. only the cancellation
    between those terms remains (documented limits)."""
    eps = float(np.finfo(dtype).eps)
    for family in ("ztpoisson", "ztnb"):
        cand = get_candidate(f"{family}/stable")
        pts = {k: round_to(v, dtype) for k, v in domain_grid(family).items()}
        ref = refs(family, pts)
        ev = evaluate(cand, pts, dtype)
        want = ref["nll_loss"].to_numpy()
        keep = ref["certified"].to_numpy()
        logs = sum(np.abs(np.log(pts[c])) for c in pts if c != "k")
        scale = pts["k"] * (logs + 1.0) + np.abs(want) + 1.0
        err = np.abs(ev.value - want)[keep] / scale[keep]
        assert np.max(err) < 64 * eps, (family, float(np.max(err) / eps))
        rel = np.abs(ev.value - want)[keep] / np.maximum(np.abs(want[keep]), 1.0)
        assert np.median(rel) < 4 * eps


def test_ztpoisson_stable_exact_at_small_lambda_k1() -> None:
    """k = 1, lam -> 0: loss ~ lam/2 and gradient ~ 1/2 come out with full relative accuracy
    (the branch-free form returns 0 and a gradient of 0 there)."""
    lam = np.array([1e-30, 1e-12, 1e-5, 0.1])
    pts = {"k": np.ones_like(lam), "lam": lam}
    ref = refs("ztpoisson", pts)
    ev = evaluate(get_candidate("ztpoisson/stable"), pts, "float64")
    np.testing.assert_allclose(ev.value, ref["nll_loss"], rtol=4e-16)
    np.testing.assert_allclose(ev.grads["d_lam"], ref["d_lam"], rtol=4e-16)


def test_log1mexp_where_nan_gradient_hazard() -> None:
    """Documents the hazard: for lam where exp(-lam) rounds to 1 the untaken branch
    log1p(-exp(-lam)) has derivative 1/0 and torch.where back-propagates 0 * inf = NaN,
    although the value is right; the safe-input stable form has a finite gradient there."""
    lam = np.array([1e-30, 1e-20, 1e-17])
    pts = {"k": np.full(3, 2.0), "lam": lam}
    ref = refs("ztpoisson", pts)
    bad = evaluate(get_candidate("ztpoisson/log1mexp-where"), pts, "float64")
    np.testing.assert_allclose(bad.value, ref["nll_loss"], rtol=1e-15)
    assert np.isnan(bad.grads["d_lam"]).all()
    good = evaluate(get_candidate("ztpoisson/stable"), pts, "float64")
    np.testing.assert_allclose(good.grads["d_lam"], ref["d_lam"], rtol=1e-15)
    # float32: the hazard starts where exp(-lam) rounds to 1, lam < ~3e-8
    p32 = {"k": np.full(2, 2.0), "lam": round_to(np.array([1e-9, 1e-3]), "float32")}
    ev = evaluate(get_candidate("ztpoisson/log1mexp-where"), p32, "float32")
    assert np.isnan(ev.grads["d_lam"][0]) and np.isfinite(ev.grads["d_lam"][1])


def test_k_zero_is_infinite_for_stable() -> None:
    ev = evaluate(
        get_candidate("ztnb/stable"), {"k": [0.0], "mu": [1.0], "theta": [2.0]}, "float64"
    )
    assert ev.value[0] == np.inf
    ev = evaluate(get_candidate("ztpoisson/stable"), {"k": [0.0], "lam": [1.0]}, "float64")
    assert ev.value[0] == np.inf


# --- primitives -------------------------------------------------------------------------


def test_primitives_against_mpmath() -> None:
    import mpmath

    x = np.array([1e-300, 1e-30, 1e-10, 1e-4, 0.3, 0.5, 0.69, 0.7, 1.0, 2.0, 30.0, 800.0])
    t = torch.tensor(x, dtype=torch.float64)

    def close(got: torch.Tensor, f, rtol: float = 4e-16, atol: float = 0.0) -> None:
        with mpmath.workdps(400):  # x down to 1e-300: series terms need the digits
            want = np.array([float(f(mpmath.mpf(float(v)))) for v in x])
        np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=atol)

    close(P.log1mexp(t), lambda v: mpmath.log(-mpmath.expm1(-v)))
    # zero crossing at log 2: absolute accuracy there (an ulp of log 2)
    close(P.log_expm1(t), lambda v: mpmath.log(mpmath.expm1(v)), atol=1.2e-16)
    close(P.softplus(t), lambda v: mpmath.log1p(mpmath.exp(v)))
    close(P.softplus(-t), lambda v: mpmath.log1p(mpmath.exp(-v)))
    close(P.log1pmx(t), lambda v: mpmath.log1p(v) - v, rtol=1e-15)
    close(P.log1p_over_x(t), lambda v: mpmath.log1p(v) / v)
    close(P.log_expm1_over_x(t), lambda v: mpmath.log(mpmath.expm1(v) / v), rtol=1e-15)
    k = torch.tensor([1.0, 3.0, 1e3, 1e7, 1.0])
    th = torch.tensor([1e10, 1e9, 12.0, 1e4, 9.5], dtype=torch.float64)
    got = P.lgamma_difference(k.double(), th).numpy()
    with mpmath.workdps(60):
        want = [
            float(mpmath.loggamma(mpmath.mpf(a) + mpmath.mpf(b)) - mpmath.loggamma(mpmath.mpf(b)))
            for a, b in zip(k.tolist(), th.tolist(), strict=True)
        ]
    np.testing.assert_allclose(got, want, rtol=1e-15)


def test_primitive_gradients_finite_at_edges() -> None:
    """Safe-input where: no NaN/inf gradient from the untaken branch at either end."""
    x = torch.tensor(
        [1e-300, 1e-30, 0.69, 0.7, 1.0, 50.0, 800.0, 1e300], dtype=torch.float64, requires_grad=True
    )
    for f in (P.log1mexp, P.log_expm1, P.softplus, P.log1p_over_x, P.log_expm1_over_x):
        (g,) = torch.autograd.grad(f(x).sum(), x)
        assert torch.isfinite(g).all(), f.__name__
    (g,) = torch.autograd.grad(P.softplus(-x).sum(), x)
    assert torch.isfinite(g).all()


# --- evaluate() contract ------------------------------------------------------------------


def test_evaluate_deterministic_and_chunk_independent(monkeypatch: pytest.MonkeyPatch) -> None:
    from ztbench.measure import evaluate as ev_mod

    pts = {k: round_to(v, "float32") for k, v in domain_grid("ztnb").items()}
    cand = get_candidate("ztnb/stable")
    a = evaluate(cand, pts, "float32")
    b = evaluate(cand, pts, "float32")
    assert a.value.tobytes() == b.value.tobytes()
    assert all(a.grads[g].tobytes() == b.grads[g].tobytes() for g in a.grads)
    monkeypatch.setattr(ev_mod, "CHUNK_POINTS", 1000)
    c = evaluate(cand, pts, "float32")
    np.testing.assert_array_equal(c.value, a.value)


def test_evaluate_unsupported_is_a_result() -> None:
    pts = {"k": np.array([1.0]), "lam": np.array([1.0])}
    peer = get_candidate("ztpoisson/scipy")
    ev = evaluate(peer, pts, "float32")
    assert ev.status == "unsupported" and "float64" in ev.reason
    ev = evaluate(peer, pts, "float64", device="cuda")
    assert ev.status == "unsupported"
    ok = evaluate(peer, pts, "float64")
    assert ok.status == "ok" and ok.grads == {}
    if not torch.cuda.is_available():
        ev = evaluate(get_candidate("ztpoisson/stable"), pts, "float32", device="cuda")
        assert ev.status == "unsupported" and "CUDA" in ev.reason


def test_evaluate_reports_unsupported_raised_by_candidate() -> None:
    def refuse(k, lam, threshold=None):
        raise Unsupported("no kernel for this test")

    fake = Candidate(
        "ztpoisson/fake", "ztpoisson", "loss", "d.", "p.", "torch", ("float64",), refuse
    )
    ev = evaluate(fake, {"k": np.array([1.0]), "lam": np.array([1.0])}, "float64")
    assert ev.status == "unsupported" and ev.reason == "no kernel for this test"
    assert np.isnan(ev.value).all()
    missing = Candidate(
        "ztpoisson/fake2",
        "ztpoisson",
        "loss",
        "d.",
        "p.",
        "torch",
        ("float64",),
        lambda k, lam, threshold=None: torch.special.zeta(lam.to(torch.complex128), lam),
    )
    ev = evaluate(missing, {"k": np.array([1.0]), "lam": np.array([1.0])}, "float64")
    assert ev.status == "unsupported" and "kernel" in ev.reason


def test_evaluate_threshold_argument() -> None:
    pts = {"k": np.array([2.0]), "lam": np.array([12.0])}
    th = get_candidate("ztpoisson/threshold")
    approx = evaluate(th, pts, "float64").value[0]
    exact = evaluate(th, pts, "float64", threshold=20.0).value[0]
    # full NLL: lgamma(3) = log 2 added
    assert approx == pytest.approx(12.0 - 2.0 * np.log(12.0) + np.log(2.0), rel=1e-15)
    assert exact - approx == pytest.approx(np.log1p(-np.exp(-12.0)), rel=1e-12)
    with pytest.raises(ValueError, match="no threshold"):
        evaluate(get_candidate("ztpoisson/stable"), pts, "float64", threshold=3.0)


def test_naive_float64_is_naive_in_double_rounded_once() -> None:
    # ztpoisson: lam = 100 overflows exp(lam) in float32 but not in float64
    k = torch.tensor([1.0, 3.0, 50.0])
    lam = torch.tensor([0.5, 4.0, 100.0], requires_grad=True)
    c = get_candidate("ztpoisson/naive-float64")
    out = c.fn(k, lam)
    assert out.dtype == torch.float32
    want = get_candidate("ztpoisson/naive").fn(k.double(), lam.detach().double()).float()
    assert torch.equal(out, want)
    assert torch.isinf(get_candidate("ztpoisson/naive").fn(k, lam.detach())[2])
    (g,) = torch.autograd.grad(out.sum(), lam)
    assert g.dtype == torch.float32
    # d/dlam = -k/lam + 1/(1 - e^-lam)
    lam64 = lam.detach().double()
    torch.testing.assert_close(g.double(), -k.double() / lam64 + 1 / (1 - torch.exp(-lam64)),
                               rtol=1e-6, atol=0)  # fmt: skip
    # ztnb: exactly the float64 naive rounded to bfloat16
    mu = torch.tensor([0.5, 30.0], dtype=torch.bfloat16)
    th = torch.tensor([2.0, 0.25], dtype=torch.bfloat16)
    kk = torch.tensor([1.0, 7.0], dtype=torch.bfloat16)
    out = get_candidate("ztnb/naive-float64").fn(kk, mu, th)
    want = get_candidate("ztnb/naive").fn(kk.double(), mu.double(), th.double())
    assert out.dtype == torch.bfloat16 and torch.equal(out, want.to(torch.bfloat16))
