"""The fused float64 ZTP kernel (ztbench.loss.fused.ztp_float64, csrc/ztp_float64.h): its
double-double log against mpmath, its certified elements within the goals (4 ulp for the
value, 16 ulp for d/dlam) at realistic, log-uniform and zero-crossing points, the loss
through it (and without it) against mpmath, the sharpness of its bound, the elements
outside its range, and its independence of the thread count; the same for the float64
ZTNB kernel (ztbench.loss.fused.ztnb_float64, csrc/ztnb_float64.h)."""

from __future__ import annotations

import math

import loss_references
import mpmath as mp
import numpy as np
import pytest
import torch

from ztbench.core.metrics import ulp_error
from ztbench.loss import eager, fused, zt_negbin_nll, zt_poisson_nll
from ztbench.loss.paths import Path, recording

ACTIVE = fused.status().active
needs_fused = pytest.mark.skipif(not ACTIVE, reason=f"fused kernel: {fused.status().reason}")
VALUE_GOAL, GRAD_GOAL = 4.0, 16.0


def _log_dd(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mod = fused.load()
    table = fused.log_table(mod.log_table_step, mod.log_table_offset, mod.log_table_size)
    out = mod.log_double_double(torch.tensor(xs, dtype=torch.float64), table).numpy()
    return out[0], out[1]


@needs_fused
def test_log_dd_within_its_bound() -> None:
    """hi + lo within 2^-67 |log x| (the kernel's bound allows 2^-66) over [2^-500, 2^500]:
    log-uniform, near 1 (j = 0, where the result is relative to a tiny log), and at the
    table's bucket edges 1 + (j + 1/2)/128 and the reduction's edges sqrt(2)/2, sqrt(2)."""
    rng = np.random.default_rng(21)
    edges = 1.0 + (np.arange(-38, 54) + 0.5) / 128
    xs = np.concatenate([
        np.exp2(rng.uniform(-500, 500, 3000)),
        1.0 + rng.uniform(-1e-2, 1e-2, 800),
        1.0 + np.exp2(rng.uniform(-60, -10, 200)) * rng.choice([-1.0, 1.0], 200),
        np.concatenate([np.nextafter(edges, 0), edges, np.nextafter(edges, 2)]),
        [math.sqrt(2) / 2, np.nextafter(math.sqrt(2) / 2, 0), math.sqrt(2),
         np.nextafter(math.sqrt(2), 0), 2.0**-500, 2.0**500, 0.5, 2.0, math.e],
    ])  # fmt: skip
    xs = xs[xs != 1.0]  # log 1 = 0: checked exactly below
    hi, lo = _log_dd(xs)
    with mp.workprec(200):
        worst = 0.0
        for x, h, lw in zip(xs, hi, lo, strict=True):
            ref = mp.log(mp.mpf(float(x)))
            err = abs(mp.mpf(float(h)) + mp.mpf(float(lw)) - ref)
            worst = max(worst, float(err / abs(ref)))
    assert worst <= 2.0**-67, math.log2(worst)
    assert _log_dd(np.array([1.0])) == (0.0, 0.0)


def _crossings() -> tuple[np.ndarray, np.ndarray]:
    """(k, lam): the float64 neighbours (within 3 ulp) of the zero crossings of the value
    (both roots of log(expm1(lam)) = k log(lam), k >= 3) and of d/dlam (lam/(1 - e^-lam)
    = k), found by mpmath."""
    ks, lams = [], []
    with mp.workprec(200):
        for k in (2, 3, 4, 7, 12, 30, 100, 1000, 10**5):
            kk = mp.mpf(k)

            def value(lam: mp.mpf, kk: mp.mpf = kk) -> mp.mpf:
                return mp.log(mp.expm1(lam)) - kk * mp.log(lam)

            def grad(lam: mp.mpf, kk: mp.mpf = kk) -> mp.mpf:
                return 1 / -mp.expm1(-lam) - kk / lam

            roots = [mp.findroot(grad, (mp.mpf("1e-3"), 2 * kk), solver="anderson")]
            lo_val = value(roots[0])  # the value's minimum (at the derivative's root)
            if lo_val < 0:
                roots.append(mp.findroot(value, (mp.mpf("1e-6"), roots[0]), solver="anderson"))
                roots.append(mp.findroot(value, (roots[0], 4 * kk + 40), solver="anderson"))
            for root in roots:
                x = float(root)
                for step in range(-3, 4):
                    y = x
                    for _ in range(abs(step)):
                        y = float(np.nextafter(y, math.copysign(math.inf, step)))
                    ks.append(float(k))
                    lams.append(y)
    return np.array(ks), np.array(lams)


def _points(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Realistic (lam = e^N(1, 1), k = 1 + Poisson(lam)), log-uniform (lam in
    [1e-30, 1e9], k in [1, 1e7]) and the zero crossings."""
    rng = np.random.default_rng(seed)
    lam_r = np.exp(rng.normal(1.0, 1.0, n))
    k_r = 1.0 + rng.poisson(lam_r)
    lam_u = np.exp(rng.uniform(math.log(1e-30), math.log(1e9), n))
    k_u = np.floor(np.exp(rng.uniform(0.0, math.log(1e7), n)))
    k_c, lam_c = _crossings()
    return np.concatenate([k_r, k_u, k_c]), np.concatenate([lam_r, lam_u, lam_c])


def _reference(k: float, lam: float) -> tuple[float, float]:
    """(value, d/dlam) rounded to float64, at a precision doubled until two agree, from
    160 bits plus twice |log2 lam| (the value cancels ~|log2 lam| bits at tiny lam, k = 1;
    d/dlam = -k/lam + 1/(1 - e^-lam) up to ~1.44 lam bits where lam ~ k)."""
    prec, last = 160 + 2 * int(abs(math.log2(lam))), None
    while prec <= 10_000:
        ref = loss_references.ztp(k, lam, prec=prec)
        now = (float(ref["value"]), float(ref["d_lam"]))
        if now == last:
            return now
        prec, last = 2 * prec, now
    raise AssertionError(f"no stable reference at k={k}, lam={lam}")


def _errors(k: np.ndarray, lam: np.ndarray, value: np.ndarray,
            d_lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    ev, ed = [], []
    for ki, li, v, d in zip(k, lam, value, d_lam, strict=True):
        ref_v, ref_d = _reference(float(ki), float(li))
        ev.append(float(ulp_error(float(v), ref_v, "float64")))
        ed.append(float(ulp_error(float(d), ref_d, "float64")))
    return np.array(ev), np.array(ed)


@needs_fused
def test_certified_elements_meet_the_goals() -> None:
    """The bound's soundness: every element the kernel does not flag is within 4 ulp
    (value) and 16 ulp (d/dlam) of mpmath, crossings included (where it must flag)."""
    k, lam = _points(31, 1500)
    out = fused.ztp_float64(torch.tensor(k), torch.tensor(lam), True)
    assert out is not None
    value, d_lam, open_v, open_d, outside = (t.numpy() for t in out)
    assert outside.size == 0
    ev, ed = _errors(k, lam, value, d_lam)
    certified_v = np.setdiff1d(np.arange(k.size), open_v)
    certified_d = np.setdiff1d(np.arange(k.size), open_d)
    assert ev[certified_v].max() <= VALUE_GOAL, k[certified_v][np.argmax(ev[certified_v])]
    assert ed[certified_d].max() <= GRAD_GOAL, k[certified_d][np.argmax(ed[certified_d])]
    # the crossings' neighbours are where the plain sums fail: some must be flagged
    assert open_v.size > 0 and open_d.size > 0


@needs_fused
def test_bound_is_sharp_on_realistic_inputs() -> None:
    """Few realistic elements go to the double-double refinement (its cost per element is
    a hundred times the kernel's)."""
    rng = np.random.default_rng(8)
    lam = np.exp(rng.normal(1.0, 1.0, 200_000))
    k = 1.0 + rng.poisson(lam)
    out = fused.ztp_float64(torch.tensor(k), torch.tensor(lam), True)
    assert out is not None
    assert out[2].numel() / k.size < 1e-3 and out[3].numel() / k.size < 1e-3


def _count_kernel_calls(monkeypatch, name: str, kernel: bool) -> list[int]:  # type: ignore[no-untyped-def]
    """The sizes of the calls of ``fused.<name>`` that ran the kernel; without ``kernel``,
    the fused library is made unavailable first."""
    calls: list[int] = []
    real = getattr(fused, name)

    def spy(k, *rest):  # type: ignore[no-untyped-def]
        out = real(k, *rest)
        if out:
            calls.append(k.numel())
        return out

    monkeypatch.setattr(fused, name, spy)
    if not kernel:
        monkeypatch.setattr(fused, "load", lambda verbose=False: None)
    return calls


@pytest.mark.parametrize("kernel", [True, False], ids=["fused", "pure-torch"])
def test_loss_in_float64_meets_the_goals(kernel: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The public loss in float64 (value and d/dlam by autograd) against mpmath, with the
    fused kernel (where it is built) and without it."""
    if kernel and not ACTIVE:
        pytest.skip(f"fused kernel: {fused.status().reason}")
    calls = _count_kernel_calls(monkeypatch, "ztp_float64", kernel)
    k, lam_np = _points(47, 400)
    lam = torch.tensor(lam_np, requires_grad=True)
    with recording() as ran:
        value = zt_poisson_nll(torch.tensor(k), lam, reduction="none")
    (d_lam,) = torch.autograd.grad(value.sum(), [lam])
    assert ran == [Path.EAGER_REFINED]
    assert bool(calls) == kernel
    ev, ed = _errors(k, lam_np, value.detach().numpy(), d_lam.numpy())
    assert ev.max() <= VALUE_GOAL, (k[np.argmax(ev)], lam_np[np.argmax(ev)], ev.max())
    assert ed.max() <= GRAD_GOAL, (k[np.argmax(ed)], lam_np[np.argmax(ed)], ed.max())


@needs_fused
def test_elements_outside_the_kernels_range() -> None:
    """lam outside [2^-500, 2^500] and k >= 2^53 are left to the careful kernels: flagged
    as outside, and the loss there still meets the goals."""
    k = np.array([1.0, 3.0, 2.0, 5.0, 2.0**53, 7.0])
    lam = np.array([1e-300, 2.0**-501, 2.0**501, 1e300, 2.0**53 + 2.0, 2.5])
    out = fused.ztp_float64(torch.tensor(k), torch.tensor(lam), True)
    assert out is not None
    assert out[4].tolist() == [0, 1, 2, 3, 4]
    lam_t = torch.tensor(lam, requires_grad=True)
    value = zt_poisson_nll(torch.tensor(k), lam_t, reduction="none")
    (d_lam,) = torch.autograd.grad(value.sum(), [lam_t])
    ev, ed = _errors(k, lam, value.detach().numpy(), d_lam.numpy())
    assert ev.max() <= VALUE_GOAL and ed.max() <= GRAD_GOAL, (ev, ed)


def _same_bits_at_1_2_3_threads(run) -> None:  # type: ignore[no-untyped-def]
    """run() (a kernel call) gives the same tensors at 1, 2 and 3 threads: the kernels run
    chunks of 2^15 elements on torch's threads, and which thread takes a chunk changes
    neither its bits nor the order of the flagged positions."""
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            out = run()
            assert out
            outs.append(out)
    finally:
        torch.set_num_threads(threads)
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            assert torch.equal(a, b)


@needs_fused
def test_thread_count_does_not_change_the_bits() -> None:
    k, lam = (torch.tensor(a) for a in _points(5, 50_000))
    _same_bits_at_1_2_3_threads(lambda: fused.ztp_float64(k, lam, True))


# ---------------------------------------------------------------------------- ZTNB

NB_NAMES = ("value", "d_mu", "d_theta")
NB_GOALS = (VALUE_GOAL, GRAD_GOAL, GRAD_GOAL)
ZTNB_ACTIVE = ACTIVE and fused.load() is not None and bool(fused.load().ztnb_float64_available)
needs_ztnb = pytest.mark.skipif(not ZTNB_ACTIVE, reason="no fused float64 ZTNB kernel here")

# the zero crossings where the plain float64 sums are far off (found by an adversarial
# search, confirmed with mpmath at 600 bits): value, d/dmu, d/dtheta
HARD_ZTNB = [
    (5.0, 929.0906706134333, 3.507471580894351e-08),
    (125.0, 74.77387562598409, 0.14612505133981604),
    (6521.0, 1340761.9849631316, 0.10482328956878444),
]


def _nb_reference(k: float, mu: float, theta: float) -> tuple[float, float, float]:
    """(value, d/dmu, d/dtheta) rounded to float64, at a precision doubled from 160 bits
    until two agree."""
    prec, last = 160, None
    while prec <= 10_000:
        ref = loss_references.ztnb(k, mu, theta, prec=prec)
        now = tuple(float(ref[q]) for q in NB_NAMES)
        if now == last:
            return now  # type: ignore[return-value]
        prec, last = 2 * prec, now
    raise AssertionError(f"no stable reference at k={k}, mu={mu}, theta={theta}")


def _nb_points(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Realistic (mu = e^N(1, 1), theta = e^N(1.5, 1), k = 1 + Poisson(mu)), log-uniform
    (mu, theta in [1e-6, 1e6], k in [1, 1e5]) and the hard crossings."""
    rng = np.random.default_rng(seed)
    mu_r, th_r = np.exp(rng.normal(1.0, 1.0, n)), np.exp(rng.normal(1.5, 1.0, n))
    k_r = 1.0 + rng.poisson(mu_r)
    mu_u = np.exp(rng.uniform(math.log(1e-6), math.log(1e6), n))
    th_u = np.exp(rng.uniform(math.log(1e-6), math.log(1e6), n))
    k_u = np.floor(np.exp(rng.uniform(0.0, math.log(1e5), n)))
    hard = np.array(HARD_ZTNB).T
    return (np.concatenate([k_r, k_u, hard[0]]), np.concatenate([mu_r, mu_u, hard[1]]),
            np.concatenate([th_r, th_u, hard[2]]))  # fmt: skip


def _nb_errors(k: np.ndarray, mu: np.ndarray, theta: np.ndarray,
               got: list[np.ndarray]) -> np.ndarray:  # fmt: skip
    """(3, n) ulp errors of value, d/dmu, d/dtheta."""
    errs = np.zeros((3, k.size))
    for i in range(k.size):
        ref = _nb_reference(float(k[i]), float(mu[i]), float(theta[i]))
        for q in range(3):
            errs[q, i] = float(ulp_error(float(got[q][i]), ref[q], "float64"))
    return errs


@needs_ztnb
@pytest.mark.parametrize(("name", "allowance"),
                         [("log", 2.0**-62), ("log1p", 2.0**-62), ("expm1", 2.0**-61),
                          ("lgamma", 2.0**-60)])  # fmt: skip
def test_long_double_functions_within_their_allowance(name: str, allowance: float) -> None:
    """glibc's long double functions, as the ZTNB kernel calls them, against mpmath: within
    the relative allowance its bound gives each (lgamma: of max(|lgamma|, 1)), over the
    arguments the kernel forms (positive products and ratios, 1 - e^-w in (0, 1], -w for
    w > 0, theta and k + theta), near the functions' zeros included."""
    rng = np.random.default_rng(17)
    wide = np.exp2(rng.uniform(-900, 900, 1500))
    args = {
        "log": np.concatenate([wide, rng.uniform(0, 1, 300), 1 + rng.uniform(-1e-6, 1e-6, 100)]),
        "log1p": np.concatenate([wide, rng.uniform(-0.99, 1, 400), rng.uniform(-1e-9, 1e-9, 50)]),
        "expm1": -np.concatenate([np.exp2(rng.uniform(-60, 13, 1500))]),
        "lgamma": np.concatenate([np.exp2(rng.uniform(-60, 60, 1500)),
                                  1 + rng.uniform(-1e-3, 1e-3, 100),
                                  2 + rng.uniform(-1e-3, 1e-3, 100)]),
    }[name]  # fmt: skip
    args = args[args != 0]
    out = fused.load().long_double_function(name, torch.tensor(args)).numpy()
    fn = {"log": mp.log, "log1p": mp.log1p, "expm1": mp.expm1, "lgamma": mp.loggamma}[name]
    worst = 0.0
    with mp.workprec(200):
        for x, hi, lo in zip(args, out[0], out[1], strict=True):
            ref = fn(mp.mpf(float(x)))
            scale = max(abs(ref), 1) if name == "lgamma" else abs(ref)
            if scale == 0:
                assert hi == 0.0 and lo == 0.0
                continue
            err = abs(mp.mpf(float(hi)) + mp.mpf(float(lo)) - ref) / scale
            worst = max(worst, float(err))
    assert worst <= allowance, (name, math.log2(worst) if worst else None)


@needs_ztnb
def test_ztnb_certified_elements_meet_the_goals() -> None:
    """The bound's soundness: every element the kernel does not flag is within 4 ulp
    (value) and 16 ulp (derivatives) of mpmath; the hard crossings are flagged."""
    k, mu, theta = _nb_points(13, 500)
    out = fused.ztnb_float64(torch.tensor(k), torch.tensor(mu), torch.tensor(theta), True)
    assert out is not None
    got, flagged = [t.numpy() for t in out[:3]], [t.numpy() for t in out[3:]]
    errs = _nb_errors(k, mu, theta, got)
    for q in range(3):
        certified = np.setdiff1d(np.arange(k.size), flagged[q])
        worst = certified[np.argmax(errs[q, certified])]
        assert errs[q, worst] <= NB_GOALS[q], (NB_NAMES[q], k[worst], mu[worst], theta[worst])
        assert k.size - 3 + q in flagged[q]  # its hard crossing


@pytest.mark.parametrize("kernel", [True, False], ids=["fused", "pure-torch"])
def test_ztnb_loss_in_float64_meets_the_goals(kernel: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The public loss in float64 (value, derivatives by autograd) against mpmath, with
    the fused kernel (where it is built) and without it, the hard crossings included."""
    if kernel and not ZTNB_ACTIVE:
        pytest.skip("no fused float64 ZTNB kernel here")
    calls = _count_kernel_calls(monkeypatch, "ztnb_float64", kernel)
    k, mu_np, th_np = _nb_points(29, 150)
    mu, theta = (torch.tensor(a, requires_grad=True) for a in (mu_np, th_np))
    with recording() as ran:
        value = zt_negbin_nll(torch.tensor(k), mu, theta, reduction="none")
    grads = torch.autograd.grad(value.sum(), [mu, theta])
    assert ran == [Path.EAGER_REFINED]
    assert bool(calls) == kernel
    errs = _nb_errors(k, mu_np, th_np, [value.detach().numpy(), *(g.numpy() for g in grads)])
    for q in range(3):
        i = int(np.argmax(errs[q]))
        assert errs[q, i] <= NB_GOALS[q], (NB_NAMES[q], k[i], mu_np[i], th_np[i], errs[q, i])


@needs_ztnb
def test_ztnb_thread_count_does_not_change_the_bits() -> None:
    k, mu, theta = (torch.tensor(a) for a in _nb_points(7, 40_000))
    _same_bits_at_1_2_3_threads(lambda: fused.ztnb_float64(k, mu, theta, True))


INVALID = [(0.0, 2.0), (2.5, 2.0), (math.inf, 2.0), (3.0, 0.0), (3.0, math.nan), (3.0, math.inf)]


@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
@pytest.mark.parametrize(("bad_k", "bad_p"), INVALID)
def test_float64_invalid_inputs_raise_or_give_nan(family: str, bad_k: float, bad_p: float) -> None:
    """The float64 fast path checks the inputs in the kernel's own pass; an invalid element
    sends the call to the general path: NaN there (and only there) with validate=False, a
    ValueError naming the input with validate=True, as without the kernel."""
    fn = zt_poisson_nll if family == "ztpoisson" else zt_negbin_nll
    k = torch.tensor([3.0, bad_k, 5.0], dtype=torch.float64)
    p = torch.tensor([2.0, bad_p, 4.0], dtype=torch.float64)
    params = [p] if family == "ztpoisson" else [p, torch.full_like(p, 1.5)]
    out = fn(k, *params, reduction="none", validate=False)
    assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2]]).all()
    clean = fn(k[[0, 2]], *(q[[0, 2]] for q in params), reduction="none")
    assert torch.equal(out[[0, 2]], clean)
    with pytest.raises(ValueError, match=r"k |k$|k must|lam|mu"):
        fn(k, *params, reduction="none", validate=True)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_compiled_float64_runs_the_eager_forward(family: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Under torch.compile, natural float64 parameters of k's shape go to the fused float64
    kernel as one opaque node: eager mode's bits for the loss and its gradients, the
    kernel called once per call; an invalid element gives NaN there (validate=False) or
    compiled validation's RuntimeError (validate=True)."""
    if not ACTIVE:
        pytest.skip(f"fused kernel: {fused.status().reason}")
    name = "ztp_float64" if family == "ztpoisson" else "ztnb_float64"
    fn = zt_poisson_nll if family == "ztpoisson" else zt_negbin_nll
    k_np, lam_np = _points(5, 300)
    k = torch.tensor(k_np)
    params = [torch.tensor(lam_np, requires_grad=True)]
    if family == "ztnb":
        params.append(torch.tensor(np.exp(np.linspace(-3.0, 4.0, k.numel())), requires_grad=True))

    def loss(k: torch.Tensor, *ps: torch.Tensor, validate: bool = False) -> torch.Tensor:
        return fn(k, *ps, reduction="none", validate=validate)

    eager_value = loss(k, *params)
    eager_grads = torch.autograd.grad(eager_value.sum(), params)
    calls = _count_kernel_calls(monkeypatch, name, True)
    # the general path's conversions and checks are neither traced nor run
    general: list[int] = []
    real_prepare = eager.prepare_inputs
    monkeypatch.setattr(eager, "prepare_inputs", lambda *a: general.append(1) or real_prepare(*a))
    torch._dynamo.reset()
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    value = compiled(k, *params)
    grads = torch.autograd.grad(value.sum(), params)
    assert calls == [k.numel()] and general == []
    assert torch.equal(value, eager_value)
    assert all(torch.equal(g, e) for g, e in zip(grads, eager_grads, strict=True))
    bad = k.clone()
    bad[7] = 2.5
    out = compiled(bad, *params).detach()
    assert torch.isnan(out[7]) and torch.isfinite(out[:7]).all() and torch.isfinite(out[8:]).all()
    assert torch.equal(out[:7], eager_value[:7].detach())
    strict = torch.compile(lambda k, *ps: loss(k, *ps, validate=True), backend="aot_eager",
                           fullgraph=True)  # fmt: skip
    with pytest.raises(RuntimeError, match="invalid input to a zero-truncated loss"):
        strict(bad, *params)


@needs_ztnb
@pytest.mark.parametrize("name", ["expm1", "exp", "log", "log1p"])
def test_double_double_functions_within_their_allowance(name: str) -> None:
    """The double-double expm1, exp, log, log1p of the ZTNB kernel's second tier against
    mpmath at 300 bits, over the arguments the tier forms and the ranges double_double.h
    states (double-double arguments with a low part; expm1 of -w down to -700 and of tiny
    w; exp down to -670; log of products up to 2^950 and of 1 - e^-w down to 2^-400; log1p
    of mu/theta and theta/mu up to 2^+-800): within 2^-99 relative (log: 2^-99 absolute
    plus 2^-104 relative), the allowance of the tier's bound."""
    rng = np.random.default_rng(23)
    n = 1500
    hi = {
        "expm1": np.concatenate([-np.exp2(rng.uniform(-400, math.log2(700), n)),
                                 np.exp2(rng.uniform(-60, math.log2(700), 300))]),
        "exp": np.concatenate([-np.exp2(rng.uniform(-60, math.log2(670), n)),
                               np.exp2(rng.uniform(-60, math.log2(700), 300))]),
        "log": np.concatenate([np.exp2(rng.uniform(-1000, 950, n)),
                               1 + rng.uniform(-1e-6, 1e-6, 200)]),
        "log1p": np.concatenate([np.exp2(rng.uniform(-800, 800, n)),
                                 rng.uniform(-0.5, 1, 300)]),
    }[name]  # fmt: skip
    lo = hi * np.exp2(-54) * rng.uniform(-1, 1, hi.size)  # below half an ulp of hi
    out = fused.load().double_double_function(name, torch.tensor(hi), torch.tensor(lo)).numpy()
    fn = {"expm1": mp.expm1, "exp": mp.exp, "log": mp.log, "log1p": mp.log1p}[name]
    worst = 0.0
    with mp.workprec(300):
        for x_hi, x_lo, r_hi, r_lo in zip(hi, lo, out[0], out[1], strict=True):
            ref = fn(mp.mpf(float(x_hi)) + mp.mpf(float(x_lo)))
            scale = 1 + abs(ref) * 2.0**-5 if name == "log" else abs(ref)
            worst = max(worst, float(abs(mp.mpf(float(r_hi)) + mp.mpf(float(r_lo)) - ref) / scale))
    assert worst <= 2.0**-99, (name, math.log2(worst))


def _nb_crossings(output: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k, mu, theta) at and near the zero crossings of one ZTNB output (0 the value, 1
    d/dmu in mu, 2 d/dtheta in theta), four points per crossing: the two floats around it
    and two at 2^-36 .. 2^-6 relative from it. k in [1, 16], the other parameter
    log-uniform over [0.05, 50]; the crossing bracketed on a grid of the varied parameter
    and bisected to adjacent floats with the reference's sign at 200 bits."""
    rng = np.random.default_rng(seed)
    grid = np.exp(np.linspace(math.log(1e-3), math.log(1e4), 120))
    name = NB_NAMES[output]
    points: list[tuple[float, float, float]] = []
    while len(points) < n:
        k = float(rng.integers(1, 17))
        other = float(math.exp(rng.uniform(math.log(0.05), math.log(50.0))))

        def at(p: float, k: float = k, other: float = other) -> mp.mpf:
            mu, theta = (other, p) if output == 2 else (p, other)
            return loss_references.ztnb(k, mu, theta, prec=200)[name]

        signs = [at(float(p)) > 0 for p in grid]
        change = [i for i in range(len(grid) - 1) if signs[i] != signs[i + 1]]
        if not change:
            continue
        lo, hi = float(grid[change[0]]), float(grid[change[0] + 1])
        s_lo = signs[change[0]]
        while np.nextafter(lo, math.inf) < hi:
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if (at(mid) > 0) == s_lo:
                lo = mid
            else:
                hi = mid
        # the two floats around the crossing, then 2^-36 .. 2^-6 relative away (where
        # the output's terms cancel ~2^36 .. 2^6-fold)
        offsets = [0.0, *np.exp2(-rng.uniform(6, 36, 2)) * rng.choice([-1.0, 1.0], 2)]
        for p in (lo, hi, *(lo * (1.0 + d) for d in offsets[1:])):
            points.append((k, other, p) if output == 2 else (k, p, other))
    k, mu, theta = (np.array(c) for c in zip(*points, strict=True))
    return k, mu, theta


@needs_ztnb
@pytest.mark.parametrize("output", [0, 1, 2], ids=NB_NAMES)
def test_second_tier_certified_elements_meet_the_goals(output: int) -> None:
    """The ZTNB kernel's double-double second tier (k <= 16), at and near the zero
    crossings of each output and on realistic inputs: every result it certifies is within
    the goal of mpmath (4 ulp value, 16 ulp derivatives), it certifies most of the points
    near the crossings (the terms cancelling up to 2^36-fold) and every realistic input,
    and the kernel flags only what neither of its passes certifies."""
    k_c, mu_c, th_c = _nb_crossings(output, 40, 100 + output)
    near = np.arange(k_c.size) % 4 >= 2  # not the floats around the crossing
    rng = np.random.default_rng(41)
    mu_r, th_r = np.exp(rng.normal(1.0, 1.0, 150)), np.exp(rng.normal(1.5, 1.0, 150))
    k_r = np.minimum(1.0 + rng.poisson(mu_r), 16.0)
    k, mu, theta = (np.concatenate(p) for p in ((k_c, k_r), (mu_c, mu_r), (th_c, th_r)))
    tensors = [torch.tensor(a) for a in (k, mu, theta)]
    tier = fused.load().ztnb_second_tier(*tensors).numpy()
    errs = _nb_errors(k, mu, theta, list(tier))
    certified = ~np.isnan(tier[output])
    assert certified[k_c.size:].all()  # realistic inputs: no cancellation beyond its reach
    assert certified[: k_c.size][near].mean() >= 0.75, certified[: k_c.size]
    errs_certified = np.where(certified, errs[output], 0.0)
    worst = int(np.argmax(errs_certified))
    assert errs_certified[worst] <= NB_GOALS[output], (k[worst], mu[worst], theta[worst])
    # the kernel: flags only elements neither pass certifies, and its unflagged results
    # meet the goal
    out = fused.ztnb_float64(*tensors, True)
    flagged = out[3 + output].numpy()
    assert set(flagged.tolist()) <= set(np.flatnonzero(~certified).tolist())
    kept = np.setdiff1d(np.arange(k.size), flagged)
    kernel_errs = _nb_errors(k[kept], mu[kept], theta[kept], [t.numpy()[kept] for t in out[:3]])
    assert kernel_errs[output].max() <= NB_GOALS[output]


@needs_ztnb
def test_second_tier_at_the_corners_of_its_range() -> None:
    """The second tier at the extremes of where it applies (mu 2^+-400, theta 2^-400 and
    2^56, k 1 and 16, so mu/theta up to 2^+-800 and products up to 2^900): every result it
    certifies within the goal of mpmath; just outside the range, nothing."""
    pts = [(k, mu, th) for k in (1.0, 2.0, 16.0) for mu in (2.0**-400, 1.0, 2.0**400)
           for th in (2.0**-400, 1.0, 2.0**56)]  # fmt: skip
    outside = [(17.0, 2.0, 3.0), (2.0, 2.0**401, 3.0), (2.0, 3.0, 2.0**57)]
    k, mu, theta = (np.array(c) for c in zip(*(pts + outside), strict=True))
    tier = fused.load().ztnb_second_tier(*(torch.tensor(a) for a in (k, mu, theta))).numpy()
    n = len(pts)
    assert np.isnan(tier[:, n:]).all()
    errs = _nb_errors(k[:n], mu[:n], theta[:n], list(tier[:, :n]))
    certified = ~np.isnan(tier[:, :n])
    assert certified.mean() > 0.5, certified
    for q in range(3):
        assert np.where(certified[q], errs[q], 0.0).max() <= NB_GOALS[q], NB_NAMES[q]
