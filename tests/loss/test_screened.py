"""ztbench.loss.screened: the float32 fast path (plain formula in float64, kept where its
error bound certifies it).

- The error model of the bound: torch's float64 log, log1p, 1 - e^-x (by tanh or exp),
  lgamma and digamma measured against mpmath, well inside C_ULPS units of u times the
  magnitude the bound gives each term.
- The float32 loss (which takes the fast path) against certified arb references on
  realistic single-cell inputs and at random points over the whole domain: value and
  gradients within 1 ulp (the bound promises 0.5 + 1/8 for the value and the
  derivative, plus one rounding of the gradient product), far inside the goals.
- The fast path is taken (nearly every realistic element certified) and agrees with
  the careful kernel where it is not.
- The certificates themselves: every element the ZTP chunk-wide bound or the
  element-wise tests accept is within 2^-28 relative of the arb reference, in float64,
  before any rounding to float32.
- Under torch.compile (inductor's fused code, not eager's operators) the float32 loss
  keeps the same guarantee against arb.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch

from ztbench import zt_negbin_nll, zt_poisson_nll
from ztbench.core.metrics import ulp_error
from ztbench.loss import screened as S
from ztbench.reference import compute_references

U = 2.0**-53


def _max_units(fn, ref, xs: np.ndarray, extra) -> float:  # type: ignore[no-untyped-def]
    """max |fn(x) - ref(x)| / (u m), m = |ref(x)| + extra(x) (a float or a function of x)."""
    got = fn(torch.tensor(xs, dtype=torch.float64)).numpy()
    mpmath.mp.prec = 120
    worst = 0.0
    for x, g in zip(xs, got, strict=True):
        r = ref(mpmath.mpf(float(x)))
        m = abs(r) + (extra(mpmath.mpf(float(x))) if callable(extra) else extra)
        worst = max(worst, float(abs(mpmath.mpf(float(g)) - r) / (U * m)))
    return worst


def _log1mexp(x):  # type: ignore[no-untyped-def]
    """log(1 - e^-x) in mpmath, without its own cancellation at either end."""
    return mpmath.log(-mpmath.expm1(-x)) if x < 1 else mpmath.log1p(-mpmath.exp(-x))


def test_error_model_of_the_float64_primitives() -> None:
    rng = np.random.default_rng(3)
    wide = np.exp(rng.uniform(math.log(1e-30), math.log(1e30), 300))
    near = np.r_[rng.uniform(0.5, 3.0, 200), 1.0, 2.0, 1.4616321449683622]
    cases = [
        (torch.log, mpmath.log, wide, 0),
        (torch.log1p, mpmath.log1p, wide, 0),
        (lambda t: torch.exp(-t), lambda x: mpmath.exp(-x), wide[wide < 700], 0),
        # em1 = 1 - e^-w as the screened formulas form it (both forms; the exp form only
        # from w = 1/4, as used), relative to em1; and log(em1), which past w ~ 37 rounds
        # to 0, an error e^-w < u (hence + 1)
        (S.one_minus_exp_neg, lambda x: -mpmath.expm1(-x), wide, 0),
        (S._one_minus_exp_neg_series, lambda x: -mpmath.expm1(-x), wide[wide < 0.25], 0),
        (lambda t: S.one_minus_exp_neg(t, 0.25), lambda x: -mpmath.expm1(-x),
         wide[wide >= 0.25], 0),
        (lambda t: torch.log(S.one_minus_exp_neg(t)), _log1mexp, wide[wide < 700], 1),
        (torch.lgamma, mpmath.loggamma, np.r_[wide, near], 1),
        (torch.digamma, mpmath.digamma, np.r_[wide, near], 1),
    ]
    for fn, ref, xs, extra in cases:
        assert _max_units(fn, ref, xs, extra) <= S.C_ULPS / 8, fn
    # the rounding of k + theta moves lgamma by u z psi(z) <= u (2 |lgamma(z)| + 25)
    z = torch.tensor(np.r_[wide, near], dtype=torch.float64)
    assert bool((z * torch.digamma(z)).abs().le(2 * torch.lgamma(z).abs() + 25).all())


def _realistic(family: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """mu = e^U(0, 2), theta = e^U(0.5, 2.5), k = 1 + Poisson(mu), in float32."""
    rng = np.random.default_rng(seed)
    mu = np.exp(rng.uniform(0.0, 2.0, n)).astype(np.float32)
    k = (1 + rng.poisson(mu)).astype(np.float32)
    if family == "ztpoisson":
        return {"k": k, "lam": mu}
    theta = np.exp(rng.uniform(0.5, 2.5, n)).astype(np.float32)
    return {"k": k, "mu": mu, "theta": theta}


def _whole_domain(family: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """Log-uniform points over the float32 domain of the suites."""
    rng = np.random.default_rng(seed)
    k = np.round(np.exp(rng.uniform(0.0, math.log(1e7), n))).astype(np.float32)
    p1 = np.exp(rng.uniform(math.log(1e-30), math.log(1e9), n)).astype(np.float32)
    if family == "ztpoisson":
        return {"k": k, "lam": p1}
    th = np.exp(rng.uniform(math.log(2e-12), math.log(1e10), n)).astype(np.float32)
    return {"k": k, "mu": p1, "theta": th}


def _loss_and_grads(family: str, pts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Value and gradients of the loss (natural or log parameters, by the column names)."""
    names = [c for c in pts if c != "k"]
    k = torch.tensor(pts["k"])
    params = [torch.tensor(pts[c], requires_grad=True) for c in names]
    fn = zt_poisson_nll if family == "ztpoisson" else zt_negbin_nll
    out = fn(k, **dict(zip(names, params, strict=True)), reduction="none")
    assert out.dtype == params[0].dtype
    grads = torch.autograd.grad(out.sum(), params)
    res = {"nll_loss": out.detach().numpy()}
    res.update({f"d_{c}": g.numpy() for c, g in zip(names, grads, strict=True)})
    return res


@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
@pytest.mark.parametrize("points", [_realistic, _whole_domain])
def test_float32_against_arb(family: str, points) -> None:  # type: ignore[no-untyped-def]
    pts = points(family, 400, 11)
    got = _loss_and_grads(family, pts)
    ref = compute_references(family, {c: v.astype(np.float64) for c, v in pts.items()},
                             cache_dir=False, progress=False)  # fmt: skip
    assert bool(ref["certified"].all())
    for q, arr in got.items():
        err = ulp_error(arr.astype(np.float64), ref[q].to_numpy(), "float32")
        worst = int(np.argmax(err))
        assert err.max() <= 1.0, (q, float(err.max()), {c: pts[c][worst] for c in pts})


@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_realistic_inputs_are_certified(family: str) -> None:
    pts = _realistic(family, 20000, 5)
    cols = [torch.tensor(v, dtype=torch.float64) for v in pts.values()]
    fn = S.ztp_screened if family == "ztpoisson" else S.ztnb_screened
    *_, margin = fn(*cols, True, False)
    assert S.certified(margin).double().mean() >= 0.95


@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_fast_path_matches_the_careful_kernel(family: str) -> None:
    """float32 results (fast path) equal the float64 loss rounded once, up to one ulp
    (the plain formula and the careful kernel differ by far less than an ulp, but may
    round to neighbouring floats)."""
    pts = _whole_domain(family, 3000, 2)
    got = _loss_and_grads(family, pts)
    ref = _loss_and_grads(family, {c: v.astype(np.float64) for c, v in pts.items()})
    for q, arr in got.items():
        err = ulp_error(arr.astype(np.float64), ref[q], "float32")
        assert err.max() <= 1.0, q


def test_full_and_broadcast_on_the_fast_path() -> None:
    k = torch.tensor([[1.0], [3.0], [7.0]])
    mu = torch.tensor([0.7, 2.5, 6.0], requires_grad=True)
    th = torch.tensor(4.0, requires_grad=True)
    out = zt_negbin_nll(k, mu, th, reduction="sum", full=True)
    g = torch.autograd.grad(out, (mu, th))
    mu64, th64 = mu.detach().double().requires_grad_(), th.detach().double().requires_grad_()
    out64 = zt_negbin_nll(k.double(), mu64, th64, reduction="sum", full=True)
    g64 = torch.autograd.grad(out64, (mu64, th64))
    assert out.dtype == torch.float32
    assert abs(out.item() - out64.item()) <= 2e-7 * abs(out64.item())
    for a, b in zip(g, g64, strict=True):
        assert a.shape == b.shape and a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=3e-7, atol=0.0)


@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_float32_log_parameters_against_arb(family: str) -> None:
    """log_lam / log_mu / log_theta in float32 (exp taken in float64 on the fast path),
    against references taken at p = exp(log p) exactly."""
    pts = _realistic(family, 200, 21)
    wide = _whole_domain(family, 200, 22)
    logs = {("k" if c == "k" else f"log_{c}"): np.r_[v, wide[c]] if c == "k"
            else np.log(np.r_[v, wide[c]].astype(np.float64)).astype(np.float32)
            for c, v in pts.items()}  # fmt: skip
    got = _loss_and_grads(family, logs)
    ref = compute_references(family, {c: v.astype(np.float64) for c, v in logs.items()},
                             cache_dir=False, progress=False,
                             log_params=tuple(c[4:] for c in logs if c != "k"))  # fmt: skip
    for q, arr in got.items():
        err = ulp_error(arr.astype(np.float64), ref[q].to_numpy(), "float32")
        assert err.max() <= 1.0, (q, float(err.max()))


def test_mask_on_the_fast_path() -> None:
    """Masked-out elements (k = 0 among them) give exactly 0; kept ones equal the
    unmasked loss of the kept elements."""
    pts = _realistic("ztnb", 1000, 4)
    k = torch.tensor(pts["k"])
    k[::3] = 0.0
    mu = torch.tensor(pts["mu"], requires_grad=True)
    th = torch.tensor(pts["theta"], requires_grad=True)
    keep = k > 0
    out = zt_negbin_nll(k, mu, th, reduction="none", mask=keep)
    g = torch.autograd.grad(out.sum(), (mu, th))
    assert bool((out[~keep] == 0).all()) and all(bool((x[~keep] == 0).all()) for x in g)
    mu_k = mu.detach()[keep].requires_grad_()
    th_k = th.detach()[keep].requires_grad_()
    ref = zt_negbin_nll(k[keep], mu_k, th_k, reduction="none")
    g_ref = torch.autograd.grad(ref.sum(), (mu_k, th_k))
    assert torch.equal(out[keep], ref.detach())
    for a, b in zip(g, g_ref, strict=True):
        assert torch.equal(a[keep], b)


def test_overflowing_terms_are_not_certified() -> None:
    """Parameters far outside float32's range (exp of a float32 log-parameter in float64)
    overflow the plain formula's terms to inf or NaN: never certified, so the float32
    loss is the careful kernel's float64 result rounded once (NaN where that has none)."""
    k = torch.tensor([1.0, 3.0, 2.0, 1.0])
    log_mu = torch.tensor([700.0, 700.0, 705.0, -700.0])
    log_th = torch.tensor([-20.0, 5.0, -8.0, 700.0])
    x = torch.stack([log_mu, log_th]).double()
    value, *_, margin = S.ztnb_screened(k.double(), x[0].exp(), x[1].exp(), True, False)
    ok = S.certified(margin)
    assert ok.tolist() == [False, True, False, False]
    assert not bool(torch.isfinite(value[~ok]).any())
    out = zt_negbin_nll(k, log_mu=log_mu, log_theta=log_th, reduction="none", validate=False)
    ref = zt_negbin_nll(k.double(), log_mu=x[0], log_theta=x[1], reduction="none",
                        validate=False)  # fmt: skip
    torch.testing.assert_close(out, ref.float(), rtol=0.0, atol=0.0, equal_nan=True)


def _relative_errors(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(got - ref) / np.abs(ref)


@pytest.mark.parametrize("points", [_realistic, _whole_domain])
def test_ztp_certificates_against_arb(points) -> None:  # type: ignore[no-untyped-def]
    """The chunk-wide and element-wise ZTP certificates accept only float64 results within
    2^-28 relative of arb (the bound's promise), value and derivative alike. The chunk
    holds tiny lam (< 2^-40, where em1 can round to 0) in the whole-domain case."""
    pts = points("ztpoisson", 600, 31)
    k = torch.tensor(pts["k"], dtype=torch.float64)
    lam = torch.tensor(pts["lam"], dtype=torch.float64)
    if points is _whole_domain:
        lam[:4] = torch.tensor([1e-30, 2.0**-41, 2.0**-39, 1e-12], dtype=torch.float64)
    ref = compute_references("ztpoisson", {"k": k.numpy(), "lam": lam.numpy()},
                             cache_dir=False, progress=False)  # fmt: skip
    lo, hi = float(lam.min()), float(lam.max())
    value, d_lam, rejected = S.ztp_screened_chunk(k, lam, True, False, float(k.max()), lo, hi)
    chunk_ok = torch.ones_like(k, dtype=torch.bool)
    chunk_ok[rejected] = False
    v2, d2, margin = S.ztp_screened(k, lam, True, False)
    elem_ok = S.certified(margin)
    for ok, v, d in ((chunk_ok, value, d_lam), (elem_ok, v2, d2)):
        sel = ok.numpy()
        assert sel.mean() > 0.3
        for got, q in ((v, "nll_loss"), (d, "d_lam")):
            err = _relative_errors(got.numpy()[sel], ref[q].to_numpy()[sel])
            assert err.max() <= 2.0**-28, (q, float(err.max()))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_compiled_float32_against_arb(family: str) -> None:
    """torch.compile (inductor) fuses the screened formula: its float32 value and
    gradients keep the eager guarantee (within 1 ulp of arb, as test_float32_against_arb),
    with log-parameters and a mask among the inputs."""
    pts = {c: np.r_[v, _whole_domain(family, 200, 12)[c]]
           for c, v in _realistic(family, 200, 13).items()}  # fmt: skip
    names = [c for c in pts if c != "k"]
    logs = [torch.tensor(np.log(pts[c].astype(np.float64)).astype(np.float32),
                         requires_grad=True) for c in names]  # fmt: skip
    k = torch.tensor(pts["k"])
    k_masked = k.clone()
    k_masked[::7] = 0.0  # left out by the mask: never validated, exactly 0
    keep = k_masked > 0
    fn = zt_poisson_nll if family == "ztpoisson" else zt_negbin_nll

    def loss(k: torch.Tensor, keep: torch.Tensor, *logs: torch.Tensor) -> torch.Tensor:
        kw = {f"log_{c}": t for c, t in zip(names, logs, strict=True)}
        return fn(k, **kw, reduction="none", mask=keep)

    torch._dynamo.reset()
    out = torch.compile(loss, fullgraph=True)(k_masked, keep, *logs)
    grads = torch.autograd.grad(out.sum(), logs)
    assert out.dtype == torch.float32
    nat = {c: np.exp(t.detach().numpy().astype(np.float64))
           for c, t in zip(names, logs, strict=True)}  # fmt: skip
    ref = compute_references(family, {"k": pts["k"].astype(np.float64), **nat},
                             cache_dir=False, progress=False)  # fmt: skip
    sel = keep.numpy()
    assert bool((out.detach()[~keep] == 0).all())
    err = ulp_error(out.detach().numpy()[sel].astype(np.float64), ref["nll_loss"].to_numpy()[sel],
                    "float32")  # fmt: skip
    assert err.max() <= 1.0, float(err.max())
    for c, g in zip(names, grads, strict=True):
        assert bool((g[~keep] == 0).all())
        want = ref[f"d_{c}"].to_numpy() * nat[c]  # d/dlog p = p d/dp
        err = ulp_error(g.numpy()[sel].astype(np.float64), want[sel], "float32")
        assert err.max() <= 1.5, (c, float(err.max()))
