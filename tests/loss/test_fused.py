"""The fused float32 screen (ztbench.loss.fused, csrc/screen.cpp): its digamma, log and
log1p against mpmath, the loss through it against mpmath in float32, bfloat16 and float16 (both
families, natural and log-parameters, loss and full forms), the same results as the
pure-torch screen, and the fallback when it cannot be built."""

from __future__ import annotations

import math

import loss_references
import mpmath as mp
import numpy as np
import pytest
import torch

from ztbench.core.metrics import ulp_error
from ztbench.loss import fused, zt_negbin_nll, zt_poisson_nll
from ztbench.loss.paths import Path, recording

ACTIVE = fused.status().active
needs_fused = pytest.mark.skipif(not ACTIVE, reason=f"fused kernel: {fused.status().reason}")
GOAL = 0.5 + 1 / 8


def _rng_points(family: str, n: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Half log-uniform over a wide domain, half single-cell-like."""
    rng = np.random.default_rng(seed)
    h = n // 2
    mean = np.concatenate([np.exp(rng.uniform(math.log(1e-6), math.log(1e6), h)),
                           np.exp(rng.normal(1.0, 1.0, n - h))])  # fmt: skip
    k = np.where(np.arange(n) < h, np.floor(np.exp(rng.uniform(0, math.log(1e5), n))),
                 1 + rng.poisson(np.minimum(mean, 1e6)))  # fmt: skip
    if family == "ztpoisson":
        return k, [mean]
    theta = np.concatenate([np.exp(rng.uniform(math.log(1e-4), math.log(1e6), h)),
                            np.exp(rng.normal(1.5, 1.0, n - h))])  # fmt: skip
    return k, [mean, theta]


def _reference(family: str, full: bool, k: float, params: list[float]) -> list[float]:
    form = "full" if full else "value"
    if family == "ztpoisson":
        ref = loss_references.ztp(k, params[0], prec=160)
        return [float(ref[form]), float(ref["d_lam"])]
    ref = loss_references.ztnb(k, *params, prec=160)
    return [float(ref[q]) for q in (form, "d_mu", "d_theta")]


def _kernel_function(name: str, xs: np.ndarray) -> np.ndarray:
    return fused.load().elementwise(name, torch.tensor(xs, dtype=torch.float64)).numpy()


@needs_fused
def test_digamma_within_the_bounds_allowance() -> None:
    """|error| <= 16 u (|psi(x)| + 1), the allowance of torch's digamma in the bound."""
    rng = np.random.default_rng(3)
    xs = np.concatenate([np.exp(rng.uniform(math.log(1e-12), math.log(1e10), 400)),
                         1.4616321449683622 + rng.uniform(-1e-3, 1e-3, 50),
                         np.arange(1, 20, dtype=float),
                         [7.999999999, 8.0, 8.000000001]])  # fmt: skip
    got = _kernel_function("digamma", xs)
    with mp.workprec(120):
        ref = np.array([float(mp.digamma(mp.mpf(float(x)))) for x in xs])
    allowance = 16 * 2.0**-53 * (np.abs(ref) + 1)
    assert np.all(np.abs(got - ref) <= allowance), np.max(np.abs(got - ref) / allowance)


@needs_fused
@pytest.mark.parametrize("name", ["log", "log1p", "log_pair", "log1p_pair", "log_pair_reciprocal",
                                  "pair_reciprocal"])
def test_log_and_log1p_within_the_bounds_allowance(name: str) -> None:
    """|error| <= 16 u |f(x)|, the allowance of each function in the bound, over the
    arguments the kernel gives them: log of parameters and of 1 - e^-w in (0, 1], log1p of
    ratios mu/theta from 2^-200 to 2^200 (subnormal-free), near 1 and near 0 included;
    alone and in the pairs that share one division (computed beside 1/x), and 1/x from
    the pair that also gives it."""
    rng = np.random.default_rng(5)
    wide = np.exp(rng.uniform(math.log(1e-60), math.log(1e60), 3000))
    near_one = 1.0 + rng.uniform(-1e-3, 1e-3, 500)
    tiny = np.exp(rng.uniform(math.log(1e-300), math.log(1e-12), 300))
    special = np.array([2.0**-60, 2.0**-53, 2.0**-52, 1e-16, 0.5, 1.0, 2.0, 2.0**200])
    xs = np.concatenate([wide, near_one, tiny, special])
    is_log = name.startswith("log_") or name == "log"
    if is_log:
        xs = xs[xs != 1.0]  # log 1 = 0: checked exactly below
    got = _kernel_function(name, xs)
    with mp.workprec(120):
        fn = {"pair_reciprocal": lambda x: 1 / x}.get(name, mp.log if is_log else mp.log1p)
        ref = np.array([float(fn(mp.mpf(float(x)))) for x in xs])
    err = np.abs(got - ref) / (2.0**-53 * np.abs(ref))
    assert np.all(err <= 16), (np.max(err), xs[np.argmax(err)])
    if is_log:
        assert _kernel_function(name, np.array([1.0]))[0] == 0.0


@needs_fused
@pytest.mark.parametrize("name", ["logf", "expf", "expm1f"])
def test_float32_functions_within_one_ulp(name: str) -> None:
    """The float32 log, exp and expm1 of the narrow ZTP loop (bfloat16 and float16
    results) within 1 float32 ulp of the exact value, the allowance its bound takes
    (ztbench.loss.screened, narrow_limit), over the arguments it gives them: lam and
    1 - e^-lam in [2^-40, 2^40], -lam."""
    rng = np.random.default_rng(8)
    wide = np.exp(rng.uniform(math.log(2.0**-40), math.log(2.0**40), 4000))
    near_one = 1.0 + rng.uniform(-1e-3, 1e-3, 400)
    xs = np.concatenate([wide, near_one, [2.0**-40, 0.25, 0.5, 1.0, 2.0, 2.0**40]])
    if name != "logf":  # -lam, lam from 2^-40 up to where e^-lam underflows
        xs = -xs[xs < 87.0]
    xs = xs.astype(np.float32).astype(np.float64)
    got = _kernel_function(name, xs)
    fn = {"logf": mp.log, "expf": mp.exp, "expm1f": mp.expm1}[name]
    with mp.workprec(100):
        ref = np.array([float(fn(mp.mpf(float(x)))) for x in xs])
    err = np.asarray(ulp_error(got, ref, "float32"))
    assert err.max() <= 1.0, (err.max(), xs[np.argmax(err)])


def _ztp_crossings(n: int, seed: int, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(k, lam) with lam the ``dtype`` values nearest the zero crossings of the ZTP loss
    form (-k log lam + log(e^lam - 1) = 0) and of d/dlam (lam / (1 - e^-lam) = k), and
    their neighbours: the elements whose screen margin is smallest."""
    rng = np.random.default_rng(seed)
    ks, lams = [], []
    for k in np.unique(np.floor(np.exp(rng.uniform(0, math.log(2e3), n)))):
        for g in (lambda x, k=k: -k * math.log(x) + x + math.log(-math.expm1(-x)),
                  lambda x, k=k: x / -math.expm1(-x) - k):
            lo, hi = 1e-3, 4.0 * k + 10.0
            if g(lo) * g(hi) > 0:
                continue
            for _ in range(200):  # bisection to double precision
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if g(lo) * g(mid) > 0 else (lo, mid)
            root = torch.tensor(lo, dtype=torch.float64).to(dtype)
            for step in (-2, -1, 0, 1, 2):  # neighbouring values: adjacent bit patterns
                ks.append(k)
                lams.append(float((root.view(torch.int16) + step).view(dtype)))
    return np.array(ks), np.array(lams)


@needs_fused
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_narrow_ztp_loop_at_the_zero_crossings(dtype: torch.dtype) -> None:
    """bfloat16 and float16 ZTP results (the float32-arithmetic loop, its float64 second
    tier, then the careful kernels) within 0.5 + 1/8 ulp of mpmath at the zero crossings
    of the loss form and of d/dlam, where the float32 bound certifies least, and at
    random points over a wide domain."""
    k_c, lam_c = _ztp_crossings(60, 3, dtype)
    k_r, (lam_r,) = _rng_points("ztpoisson", 600, 21)
    k_np = np.concatenate([k_c, k_r])
    lam = torch.tensor(np.concatenate([lam_c, lam_r])).to(dtype)
    keep = torch.isfinite(lam) & (lam > 0)
    if dtype is torch.float16:
        keep &= torch.tensor(k_np < 6e4)
    k = torch.tensor(k_np, dtype=dtype)[keep]
    lam = lam[keep].clone().requires_grad_(True)
    value = zt_poisson_nll(k, lam, reduction="none")
    (d_lam,) = torch.autograd.grad(value.sum(), [lam])
    dname = str(dtype).removeprefix("torch.")
    lam_v, value = lam.detach(), value.detach()
    for i in range(len(k)):
        ref = _reference("ztpoisson", False, float(k[i]), [float(lam_v[i])])
        for got, want in zip((value[i], d_lam[i]), ref, strict=True):
            err = float(ulp_error(float(got), want, dname))
            assert err <= GOAL, (i, float(k[i]), float(lam_v[i]), float(got), want, err)


@needs_fused
@pytest.mark.parametrize("value64", [False, True])
def test_narrow_loop_retries_in_float64(value64: bool) -> None:
    """With a limit that certifies nothing in float32, every element of the narrow ZTP
    loop goes to its float64 second tier: the float64 screen's results and rejected
    positions exactly (gathered and scattered back in place, at any length and with
    invalid-free padding); with the real limit, the elements left to the careful
    kernels are among those the float64 screen leaves to them."""
    k_np, (lam_np,) = _rng_points("ztpoisson", 5003, 12)
    k = torch.tensor(k_np, dtype=torch.float32)
    lam = torch.tensor(lam_np).to(torch.bfloat16)
    keep = torch.isfinite(lam) & (lam > 0)
    k, lam = k[keep].contiguous(), lam[keep].contiguous()
    mod = fused.load()
    screen = mod.ztp_screen(k, lam.float(), False, True, False, value64, 0.0)
    retried = mod.ztp_screen(k, lam, False, True, False, value64, 1e-30)
    for a, b in zip(screen, retried, strict=True):
        assert torch.equal(a, b)
    narrow = mod.ztp_screen(k, lam, False, True, False, value64, 512.0)
    assert set(narrow[2].tolist()) <= set(screen[2].tolist())


@needs_fused
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
@pytest.mark.parametrize(("full", "is_log"), [(False, False), (True, False), (False, True)])
def test_fused_results_against_mpmath(family: str, dtype: torch.dtype, full: bool,
                                      is_log: bool) -> None:  # fmt: skip
    k_np, raw = _rng_points(family, 160, 11)
    if dtype is torch.float16:  # float16's range: keep every parameter and k finite there
        keep = (k_np < 6e4) & np.all([(p > 1e-4) & (p < 6e4) for p in raw], axis=0)
        k_np, raw = k_np[keep], [p[keep] for p in raw]
    k = torch.tensor(k_np, dtype=torch.float32)
    names = ["lam"] if family == "ztpoisson" else ["mu", "theta"]
    params = [torch.tensor(np.log(p) if is_log else p).to(dtype).requires_grad_(True)
              for p in raw]  # fmt: skip
    fn = zt_poisson_nll if family == "ztpoisson" else zt_negbin_nll
    kw = {("log_" if is_log else "") + n: p for n, p in zip(names, params, strict=True)}
    with recording() as ran:
        value = fn(k, **kw, full=full, reduction="none")
    assert ran == [Path.EAGER_SCREENED_F32]
    grads = torch.autograd.grad(value.sum(), params)
    dname = str(dtype).removeprefix("torch.")
    nat = [p.detach().double().exp() if is_log else p.detach().double() for p in params]
    for i in range(len(k)):
        ref = _reference(family, full, float(k[i]), [float(p[i]) for p in nat])
        # d/dlog p = p d/dp at the parameter the caller means
        ref_g = [r * float(p[i]) if is_log else r for r, p in zip(ref[1:], nat, strict=True)]
        got_all = [value.detach()[i], *(g[i] for g in grads)]
        for got, want in zip(got_all, [ref[0], *ref_g], strict=True):
            err = float(ulp_error(float(got), want, dname))
            assert err <= GOAL, (i, float(k[i]), [float(p[i]) for p in nat], float(got), want)


@needs_fused
@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_fused_and_pure_torch_screens_agree(family: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Both certify each element within 0.5 + 1/8 ulp of the exact value: at most one
    float32 apart, and equal at nearly every element."""
    k_np, raw = _rng_points(family, 20000, 5)
    k = torch.tensor(k_np, dtype=torch.float32)
    params = [torch.tensor(p, dtype=torch.float32) for p in raw]
    fn = zt_poisson_nll if family == "ztpoisson" else zt_negbin_nll

    def run() -> list[np.ndarray]:
        ps = [p.clone().requires_grad_(True) for p in params]
        v = fn(k, *ps, reduction="none")
        return [t.detach().double().numpy() for t in (v, *torch.autograd.grad(v.sum(), ps))]

    with_fused = run()
    monkeypatch.setattr(fused, "load", lambda verbose=False: None)
    pure = run()
    for a, b in zip(with_fused, pure, strict=True):
        steps = np.asarray(ulp_error(a, b, "float32"))
        assert steps.max() <= 1.0
        assert np.mean(steps > 0) < 0.01


def test_build_failure_falls_back_with_one_warning(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch.utils.cpp_extension as ext

    def no_compiler(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("error: command 'c++' failed: No such file or directory")

    monkeypatch.setattr(ext, "load", no_compiler)
    fused._reset()
    try:
        with pytest.warns(RuntimeWarning, match="pure-torch screen"):
            s = fused.status()
        assert not s.active and "could not be built" in s.reason and "c++" in s.reason
        k, lam = torch.tensor([3.0, 7.0]), torch.tensor([2.5, 6.0], requires_grad=True)
        with recording() as ran:
            v = zt_poisson_nll(k, lam, reduction="sum")
        assert ran == [Path.EAGER_SCREENED_F32]
        v.backward()
        assert torch.isfinite(lam.grad).all()
    finally:
        fused._reset()


def test_turned_off_by_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ZTBENCH_FUSED", "0")
    fused._reset()
    try:
        s = fused.status()
        assert not s.active and "ZTBENCH_FUSED=0" in s.reason
    finally:
        fused._reset()


@needs_fused
@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_thread_count_does_not_change_the_bits(family: str) -> None:
    """The kernel runs chunks of 2^15 elements on torch's threads; which thread takes a
    chunk does not change its bits, nor the order of the rejected positions."""
    k_np, raw = _rng_points(family, 100_000, 9)
    k = torch.tensor(k_np, dtype=torch.float32)
    params = [torch.tensor(p, dtype=torch.float32) for p in raw]
    fn = zt_poisson_nll if family == "ztpoisson" else zt_negbin_nll
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            ps = [p.clone().requires_grad_(True) for p in params]
            v = fn(k, *ps, reduction="none")
            outs.append([v.detach(), *torch.autograd.grad(v.sum(), ps)])
    finally:
        torch.set_num_threads(threads)
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            assert torch.equal(a, b)
