"""The shipped loss in training code: higher-order gradients, torch.func, NaN propagation,
mask= and weight=, compile-friendly validation.

The independent reference is the naive formula in float64 at benign points (mu, theta,
lam of order 1, small k), where it is accurate to ~1e-15 and autograd differentiates it
to any order."""

from __future__ import annotations

import contextlib
import math

import mpmath
import pytest
import torch

from ztbench.loss import zt_negbin_nll, zt_poisson_nll

F64 = torch.float64


def naive_ztp(k: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    return -k * torch.log(lam) + torch.log(torch.exp(lam) - 1.0)


def naive_ztnb(k, mu, theta, lgamma=torch.lgamma, log=torch.log):  # type: ignore[no-untyped-def]
    """The ZTNB loss as written (torch by default; mpmath's functions for the reference)."""
    return (
        lgamma(theta)
        - lgamma(k + theta)
        - theta * log(theta)
        + log((theta + mu) ** theta - theta**theta)
        - k * log(mu)
        + k * log(theta + mu)
    )


def _benign(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(1, 9, (n,), generator=g).to(F64)
    mu = torch.exp(torch.empty(n, dtype=F64).uniform_(-1.0, 2.0, generator=g))
    theta = torch.exp(torch.empty(n, dtype=F64).uniform_(-1.0, 2.5, generator=g))
    return k, mu, theta


# ----------------------------------------------------------------- higher-order gradients
@pytest.mark.parametrize("log", [False, True])
def test_gradgradcheck_float64(log: bool) -> None:
    k, mu, theta = _benign()
    mu.requires_grad_(True)
    theta.requires_grad_(True)
    if log:
        m0, t0 = mu.detach().log().requires_grad_(True), theta.detach().log().requires_grad_(True)

        def nb(m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return zt_negbin_nll(k, log_mu=m, log_theta=t, reduction="none")

        def zp(m: torch.Tensor) -> torch.Tensor:
            return zt_poisson_nll(k, log_lam=m, reduction="none")
    else:
        m0, t0 = mu, theta

        def nb(m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return zt_negbin_nll(k, m, t, reduction="none")

        def zp(m: torch.Tensor) -> torch.Tensor:
            return zt_poisson_nll(k, m, reduction="none")

    assert torch.autograd.gradgradcheck(nb, (m0, t0))
    assert torch.autograd.gradgradcheck(zp, (m0,))


def _mp_ztnb(k: float, a: mpmath.mpf, b: mpmath.mpf) -> mpmath.mpf:
    """The ZTNB loss at log mu = a, log theta = b, in mpmath."""
    return naive_ztnb(k, mpmath.exp(a), mpmath.exp(b), mpmath.loggamma, mpmath.log)


def test_hessian_matches_mpmath() -> None:
    # the naive formula's own second derivative in theta is off by ~1e-8 here (its
    # (theta + mu)^theta - theta^theta cancels): the reference is mpmath at 50 digits
    k, mu, theta = _benign(5, seed=1)
    p0 = torch.cat([mu.log(), theta.log()])

    def ours(p: torch.Tensor) -> torch.Tensor:
        return zt_negbin_nll(k, log_mu=p[:5], log_theta=p[5:], reduction="sum")

    got = torch.autograd.functional.hessian(ours, p0)
    want = torch.zeros_like(got)
    with mpmath.workdps(50):
        for i in range(5):
            a, b = mpmath.mpf(float(p0[i])), mpmath.mpf(float(p0[5 + i]))

            def f(x: mpmath.mpf, y: mpmath.mpf, kk: float = float(k[i])) -> mpmath.mpf:
                return _mp_ztnb(kk, x, y)

            for r, c, order in ((i, i, (2, 0)), (i, 5 + i, (1, 1)), (5 + i, 5 + i, (0, 2))):
                want[r, c] = want[c, r] = float(mpmath.diff(f, (a, b), order))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    # ZTP: d2/dlam2 = k/lam^2 - e^lam/(e^lam - 1)^2, against the naive formula's autograd
    lam = mu.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(zt_poisson_nll(k, lam, reduction="sum"), lam, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), lam)
    lam_n = mu.clone().requires_grad_(True)
    (gn,) = torch.autograd.grad(naive_ztp(k, lam_n).sum(), lam_n, create_graph=True)
    (hn,) = torch.autograd.grad(gn.sum(), lam_n)
    torch.testing.assert_close(h, hn, rtol=1e-9, atol=1e-12)


def test_gradient_penalty_confirmed_by_naive_formula() -> None:
    # a per-gene linear head (features -> log mu, log theta) trained with a gradient
    # penalty on the input features: the penalty's gradient goes through the loss's
    # second derivatives, and must equal the naive formula's
    g = torch.Generator().manual_seed(3)
    n, d = 40, 3
    x = torch.randn(n, d, dtype=F64, generator=g).requires_grad_(True)
    w0 = 0.3 * torch.randn(d, 2, dtype=F64, generator=g)
    k = torch.randint(1, 7, (n,), generator=g).to(F64)

    def step(loss_fn, penalty: float) -> torch.Tensor:  # type: ignore[no-untyped-def]
        w = w0.clone().requires_grad_(True)
        out = x @ w
        loss = loss_fn(out[:, 0], out[:, 1])
        (gx,) = torch.autograd.grad(loss, x, create_graph=True)
        total = loss + penalty * gx.pow(2).sum()
        (gw,) = torch.autograd.grad(total, w)
        return gw

    def ours(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return zt_negbin_nll(k, log_mu=a, log_theta=b, reduction="sum")

    def naive(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return naive_ztnb(k, a.exp(), b.exp()).sum()

    for penalty in (0.0, 10.0):
        torch.testing.assert_close(step(ours, penalty), step(naive, penalty), rtol=1e-9, atol=1e-12)
    # the penalty must change the gradient (no term dropped silently)
    assert (step(ours, 10.0) - step(ours, 0.0)).abs().max() > 1.0


# ----------------------------------------------------------------- torch.func
def test_torch_func_grad_vmap_jacrev_jvp() -> None:
    k, mu, theta = _benign(4, seed=2)
    lm, lt = mu.log(), theta.log()

    def f(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return zt_negbin_nll(k, log_mu=a, log_theta=b, reduction="sum")

    def naive(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return naive_ztnb(k, a.exp(), b.exp()).sum()

    ga = torch.func.grad(f, argnums=(0, 1))(lm, lt)
    gn = torch.func.grad(naive, argnums=(0, 1))(lm, lt)
    for a, b in zip(ga, gn, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)

    def elem(a: torch.Tensor) -> torch.Tensor:
        return zt_negbin_nll(k, log_mu=a, log_theta=lt, reduction="none")

    jr = torch.func.jacrev(elem)(lm)
    torch.testing.assert_close(jr, torch.diag(gn[0]), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.func.jacfwd(elem)(lm), jr, rtol=1e-12, atol=1e-14)
    v = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    val, tan = torch.func.jvp(lambda a: f(a, lt), (lm,), (v,))
    torch.testing.assert_close(val, naive(lm, lt))
    torch.testing.assert_close(tan, (gn[0] * v).sum(), rtol=1e-12, atol=1e-14)
    # vmap over a batch of parameter vectors, and per-sample gradients (vmap of grad)
    batch = torch.stack([lm, lm + 0.5, lm - 1.0])
    vm = torch.func.vmap(elem)(batch)
    torch.testing.assert_close(vm, torch.stack([elem(r) for r in batch]), rtol=0, atol=0)
    per = torch.func.vmap(
        torch.func.grad(lambda a, kk, b: zt_negbin_nll(kk, log_mu=a, log_theta=b))
    )(lm, k, lt)
    torch.testing.assert_close(per, gn[0], rtol=1e-12, atol=1e-14)
    hz = torch.func.hessian(lambda a: zt_poisson_nll(k, log_lam=a, reduction="sum"))(lm)
    hn = torch.func.hessian(lambda a: naive_ztp(k, a.exp()).sum())(lm)
    torch.testing.assert_close(hz, hn, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------- NaN in, NaN out
def test_invalid_or_nan_input_gives_nan_value_and_gradient() -> None:
    k = torch.tensor([0.0, 2.0, 2.5, 3.0, 4.0])
    mu = torch.tensor([1.0, float("nan"), 1.0, 1.0, 2.0], requires_grad=True)
    theta = torch.tensor([1.0, 1.0, 1.0, -1.0, 3.0], requires_grad=True)
    out = zt_negbin_nll(k, mu, theta, reduction="none", validate=False)
    assert torch.isnan(out[:4]).all() and torch.isfinite(out[4])
    gm, gt = torch.autograd.grad(out.sum(), (mu, theta))
    assert torch.isnan(gm[:4]).all() and torch.isnan(gt[:4]).all()
    assert torch.isfinite(gm[4]) and torch.isfinite(gt[4])
    # a NaN from upstream survives `loss * 0` (NaN * 0 = NaN): only mask= removes it
    lam = torch.tensor([1.0, 2.0], requires_grad=True)
    upstream = lam * torch.tensor([1.0, float("nan")])
    loss = zt_poisson_nll(torch.tensor([1.0, 1.0]), upstream, reduction="none", validate=False)
    (g,) = torch.autograd.grad((loss * torch.tensor([1.0, 0.0])).sum(), lam)
    assert torch.isnan(g[1])
    lp = torch.tensor([0.5, float("nan")], requires_grad=True)
    out = zt_poisson_nll(torch.tensor([1.0, 1.0]), log_lam=lp, validate=False, reduction="none")
    (g,) = torch.autograd.grad(out.sum(), lp)
    assert torch.isnan(out[1]) and torch.isnan(g[1]) and torch.isfinite(g[0])


# ----------------------------------------------------------------- mask= and weight=
def test_mask_leaves_out_zeros_exactly() -> None:
    x = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 5.0]])  # a count matrix with zeros
    mu = torch.tensor([[1.5, 2.0, 0.4], [3.0, float("nan"), 1.0]], requires_grad=True)
    theta = torch.tensor([2.0, 0.5, 9.0], requires_grad=True)
    keep = x > 0
    out = zt_negbin_nll(x, mu, theta, mask=keep, reduction="none")  # validate=True passes
    assert out[0, 0] == 0.0 and out[1, 1] == 0.0
    gm, gt = torch.autograd.grad(out.sum(), (mu, theta))
    assert gm[0, 0] == 0.0 and gm[1, 1] == 0.0 and torch.isfinite(gt).all()
    kept = [(0, 1), (0, 2), (1, 0), (1, 2)]
    x64, mu64, th64 = x.double(), mu.detach().double(), theta.detach().double()
    want = torch.stack([naive_ztnb(x64[i, j], mu64[i, j], th64[j]) for i, j in kept])
    for (i, j), w in zip(kept, want, strict=True):
        torch.testing.assert_close(out[i, j].double(), w, rtol=1e-6, atol=0)
    mean = zt_negbin_nll(x, mu, theta, mask=keep)
    torch.testing.assert_close(mean.double(), want.mean(), rtol=1e-6, atol=0)
    total = zt_negbin_nll(x, mu, theta, mask=keep, reduction="sum")
    torch.testing.assert_close(total.double(), want.sum(), rtol=1e-6, atol=0)
    # without a mask the same input is an error (k = 0 and a NaN mean)
    with pytest.raises(ValueError, match="k must be >= 1"):
        zt_negbin_nll(x, mu, theta)


def test_weight_scales_elements_and_the_mean() -> None:
    k, mu, _ = _benign(5, seed=4)
    w = torch.tensor([1.0, 0.5, 2.0, 0.0, 3.0], dtype=F64)
    lam = mu.clone().requires_grad_(True)
    per = naive_ztp(k, mu)
    got = zt_poisson_nll(k, lam, weight=w)
    torch.testing.assert_close(got, (w * per).sum() / w.sum(), rtol=1e-13, atol=0)
    torch.testing.assert_close(zt_poisson_nll(k, lam, weight=w, reduction="none"), w * per)
    keep = torch.tensor([True, True, False, True, True])
    got = zt_poisson_nll(k, lam, weight=w, mask=keep)
    want = (w * per)[keep].sum() / w[keep].sum()
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)
    (g,) = torch.autograd.grad(got, lam)
    assert g[2] == 0.0 and g[3] == 0.0


# ----------------------------------------------------------------- torch.compile
@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_default_settings_have_no_graph_break(family: str) -> None:
    # validate=True (the default) is traced as tensor operations (torch._assert_async)
    k = torch.tensor([1.0, 4.0, 30.0])
    a = torch.tensor([0.1, 1.0, 3.0], requires_grad=True)
    b = torch.tensor([-1.0, 2.0, 8.0], requires_grad=True)

    def fn(k: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if family == "ztpoisson":
            return zt_poisson_nll(k, log_lam=a)
        return zt_negbin_nll(k, log_mu=a, log_theta=b, mask=k < 100)

    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(k, a, b)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
@pytest.mark.parametrize("no_grad", [True, False], ids=["no_grad", "grad mode"])
def test_compiled_without_gradients_is_one_graph_with_eager_bits(family: str, no_grad: bool
                                                                 ) -> None:  # fmt: skip
    # an evaluation loop: nothing asks for gradients (one and two parameters, with a mask)
    k = torch.tensor([1.0, 4.0, 30.0, 0.0], dtype=F64)
    a = torch.tensor([0.1, 1.0, 3.0, 2.0], dtype=F64)  # no parameter requires grad
    b = torch.tensor([-1.0, 2.0, 8.0, 1.0], dtype=F64)

    def fn(k: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if family == "ztpoisson":
            return zt_poisson_nll(k, log_lam=a, mask=k > 0, reduction="none")
        return zt_negbin_nll(k, log_mu=a, log_theta=b, mask=k > 0, reduction="none")

    torch._dynamo.reset()
    comp = torch.compile(fn, backend="aot_eager", fullgraph=True)
    with torch.no_grad() if no_grad else contextlib.nullcontext():
        got = comp(k, a, b)
        want = fn(k, a, b)
    assert torch.equal(got, want) and got[3] == 0.0 and torch.isfinite(got).all()


def test_compiled_validation_fails_on_invalid_input() -> None:
    torch._dynamo.reset()
    fn = torch.compile(lambda k, m: zt_poisson_nll(k, log_lam=m), backend="aot_eager")
    m = torch.tensor([0.0, 1.0])
    assert math.isfinite(float(fn(torch.tensor([1.0, 2.0]), m)))
    with pytest.raises(RuntimeError, match="zero-truncated"):
        fn(torch.tensor([0.0, 2.0]), m)


@pytest.mark.parametrize("dtype", [F64])
def test_compiled_on_cpu_equals_eager_bit_for_bit(dtype: torch.dtype) -> None:
    # float64 on the CPU: the compiled loss calls the eager kernel as one opaque
    # operator, so the bits are eager mode's, value and gradients (double-double
    # refinement included). (Float32 compiles to fused code instead, held to the same
    # accuracy against arb in tests/loss/test_screened.py.)
    k, mu, theta = _benign(64, seed=5)
    mu[:8] = torch.tensor([1e-30, 1e-8, 2.0, 3.0, 1e6, 7.0, 0.5, 1e9], dtype=F64)
    lm = mu.log().to(dtype).requires_grad_(True)
    lt = theta.log().to(dtype).requires_grad_(True)

    def fn(k: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return zt_negbin_nll(k, log_mu=a, log_theta=b, reduction="sum") + zt_poisson_nll(
            k, log_lam=a, reduction="sum"
        )

    torch._dynamo.reset()
    comp = torch.compile(fn, backend="aot_eager", fullgraph=True)
    out_c = comp(k, lm, lt)
    g_c = torch.autograd.grad(out_c, (lm, lt))
    out_e = fn(k, lm, lt)
    g_e = torch.autograd.grad(out_e, (lm, lt))
    assert torch.equal(out_c, out_e)
    for a, b in zip(g_c, g_e, strict=True):
        assert torch.equal(a, b)


def test_torch_func_with_mask_and_broadcasting() -> None:
    # vmap and jvp through a masked, broadcast call: masked-out elements stay exactly 0
    k = torch.tensor([[0.0, 2.0, 5.0], [1.0, 0.0, 3.0]], dtype=F64)
    keep = k > 0
    lt = torch.tensor([0.3, -0.5, 1.0], dtype=F64)  # broadcast over rows

    def elem(a: torch.Tensor) -> torch.Tensor:
        return zt_negbin_nll(k, log_mu=a, log_theta=lt, mask=keep, reduction="none")

    batch = torch.tensor([[0.1, 0.2, 0.3], [1.0, -1.0, 2.0]], dtype=F64)
    vm = torch.func.vmap(elem)(batch)
    torch.testing.assert_close(vm, torch.stack([elem(b) for b in batch]), rtol=0, atol=0)
    assert (vm[:, ~keep] == 0).all()
    v = torch.ones(3, dtype=F64)
    _, tan = torch.func.jvp(elem, (batch[0],), (v,))
    jac = torch.func.jacrev(elem)(batch[0])  # (2, 3, 3)
    torch.testing.assert_close(tan, jac.sum(-1), rtol=1e-12, atol=1e-14)
    assert (tan[~keep] == 0).all()
