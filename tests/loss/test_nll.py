"""zt_poisson_nll and zt_negbin_nll: accuracy against certified references on the hard
regions, log-parameter gradients, validation, reductions, dtypes, torch.compile, and a short
training loop that must reach the float64 maximum-likelihood estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ztbench import zt_negbin_nll, zt_poisson_nll
from ztbench.candidates import get_candidate, load_suite
from ztbench.core.dtypes import round_to
from ztbench.core.metrics import ulp_error
from ztbench.measure.evaluate import evaluate
from ztbench.reference import compute_references
from ztbench.suite import find_suite

# The goals, as the default suite states them: value and gradient max ulp errors.
_GOALS = load_suite(find_suite("default")).goals
assert _GOALS is not None
GOAL_VALUE = _GOALS.value_ulp
GOAL_GRAD = _GOALS.gradient_ulp
# Pinned float64 figures where the goal is not reached (measured on suites/default.toml
# and on the points below; bounds slightly above today's figure, so they can only
# improve). The docstrings of ztbench.loss.kernels name the limiting terms.
PINNED_F64 = {
    # ztpoisson meets the goal: zero crossings are recomputed in double-double (ztbench.loss.dd.ztp)
    ("ztpoisson", "value"): GOAL_VALUE,
    ("ztpoisson", "d_lam"): GOAL_GRAD,
    ("ztnb", "value"): GOAL_VALUE,  # double-double lgamma difference where it cancels
    ("ztnb", "d_mu"): GOAL_GRAD,  # double-double where it cancels (ztbench.loss.dd.ztnb)
    ("ztnb", "d_theta"): GOAL_GRAD,  # refined in double-double (ztbench.loss.dd.ztnb)
}


def _hard_points(family: str) -> dict[str, np.ndarray]:
    """Points of every hard region of the domain (plus a few benign ones)."""
    rng = np.random.default_rng(8)
    if family == "ztpoisson":
        # the last two: the float64 worst cases of suites/default.toml before double-double
        # (zero crossings of the loss and of d/dlam)
        k = [1, 1, 1, 2, 3, 1, 100, 1000, 10**6, 10**7, 10**7, 3025, 233, 5, 1, 3, 2]
        lam = [
            1e-30,
            1e-15,
            0.5,
            1e-8,
            2.0,
            1e9,
            100.0,
            999.0,
            1e6,
            1e7,
            9999999.0,
            30054.3,
            1557.5,
        ]
        lam += [4.2, 710.0, 4.559546423538267, 1.5966260221014283]
        kk = np.round(np.exp(rng.uniform(0, np.log(1e7), 40)))
        ll = kk * np.exp(rng.uniform(np.log(0.5), np.log(2.0), 40))
        return {"k": np.r_[k, kk].astype(float), "lam": np.r_[lam, ll]}
    rows = [
        # k = 1, tiny mu, large theta (tiny NLL); tiny w
        (1, 1e-30, 1e10),
        (1, 1e-6, 1e10),
        (1, 1e-3, 1e6),
        (2, 1e-3, 31.6),
        (3, 1e-20, 1e8),
        (10, 1e-12, 1e4),
        # large theta, k ~ mu
        (10**7, 10**7, 1e10),
        (316, 316.0, 3.98e5),
        (1000, 1010.0, 1e9),
        (10**5, 9.9e4, 1e7),
        # tiny theta
        (1, 1e-30, 2e-12),
        (10**7, 1e9, 2e-12),
        (219, 7.456648e-11, 5.625050e-09),
        (2, 3.06e8, 0.098),
        (1, 1e9, 1.0),
        # the published rules' neighbourhood
        (1, 1.0, 100.0),
        (1, 14.0, 1.0),
        (5, 3.0, 12.0),
        (10, 5.0, 2.185854),
    ]
    k, mu, th = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    n = 60
    kk = np.round(np.exp(rng.uniform(0, np.log(1e7), n)))
    mm = np.exp(rng.uniform(np.log(1e-30), np.log(1e9), n))
    tt = np.exp(rng.uniform(np.log(2e-12), np.log(1e10), n))
    return {"k": np.r_[k, kk], "mu": np.r_[mu, mm], "theta": np.r_[th, tt]}


@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_accuracy_hard_regions(family: str, dtype: str) -> None:
    cand = get_candidate(f"{family}/ztbench")
    pts = {c: round_to(v, dtype) for c, v in _hard_points(family).items()}
    ref = compute_references(family, pts)
    ev = evaluate(cand, pts, dtype)
    assert ev.ok
    checks = {"value": (ev.value, ref["nll_loss"].to_numpy())}
    for g, arr in ev.grads.items():
        checks[g] = (arr, ref[g].to_numpy())
    for q, (computed, reference) in checks.items():
        assert np.isfinite(computed).all(), (q, "non-finite")
        err = ulp_error(computed, reference, dtype)
        goal = GOAL_VALUE if q == "value" else GOAL_GRAD
        bound = goal if dtype != "float64" else max(goal, PINNED_F64[(family, q)])
        worst = int(np.argmax(err))
        where = {c: pts[c][worst] for c in pts}
        assert err.max() <= bound, f"{family} {dtype} {q}: {err.max()} ulp at {where}"


def _ulps(got: list[float], want: tuple[float, ...]) -> list[float]:
    """float64 ulp errors of computed scalars against references."""
    return [float(ulp_error(np.array([g]), np.array([w]), "float64")[0])
            for g, w in zip(got, want, strict=True)]  # fmt: skip


def _ztnb_mpmath(k: float, mu: object, theta: object) -> tuple[float, float, float]:
    """ZTNB loss, d/dmu, d/dtheta from their closed forms in mpmath at 700 digits
    (enough for the ~200-digit cancellations at mu/theta ~ 1e-200); mu and theta: floats
    or mpmath numbers."""
    import mpmath as mp

    with mp.workdps(700):
        k_, m, t = mp.mpf(k), mp.mpf(mu), mp.mpf(theta)
        w = t * mp.log1p(m / t)
        em1 = -mp.expm1(-w)
        value = mp.loggamma(t) - mp.loggamma(k_ + t) + k_ * mp.log1p(t / m) + mp.log(mp.expm1(w))
        d_mu = k_ / (t + m) - k_ / m + (t / (t + m)) / em1
        d_theta = (mp.digamma(t) - mp.digamma(k_ + t) + k_ / (t + m)
                   + (mp.log1p(m / t) - m / (t + m)) / em1)  # fmt: skip
        return float(value), float(d_mu), float(d_theta)


# mu/theta far below the benchmark's domain, but valid (log_mu = -460): the loss at k = 1
# is ~ (x + w)/2, where forming x^2 underflows and double-double cannot resolve the
# formula's cancellation
_TINY_X = [(1, 1e-200, 1e-5), (1, 1e-200, 1.0), (1, 1e-300, 1.0), (1, 1e-160, 1.0),
           (1, 1.06e-47, 5.68e-8), (1, 1.44e-39, 0.054), (1, 3.25e-240, 9.29e-9),
           (2, 2.83e-191, 8.56e6), (3, 1e-250, 1e3)]  # fmt: skip


@pytest.mark.parametrize(("k", "mu", "theta"), _TINY_X)
def test_ztnb_float64_at_tiny_mean_over_theta(k: int, mu: float, theta: float) -> None:
    m = torch.tensor([mu], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([theta], dtype=torch.float64, requires_grad=True)
    value = zt_negbin_nll(torch.tensor([float(k)], dtype=torch.float64), m, t, reduction="sum")
    value.backward()
    got = [value.item(), m.grad.item(), t.grad.item()]  # type: ignore[union-attr]
    want = _ztnb_mpmath(k, mu, theta)
    err = _ulps(got, want)
    assert err[0] <= GOAL_VALUE and max(err[1:]) <= GOAL_GRAD, (got, want, err)


def test_low_precision_dtypes_round_once() -> None:
    k = torch.tensor([1.0, 3.0, 50.0])
    for dt in (torch.bfloat16, torch.float16):
        lam = torch.tensor([0.5, 3.0, 40.0], dtype=dt, requires_grad=True)
        out = zt_poisson_nll(k, lam, reduction="none")
        assert out.dtype == dt
        ref = zt_poisson_nll(k, lam.detach().double(), reduction="none")
        assert torch.equal(out, ref.to(dt))
        out.sum().backward()
        assert lam.grad is not None and lam.grad.dtype == dt
        assert torch.isfinite(lam.grad).all()
        mu = torch.tensor([0.5, 3.0, 40.0], dtype=dt)
        th = torch.tensor([2.0, 0.5, 100.0], dtype=dt)
        out = zt_negbin_nll(k, mu, th, reduction="none")
        assert out.dtype == dt
        assert torch.equal(out, zt_negbin_nll(k, mu.double(), th.double(), reduction="none").to(dt))


def _grad(fn, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
    xs = [a.clone().requires_grad_(True) for a in args]
    out = fn(*xs)
    return torch.autograd.grad(out.sum(), xs)


def _ztp_mpmath_log(k: float, log_lam: float) -> tuple[float, float]:
    """ZTP loss and d/dlog_lam at lam = exp(log_lam) exactly (mpmath, 80 digits)."""
    import mpmath as mp

    with mp.workdps(80):
        ll = mp.mpf(log_lam)
        lam = mp.exp(ll)
        return float(-k * ll + mp.log(mp.expm1(lam))), float(lam / -mp.expm1(-lam) - k)


# Float64 with log-parameters: the loss at exp(log p) exactly, not at exp(log p) rounded
# (which moves a cancelling loss or derivative by many ulp: k = 1e6 at log_lam = 1e-9 by
# ~7e5 ulp)
@pytest.mark.parametrize(("k", "log_lam"), [(1e6, 1e-9), (38.0, 0.014), (3.0, 1.0986),
                                            (1.0, -5.0), (100.0, 4.6), (2.0, 0.4605)])  # fmt: skip
def test_float64_log_lam_against_mpmath(k: float, log_lam: float) -> None:
    ll = torch.tensor([log_lam], dtype=torch.float64, requires_grad=True)
    value = zt_poisson_nll(torch.tensor([k], dtype=torch.float64), log_lam=ll, reduction="sum")
    value.backward()
    err = _ulps([value.item(), ll.grad.item()], _ztp_mpmath_log(k, log_lam))  # type: ignore[union-attr]
    assert err[0] <= GOAL_VALUE and err[1] <= GOAL_GRAD, err


@pytest.mark.parametrize("mixed", [False, True], ids=["log_mu, log_theta", "mu, log_theta"])
def test_float64_log_mu_theta_against_mpmath(mixed: bool) -> None:
    import mpmath as mp

    rng = np.random.default_rng(11)
    n = 12
    k = np.round(np.exp(rng.uniform(0.0, np.log(200.0), n)))
    lm = rng.uniform(-3.0, 4.0, n)
    lm[:4] = np.log(k[:4]) + rng.uniform(-1e-3, 1e-3, 4)  # near the mode: d/dlog_mu ~ 0
    lt = rng.uniform(-2.0, 3.0, n)
    lt[4:6] = [1e-9, -2e-7]  # theta ~ 1: exp rounding is many ulp of log_theta
    for i in range(n):
        m = torch.tensor([math.exp(lm[i]) if mixed else lm[i]], dtype=torch.float64,
                         requires_grad=True)  # fmt: skip
        t = torch.tensor([lt[i]], dtype=torch.float64, requires_grad=True)
        kk = torch.tensor([k[i]], dtype=torch.float64)
        mu_arg = {"mu": m} if mixed else {"log_mu": m}
        value = zt_negbin_nll(kk, **mu_arg, log_theta=t, reduction="sum")
        value.backward()
        with mp.workdps(80):
            mu_x = mp.mpf(float(m.detach())) if mixed else mp.exp(mp.mpf(lm[i]))
            th_x = mp.exp(mp.mpf(lt[i]))
            v, d_mu, d_th = _ztnb_mpmath(k[i], mu_x, th_x)
            want = (v, d_mu if mixed else float(d_mu * mu_x), float(d_th * th_x))
        got = [value.item(), m.grad.item(), t.grad.item()]  # type: ignore[union-attr]
        err = _ulps(got, want)
        assert err[0] <= GOAL_VALUE and max(err[1:]) <= GOAL_GRAD, (k[i], lm[i], lt[i], err)


def test_gradcheck_custom_backward() -> None:
    k = torch.tensor([1.0, 3.0, 12.0], dtype=torch.float64)
    lam = torch.tensor([0.3, 2.5, 9.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda lm: zt_poisson_nll(k, lm, reduction="none"), (lam,))
    mu = torch.tensor([0.3, 2.5, 9.0], dtype=torch.float64, requires_grad=True)
    th = torch.tensor([0.7, 15.0, 3.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, t: zt_negbin_nll(k, m, t, reduction="none"), (mu, th))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": [0.0, 1.0], "lam": [1.0, 1.0]}, "k must be >= 1"),
        ({"k": [1.5, 1.0], "lam": [1.0, 1.0]}, "integer"),
        ({"k": [float("nan")], "lam": [1.0]}, "k contains NaN"),
        ({"k": [1.0], "lam": [0.0]}, "lam must be > 0"),
        ({"k": [1.0], "lam": [-2.0]}, "lam must be > 0"),
        ({"k": [1.0], "lam": [float("nan")]}, "lam contains NaN"),
        ({"k": [1.0], "lam": [float("inf")]}, "lam must be finite"),
        ({"k": [1.0], "log_lam": [float("nan")]}, "log_lam contains NaN"),
        ({"k": [1.0], "log_lam": [float("inf")]}, "log_lam must be finite"),
        ({"k": [1.0], "log_lam": [-800.0]}, "log_lam out of range"),
        ({"k": [1.0, 2.0], "log_lam": [800.0, 1.0]}, "log_lam out of range"),
    ],
)
# float32 on the CPU takes the fast path, which has its own range checks
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_poisson_validation(kwargs: dict, message: str, dtype: torch.dtype) -> None:
    args = {n: torch.tensor(v, dtype=dtype) for n, v in kwargs.items()}
    with pytest.raises(ValueError, match=message):
        zt_poisson_nll(**args)
    args_nv = dict(args)
    out = zt_poisson_nll(**args_nv, validate=False, reduction="none")
    assert torch.isnan(out).any()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda k, p: zt_poisson_nll(torch.tensor([True, True]), p), "k must be a real tensor"),
        (lambda k, p: zt_poisson_nll(k.to(torch.complex64), p), "k must be a real tensor"),
        (lambda k, p: zt_poisson_nll(k, p.to(torch.complex128)), "lam must be a real tensor"),
        (lambda k, p: zt_negbin_nll(k, p, p.bool(), validate=False), "theta must be a real"),
        (lambda k, p: zt_poisson_nll(k, log_lam=p, weight=p > 1), "weight must be a real"),
        (lambda k, p: zt_poisson_nll(k, p, mask=torch.tensor([0.5, 1.0])), "mask must be a bool"),
    ],
)
def test_wrong_dtypes_are_errors_whatever_validate_says(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 2.0]))


def test_a_mean_over_no_kept_element_is_nan_and_the_sum_is_zero() -> None:
    # torch's convention for the mean of nothing; the sum is the documented way out
    lam = torch.tensor([0.5, 2.0], requires_grad=True)
    none_kept = torch.tensor([False, False])
    assert torch.isnan(zt_poisson_nll(torch.tensor([0.0, 3.0]), lam, mask=none_kept))
    total = zt_poisson_nll(torch.tensor([0.0, 3.0]), lam, mask=none_kept, reduction="sum")
    total.backward()
    assert total.item() == 0.0 and torch.equal(lam.grad, torch.zeros(2))


def test_negbin_validation() -> None:
    k = torch.tensor([1.0, 2.0])
    one = torch.ones(2)
    with pytest.raises(ValueError, match="theta must be > 0"):
        zt_negbin_nll(k, one, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="mu contains NaN"):
        zt_negbin_nll(k, torch.tensor([1.0, float("nan")]), one)
    with pytest.raises(ValueError, match="k must be >= 1"):
        zt_negbin_nll(torch.tensor([0, 2]), one, one)
    with pytest.raises(ValueError, match="exactly one of mu= and log_mu="):
        zt_negbin_nll(k, one, one, log_mu=one)
    with pytest.raises(ValueError, match="exactly one of theta="):
        zt_negbin_nll(k, one)
    with pytest.raises(ValueError, match="reduction"):
        zt_negbin_nll(k, one, one, reduction="avg")  # type: ignore[arg-type]
    out = zt_negbin_nll(
        torch.tensor([0.0, 2.0, 2.5, 3.0]),
        torch.tensor([1.0, -1.0, 1.0, 1.0]),
        torch.tensor([1.0, 1.0, 1.0, 1.0]),
        validate=False,
        reduction="none",
    )
    assert torch.isnan(out[:3]).all() and torch.isfinite(out[3])
    assert torch.isnan(zt_negbin_nll(torch.tensor([0.0, 2.0]), one, one, validate=False))


def test_reductions_and_full_form() -> None:
    k = torch.tensor([1, 2, 5, 40])  # integer k is accepted
    lam = torch.tensor([0.5, 2.0, 4.0, 35.0], dtype=torch.float64)
    none = zt_poisson_nll(k, lam, reduction="none")
    assert none.shape == (4,)
    torch.testing.assert_close(zt_poisson_nll(k, lam, reduction="sum"), none.sum())
    torch.testing.assert_close(zt_poisson_nll(k, lam), none.mean())
    full = zt_poisson_nll(k, lam, reduction="none", full=True)
    torch.testing.assert_close(full - none, torch.lgamma(k.double() + 1.0))
    # the full form is -log P(X = k | X > 0)
    pk = torch.exp(-lam) * lam**k / torch.exp(torch.lgamma(k.double() + 1)) / (1 - torch.exp(-lam))
    torch.testing.assert_close(full, -torch.log(pk))
    mu, th = lam, torch.tensor([0.5, 3.0, 1e3, 2.0], dtype=torch.float64)
    nb = zt_negbin_nll(k, mu, th, reduction="none", full=True)
    p = th / (th + mu)
    dist = torch.distributions.NegativeBinomial(total_count=th, probs=1 - p)
    want = -dist.log_prob(k.double()) + torch.log1p(-(p**th))
    torch.testing.assert_close(nb, want)
    # broadcasting: scalar theta
    b = zt_negbin_nll(k, mu, 3.0, reduction="none")
    torch.testing.assert_close(b, zt_negbin_nll(k, mu, torch.full_like(mu, 3.0), reduction="none"))


@pytest.mark.slow
def test_compile_no_graph_break() -> None:
    # fullgraph=True: any graph break in the validate=False path is an error
    torch._dynamo.reset()
    fn = torch.compile(
        lambda k, a, b: zt_negbin_nll(k, log_mu=a, log_theta=b, validate=False),
        fullgraph=True,
        backend="aot_eager",
    )
    k = torch.tensor([1.0, 4.0, 30.0])
    a = torch.tensor([0.1, 1.0, 3.0], requires_grad=True)
    b = torch.tensor([-1.0, 2.0, 8.0], requires_grad=True)
    out = fn(k, a, b)
    out.backward()
    want = zt_negbin_nll(k, log_mu=a.detach(), log_theta=b.detach(), validate=False)
    torch.testing.assert_close(out.detach(), want, rtol=1e-6, atol=0)
    assert a.grad is not None and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


@pytest.mark.slow
def test_compiled_invalid_element_under_a_widening_mask_matches_eager() -> None:
    """Compiled float32 on the CPU with an invalid element (k = 0.5) and a mask that widens
    the broadcast shape: NaN where invalid and kept, 0 where masked out, eager mode's
    values and gradients elsewhere."""
    torch._dynamo.reset()
    k = torch.tensor([1.0, 0.5, 7.0])
    mask = torch.tensor([[True, True, True], [False, True, False]])

    def loss(k: torch.Tensor, lam: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return zt_poisson_nll(k, lam, reduction="none", mask=m, validate=False)

    fn = torch.compile(loss, fullgraph=True, backend="aot_eager")
    lam_c = torch.tensor([2.0, 3.0, 4.0], requires_grad=True)
    lam_e = torch.tensor([2.0, 3.0, 4.0], requires_grad=True)
    got, want = fn(k, lam_c, mask), loss(k, lam_e, mask)
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(got[:, 1]).all() and got[1, 0] == 0.0 and got[1, 2] == 0.0
    got[:, [0, 2]].sum().backward()
    want[:, [0, 2]].sum().backward()
    torch.testing.assert_close(lam_c.grad, lam_e.grad, rtol=0, atol=0, equal_nan=True)
    assert torch.isfinite(lam_c.grad[[0, 2]]).all()


def _ztnb_samples(n: int, mu: float, theta: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while sum(len(o) for o in out) < n:
        s = rng.negative_binomial(theta, theta / (theta + mu), size=2 * n)
        out.append(s[s > 0])
    return np.concatenate(out)[:n].astype(np.float64)


@pytest.mark.slow
def test_training_loop_reaches_float64_mle() -> None:
    torch.manual_seed(0)
    k64 = torch.from_numpy(_ztnb_samples(1500, mu=1.5, theta=2.0, seed=8))

    # float64 maximum-likelihood estimate (LBFGS on the log-parameters)
    p64 = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt64 = torch.optim.LBFGS(
        [p64],
        lr=1.0,
        max_iter=200,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt64.zero_grad()
        loss = zt_negbin_nll(k64, log_mu=p64[0], log_theta=p64[1])
        loss.backward()
        return loss

    for _ in range(5):
        opt64.step(closure)
    mle = p64.detach()

    # float32 Adam from a poor start
    k32 = k64.float()
    p = torch.tensor([1.0, -1.0], dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.05)
    for step in range(500):
        if step == 300:
            for grp in opt.param_groups:
                grp["lr"] = 0.005
        opt.zero_grad()
        loss = zt_negbin_nll(k32, log_mu=p[0], log_theta=p[1])
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    torch.testing.assert_close(p.detach().double(), mle, rtol=0, atol=2e-3)


def _logu(rng, lo, hi, n):
    return torch.from_numpy(np.exp(rng.uniform(np.log(lo), np.log(hi), n)))


def test_eager_fast_path_equals_the_compiled_kernels_bit_for_bit():
    # each kernel is written once and run by two dispatchers: INDEX (eager, each branch
    # on its own elements) and WHERE (torch.compile and the differentiable backward,
    # every branch everywhere): both must compute the same float64 numbers exactly
    from ztbench.loss import kernels as K

    rng = np.random.default_rng(11)
    n = 20000
    k = torch.from_numpy(np.floor(np.exp(rng.uniform(0, np.log(1e7), n))))
    k[: n // 4] = torch.from_numpy(rng.integers(1, 12, n // 4).astype(np.float64))
    lam = _logu(rng, 1e-30, 1e9, n)
    mu, theta = _logu(rng, 1e-30, 1e9, n), _logu(rng, 1e-12, 1e10, n)
    theta[: n // 4] = _logu(rng, 0.1, 20.0, n // 4)
    for fast, slow in (
        (K.ztp_indexed(k, lam, True), K.ztp_kernel(k, lam, True)),
        (K.ztnb_indexed(k, mu, theta, True), K.ztnb_kernel(k, mu, theta, True)),
    ):
        for a, b in zip(fast, slow, strict=True):
            torch.testing.assert_close(a, b, rtol=0.0, atol=0.0, equal_nan=True)


def test_eager_chunks_give_the_same_bits(monkeypatch):
    # the eager path slices long inputs (EAGER_CHUNK); a ragged last slice included,
    # values and gradients must equal one unsliced call exactly
    from ztbench.loss import kernels as K

    rng = np.random.default_rng(12)
    n = 2500
    k = torch.from_numpy(np.floor(np.exp(rng.uniform(0, np.log(1e4), n))))
    mu = _logu(rng, 1e-10, 1e6, n).requires_grad_(True)
    theta = _logu(rng, 1e-6, 1e8, n).requires_grad_(True)
    results = []
    for chunk in (10**9, 1000):
        monkeypatch.setattr(K, "EAGER_CHUNK", chunk)
        v = zt_negbin_nll(k, mu, theta, reduction="none")
        g = torch.autograd.grad(v.sum(), (mu, theta))
        vp = zt_poisson_nll(k, mu, reduction="none")
        results.append((v.detach(), *g, vp.detach()))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_broadcast_shapes_and_gradients():
    # (2, 1) counts against (3,) parameters: a (2, 3) loss; gradients summed back to (3,)
    k = torch.tensor([[1.0], [4.0]])
    lam = torch.tensor([0.5, 3.0, 40.0], requires_grad=True)
    out = zt_poisson_nll(k, lam, reduction="none")
    assert out.shape == (2, 3)
    for i in range(2):
        torch.testing.assert_close(out[i], zt_poisson_nll(k[i].expand(3), lam, reduction="none"))
    (g,) = torch.autograd.grad(out.sum(), lam)
    lam64 = lam.detach().double()
    want = sum(-kk / lam64 + 1 / (1 - torch.exp(-lam64)) for kk in (1.0, 4.0))
    assert g.shape == (3,)
    torch.testing.assert_close(g.double(), want, rtol=1e-6, atol=0)
    theta = torch.tensor(2.0, requires_grad=True)  # a 0-dim parameter
    nb = zt_negbin_nll(k, lam, theta, reduction="none")
    assert nb.shape == (2, 3)
    (gt,) = torch.autograd.grad(nb.sum(), theta)
    assert gt.shape == () and torch.isfinite(gt)


# Zeros of the ZTNB quantities on suites/default.toml whose float64 terms cancel
# 1e3-1e5-fold (the float64 kernel alone is 1e3-1e5 ulp off there): the double-double
# refinement of ztbench.loss.dd.ztnb holds each to the goal (with 25% margin below it for
# other CPUs' transcendental functions).
ZTNB_F64_WORST = [
    ("value", (5121.0, 2.4000500764647424e-13, 4.522698207286578e-10), GOAL_VALUE / 1.25),
    ("d_mu", (2.0, 1.584893192461114, 100.0), GOAL_GRAD / 1.25),
    ("d_mu", (2.0, 1.0, 1.0), 0.0),  # an exact zero (theta = 1, mu = k - 1)
    ("d_theta", (25.0, 10000.0, 0.03162277660168379), GOAL_GRAD / 1.25),
    ("d_theta", (7.0, 9.693406640217457, 304.33986560360614), GOAL_GRAD / 1.25),  # theta > 16
]


@pytest.mark.parametrize(("quantity", "point", "today"), ZTNB_F64_WORST)
def test_ztnb_float64_worst_points_pinned(quantity: str, point: tuple, today: float) -> None:
    pts = {c: np.array([v]) for c, v in zip(("k", "mu", "theta"), point, strict=True)}
    ref = compute_references("ztnb", pts, cache_dir=False, progress=False)
    ev = evaluate(get_candidate("ztnb/ztbench"), pts, "float64")
    computed = ev.value if quantity == "value" else ev.grads[quantity]
    reference = ref["nll_loss" if quantity == "value" else quantity].to_numpy()
    err = float(ulp_error(computed, reference, "float64")[0])
    assert err <= 1.25 * today, f"{quantity} at {point}: {err} ulp (pinned {today})"
