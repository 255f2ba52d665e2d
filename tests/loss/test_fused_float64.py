"""The fused float64 ZTP kernel (ztbench.loss.fused.ztp_float64, csrc/ztp_float64.h): its
double-double log against mpmath, its certified elements within the goals (4 ulp for the
value, 16 ulp for d/dlam) at realistic, log-uniform and zero-crossing points, the loss
through it (and without it) against mpmath, the sharpness of its bound, the elements
outside its range, and its independence of the thread count."""

from __future__ import annotations

import math

import loss_references
import mpmath as mp
import numpy as np
import pytest
import torch

from ztbench.core.metrics import ulp_error
from ztbench.loss import fused, zt_poisson_nll
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


@pytest.mark.parametrize("kernel", [True, False], ids=["fused", "pure-torch"])
def test_loss_in_float64_meets_the_goals(kernel: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The public loss in float64 (value and d/dlam by autograd) against mpmath, with the
    fused kernel (where it is built) and without it."""
    if kernel and not ACTIVE:
        pytest.skip(f"fused kernel: {fused.status().reason}")
    calls: list[int] = []
    real = fused.ztp_float64

    def spy(k, lam, need):  # type: ignore[no-untyped-def]
        out = real(k, lam, need)
        if out is not None:
            calls.append(k.numel())
        return out

    monkeypatch.setattr(fused, "ztp_float64", spy)
    if not kernel:
        monkeypatch.setattr(fused, "load", lambda verbose=False: None)
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


@needs_fused
def test_thread_count_does_not_change_the_bits() -> None:
    k, lam = _points(5, 50_000)
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            out = fused.ztp_float64(torch.tensor(k), torch.tensor(lam), True)
            assert out is not None
            outs.append(out)
    finally:
        torch.set_num_threads(threads)
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            assert torch.equal(a, b)
