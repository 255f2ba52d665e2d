"""Inputs at the edges of the shipped loss's contract: weights, extreme but valid
parameters, the distributions' constraints and sampler, memory per element of the full
form, warnings on a first call, meta tensors.

References: mpmath for the loss on a grid of extreme parameters (the NLL formula rewritten
by exact identities, see :func:`_ztnb_reference`), exact pmfs (``math.lgamma``, scipy) for
the sampler.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats

from ztbench.core.metrics import ulp_error
from ztbench.loss import (
    ZeroTruncatedNegativeBinomial,
    ZeroTruncatedNegativeBinomialNLLLoss,
    ZeroTruncatedPoisson,
    zt_negbin_nll,
    zt_poisson_nll,
)

F64 = torch.float64


def _run_python(script: str, *flags: str, timeout: float = 120.0) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """``python [flags] -c script`` in a fresh interpreter (output captured, not checked)."""
    return subprocess.run(
        [sys.executable, *flags, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------------------------ weight
def _calls(
    weight: torch.Tensor, validate: bool, mask: torch.Tensor | None = None
) -> Iterator[Callable[[str], torch.Tensor]]:
    """The weighted calls: both families, natural and log parameters, the nn module."""
    k = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    p = torch.tensor([0.5, 2.0, 4.0], dtype=F64)
    opts = {"weight": weight, "validate": validate, "mask": mask}
    yield lambda red: zt_poisson_nll(k, p, reduction=red, **opts)
    yield lambda red: zt_negbin_nll(k, p, 1.5, reduction=red, **opts)
    yield lambda red: zt_negbin_nll(k, log_mu=p.log(), log_theta=p, reduction=red, **opts)
    crit = ZeroTruncatedNegativeBinomialNLLLoss(reduction="mean", validate=validate)
    yield lambda red: crit(p.log(), k, p, mask=mask, weight=weight)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (-1.0, "weight must be >= 0"),
        (math.nan, "weight contains NaN"),
        (math.inf, "weight must be finite"),
    ],
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_invalid_weight_raises_naming_weight(bad: float, message: str, reduction: str) -> None:
    weight = torch.tensor([1.0, bad, 1.0], dtype=F64)
    for call in _calls(weight, validate=True):
        with pytest.raises(ValueError, match=message):
            call(reduction)
    # a masked-out position is checked too: its weight multiplies the 0 the mask leaves
    # there, and NaN * 0 would still reach the sum
    for call in _calls(weight, validate=True, mask=torch.tensor([True, False, True])):
        with pytest.raises(ValueError, match="weight"):
            call(reduction)


def test_valid_weights_pass_and_validate_false_keeps_nan_in_nan_out() -> None:
    ok = torch.tensor([0.0, 2.0, 0.5], dtype=F64)
    integer = torch.tensor([0, 2, 1])
    for w in (ok, integer, torch.tensor(3.0, dtype=F64)):
        for call in _calls(w, validate=True):
            assert torch.isfinite(call("mean")).all()
    nan = torch.tensor([1.0, math.nan, 1.0], dtype=F64)
    for call in _calls(nan, validate=False):
        assert torch.isnan(call("mean"))
    neg = torch.tensor([1.0, -1.0], dtype=F64)
    k = torch.tensor([1.0, 2.0], dtype=F64)
    p = torch.tensor([1.0, 2.0], dtype=F64)
    assert zt_negbin_nll(k, p, 1.0, weight=neg, validate=False) == -math.inf  # as before


# ------------------------------------------------------------------- extreme parameters
def _certified(terms: Callable[[], list[mpmath.mpf]]) -> float:
    """The sum of ``terms()`` (recomputed at each precision) correctly rounded to float64:
    the working precision raised to 25 digits beyond the terms' cancellation, the result
    certified by a second evaluation 20 digits higher."""
    dps = 50
    while True:
        with mpmath.workdps(dps):
            ts = terms()
            v = mpmath.fsum(ts)
            big = max(abs(t) for t in ts)
            if v == 0:  # an exact 0 (or cancellation beyond dps): more digits, up to 1600
                need = dps if dps >= 1600 else 2 * dps
            else:
                need = 25 + int(mpmath.log10(max(big / abs(v), 1)))
        if need <= dps:
            with mpmath.workdps(dps + 20):
                v2 = mpmath.fsum(terms())
            assert abs(v2 - v) <= abs(v2) * mpmath.mpf(10) ** -20, (v, v2)
            return float(v2)
        dps = need


def _natural(mu: float, theta: float, log: bool) -> tuple[mpmath.mpf, mpmath.mpf]:
    """The exact parameters a float64 input stands for (exp of a log-parameter)."""
    if log:
        return mpmath.exp(mpmath.mpf(mu)), mpmath.exp(mpmath.mpf(theta))
    return mpmath.mpf(mu), mpmath.mpf(theta)


def _ztnb_reference(k: int, mu: float, theta: float, log: bool = False) -> float:
    """The ZTNB loss (no lgamma(k + 1)) in mpmath, correctly rounded to float64 (``log``:
    mu and theta are log mu and log theta).

    The NLL formula lgamma(theta) - lgamma(k + theta) - theta log(theta)
    + log((theta + mu)^theta - theta^theta) - k log(mu) + k log(theta + mu) rewritten by
    exact identities, so that its terms are at most ~10^3 k in magnitude (the formula
    as written subtracts terms of ~10^302 at theta = 10^300 and needs ~700 digits there):
    lgamma(theta) - lgamma(k + theta) = -sum_{j<k} log(theta + j) (integer k),
    -theta log(theta) + log((theta + mu)^theta - theta^theta) = log(expm1(w)),
    w = theta log1p(mu/theta), and k log((theta + mu)/mu) = k log1p(theta/mu); summed by
    :func:`_certified`.
    """

    def terms() -> list[mpmath.mpf]:
        m, t = _natural(mu, theta, log)
        w = t * mpmath.log1p(m / t)
        lgamma_diff = -mpmath.fsum(mpmath.log(t + j) for j in range(k))
        return [lgamma_diff, mpmath.log(mpmath.expm1(w)), k * mpmath.log1p(t / m)]

    return _certified(terms)


def _ztnb_gradient_reference(k: int, mu: float, theta: float) -> tuple[float, float]:
    """(d/dmu, d/dtheta) of the ZTNB loss in mpmath, each correctly rounded to float64:
    k/(theta + mu) - k/mu + theta/((theta + mu)(1 - e^-w)) and
    -sum_{j<k} 1/(theta + j) + k/(theta + mu) + (log1p(x) - x/(1 + x))/(1 - e^-w)."""

    def d_mu() -> list[mpmath.mpf]:
        m, t = mpmath.mpf(mu), mpmath.mpf(theta)
        p_pos = -mpmath.expm1(-t * mpmath.log1p(m / t))
        return [k / (t + m), -k / m, t / ((t + m) * p_pos)]

    def d_theta() -> list[mpmath.mpf]:
        m, t = mpmath.mpf(mu), mpmath.mpf(theta)
        x = m / t
        p_pos = -mpmath.expm1(-t * mpmath.log1p(x))
        psi = [-1 / (t + j) for j in range(k)]
        return [*psi, k / (t + m), mpmath.log1p(x) / p_pos, -x / ((1 + x) * p_pos)]

    return _certified(d_mu), _certified(d_theta)


GRID = np.logspace(-300.0, 300.0, 61)


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 7])
def test_extreme_parameters_are_accurate_or_refused(k: int) -> None:
    """On a 61 x 61 grid of mu, theta in [1e-300, 1e300] every point gives a finite value
    within 16 ulp of mpmath or, with validate=True, a ValueError: never a silent NaN."""
    mu, theta = (torch.from_numpy(a) for a in np.meshgrid(GRID, GRID, indexing="ij"))
    kk = torch.full_like(mu, float(k))
    got = zt_negbin_nll(kk, mu, theta, reduction="none", validate=False).numpy()
    ref = np.array([[_ztnb_reference(k, m, t) for t in GRID] for m in GRID])
    err = ulp_error(got, ref, "float64")
    for i, j in np.argwhere(~(err <= 16.0)):
        with pytest.raises(ValueError, match=r"mu|theta"):
            out = zt_negbin_nll(kk[i, j], mu[i, j], theta[i, j], reduction="none")
            pytest.fail(f"k={k} mu={GRID[i]:g} theta={GRID[j]:g}: {out.item()!r} "
                        f"(mpmath {ref[i, j]!r}, {err[i, j]:.3g} ulp)")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 7])
def test_extreme_parameters_gradients(k: int) -> None:
    """Gradients on every third point of the grid (21 x 21, x = mu/theta overflowing at
    many): within 16 ulp of mpmath wherever the exact gradient is a normal float64
    (a subnormal one is only as accurate as its float64 terms, which underflow too);
    with log-parameters, value and gradients finite on the whole grid."""
    sub = GRID[::3]
    mu, theta = (torch.from_numpy(a).requires_grad_(True)
                 for a in np.meshgrid(sub, sub, indexing="ij"))  # fmt: skip
    kk = torch.full_like(mu, float(k))
    d_mu, d_theta = torch.autograd.grad(zt_negbin_nll(kk, mu, theta, reduction="sum"),
                                        [mu, theta])  # fmt: skip
    ref = np.array([[_ztnb_gradient_reference(k, m, t) for t in sub] for m in sub])
    for name, got, want in (("d_mu", d_mu, ref[..., 0]), ("d_theta", d_theta, ref[..., 1])):
        got_np = got.numpy()
        assert np.isfinite(got_np).all(), name
        normal = np.abs(want) >= np.finfo(np.float64).tiny
        err = np.where(normal, ulp_error(got_np, want, "float64"), 0.0)
        worst = np.unravel_index(np.argmax(err), err.shape)
        assert err.max() <= 16.0, (name, sub[worst[0]], sub[worst[1]], got_np[worst], want[worst])
    lm, lt = (torch.from_numpy(np.log(a)).requires_grad_(True)
              for a in np.meshgrid(GRID, GRID, indexing="ij"))  # fmt: skip
    v = zt_negbin_nll(torch.full_like(lm, float(k)), log_mu=lm, log_theta=lt, reduction="none")
    g_mu, g_theta = torch.autograd.grad(v.sum(), [lm, lt])
    assert torch.isfinite(v).all() and torch.isfinite(g_mu).all() and torch.isfinite(g_theta).all()


@pytest.mark.parametrize(("mu", "theta"), [(1e300, 1e-300), (1e-300, 1e-300), (1e10, 1e-303)])
def test_extreme_points_from_the_report(mu: float, theta: float) -> None:
    """Value, gradients, full form and log-parameters at the reported points (and one
    where x = mu/theta overflows while the loss crosses zero at k = 7): finite."""
    for k in (1.0, 7.0):
        want = _ztnb_reference(int(k), mu, theta)
        a = torch.tensor(mu, dtype=F64, requires_grad=True)
        b = torch.tensor(theta, dtype=F64, requires_grad=True)
        v = zt_negbin_nll(torch.tensor(k, dtype=F64), a, b)
        assert ulp_error(v.item(), want, "float64") <= 16.0, (k, v.item(), want)
        v.backward()
        assert torch.isfinite(a.grad) and torch.isfinite(b.grad), (k, a.grad, b.grad)
        full = zt_negbin_nll(torch.tensor(k, dtype=F64), a.detach(), b.detach(), full=True)
        full_want = want + math.lgamma(k + 1.0)
        assert abs(full.item() - full_want) <= 1e-13 * max(1.0, abs(full_want))
        la = torch.tensor(mu, dtype=F64).log().requires_grad_(True)
        lb = torch.tensor(theta, dtype=F64).log().requires_grad_(True)
        v = zt_negbin_nll(torch.tensor(k, dtype=F64), log_mu=la, log_theta=lb)
        want = _ztnb_reference(int(k), la.item(), lb.item(), log=True)
        assert ulp_error(v.item(), want, "float64") <= 16.0, (k, v.item(), want)
        v.backward()
        assert torch.isfinite(la.grad) and torch.isfinite(lb.grad)


# ------------------------------------------------------------------ distributions
@pytest.mark.parametrize(
    "make",
    [
        lambda: ZeroTruncatedPoisson(torch.tensor(math.inf), validate_args=True),
        lambda: ZeroTruncatedPoisson(torch.tensor([1.0, math.inf], dtype=F64), validate_args=True),
        lambda: ZeroTruncatedNegativeBinomial(torch.tensor(math.inf), 1.0, validate_args=True),
        lambda: ZeroTruncatedNegativeBinomial(1.0, torch.tensor(math.inf), validate_args=True),
        lambda: ZeroTruncatedNegativeBinomial(math.nan, 1.0, validate_args=True),
    ],
)
def test_distributions_refuse_infinite_parameters(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        make()


def test_distribution_constraints_accept_finite_positive_parameters() -> None:
    ZeroTruncatedPoisson(torch.tensor([1e-300, 1e300], dtype=F64), validate_args=True)
    ZeroTruncatedNegativeBinomial(torch.tensor(1e300, dtype=F64), 1e-3, validate_args=True)
    c = ZeroTruncatedNegativeBinomial.arg_constraints["mu"]
    assert c.check(torch.tensor([1.0, 0.0, math.inf, math.nan])).tolist() == [
        True, False, False, False]  # fmt: skip
    # the constraint maps to an unconstrained parametrisation, as constraints.positive
    t = torch.distributions.transform_to(c)
    assert t(torch.tensor(0.0)).item() == 1.0


_SAMPLE_EXTREMES = """
    import time, torch
    from ztbench.loss import ZeroTruncatedNegativeBinomial
    torch.manual_seed(0)
    t0 = time.perf_counter()
    out = []
    for mu, theta in ((1e3, 1e-12), (2.0, 1e-8)):
        d = ZeroTruncatedNegativeBinomial(torch.tensor(mu, dtype=torch.float64),
                                          torch.tensor(theta, dtype=torch.float64))
        s = d.sample((1000,))
        assert bool((s >= 1).all()) and bool((s == s.floor()).all()), s
        out.append((s == 1).double().mean().item())
    print(time.perf_counter() - t0, *out)
"""


def _ztnb_pmf(k: np.ndarray, mu: float, theta: float) -> np.ndarray:
    """P(X = k | X > 0), k >= 1, from the negative binomial pmf (math.lgamma, float64)."""
    log_p = math.log(theta / (theta + mu))
    log_q = math.log(mu / (theta + mu))
    trunc = -math.expm1(theta * log_p)
    lg = np.array([math.lgamma(i + theta) - math.lgamma(theta) - math.lgamma(i + 1.0)
                   for i in k])  # fmt: skip
    return np.exp(lg + theta * log_p + k * log_q) / trunc


def test_ztnb_sampler_does_not_depend_on_p0() -> None:
    """1000 draws at P(0) -> 1 (mu = 1e3, theta = 1e-12; mu = 2, theta = 1e-8) within
    10 s in all (a rejection sampler needs ~1/(1 - P0) rounds there: no draw in a minute),
    every draw >= 1, and the share of ones that of the exact law (the logarithmic limit)."""
    try:
        out = _run_python(_SAMPLE_EXTREMES, timeout=90.0)
    except subprocess.TimeoutExpired:
        pytest.fail("ZTNB sampling at P(0) -> 1 did not finish in 90 s")
    assert out.returncode == 0, out.stderr
    elapsed, *ones = (float(x) for x in out.stdout.split())
    assert elapsed < 10.0, elapsed
    for share, (mu, theta) in zip(ones, ((1e3, 1e-12), (2.0, 1e-8)), strict=True):
        p1 = float(_ztnb_pmf(np.array([1.0]), mu, theta)[0])
        assert abs(share - p1) < 5.0 * math.sqrt(p1 * (1.0 - p1) / 1000), (mu, theta, share, p1)


def test_ztnb_sampler_follows_the_truncated_law() -> None:
    """Chi-square and mean against the exact truncated law at mu = 2, theta = 0.5."""
    mu, theta, n = 2.0, 0.5, 100_000
    torch.manual_seed(7)
    d = ZeroTruncatedNegativeBinomial(torch.tensor(mu, dtype=F64), torch.tensor(theta, dtype=F64))
    s = d.sample((n,)).numpy()
    assert (s >= 1).all() and (s == np.floor(s)).all()
    kmax = 400
    pmf = _ztnb_pmf(np.arange(1, kmax + 1, dtype=float), mu, theta)
    obs = np.bincount(s.astype(np.int64), minlength=kmax + 2)[1 : kmax + 1].astype(float)
    exp = n * pmf
    bins = int(np.argmax(exp < 5))  # the bins before the first one expected below 5
    obs_b = np.r_[obs[:bins], n - obs[:bins].sum()]
    exp_b = np.r_[exp[:bins], n - exp[:bins].sum()]
    assert stats.chisquare(obs_b, exp_b).pvalue > 1e-4
    kk = np.arange(1, kmax + 1)
    mean = (kk * pmf).sum()
    sd = math.sqrt(((kk - mean) ** 2 * pmf).sum() / n)
    assert abs(s.mean() - mean) < 5.0 * sd, (s.mean(), mean, sd)
    assert abs(d.mean.item() - mean) < 1e-9 * mean


# --------------------------------------------------------------------- memory, full
_FULL_MEMORY = """
    import re, torch
    from ztbench.loss import zt_negbin_nll

    def status(key):
        text = open("/proc/self/status").read()
        return int(re.search(key + r":\\s+(\\d+) kB", text).group(1)) * 1024

    torch.set_num_threads(1)  # the chunks are per thread: one thread, one bound
    g = torch.Generator().manual_seed(0)
    n = 200_000
    k = torch.randint(1, 60, (n,), generator=g).to(torch.float64)
    mu = torch.rand(n, generator=g, dtype=torch.float64) * 30.0 + 0.05
    theta = torch.rand(n, generator=g, dtype=torch.float64) * 8.0 + 0.05
    zt_negbin_nll(k[:500], mu[:500], theta[:500], full=True, reduction="none")  # warm-up
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    base = status("VmRSS")
    out = zt_negbin_nll(k, mu, theta, full=True, reduction="none")
    print((status("VmHWM") - base) / n)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_full_form_memory_is_bounded_per_chunk() -> None:
    """float64 full=True ZTNB on 2e5 elements: peak RSS growth below 300 bytes/element
    (a fresh process: an allocator that kept an earlier call's memory would hide it)."""
    out = _run_python(_FULL_MEMORY)
    if out.returncode != 0 and "clear_refs" in out.stderr:
        pytest.skip("cannot reset the peak RSS here")
    assert out.returncode == 0, out.stderr
    per_element = float(out.stdout.split()[-1])
    assert per_element < 300.0, per_element


def test_full_form_chunked_equals_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunked full form gives the same bits as one call over every element."""
    import ztbench.loss.kernels as K

    g = torch.Generator().manual_seed(3)
    n = 2000
    k = torch.randint(1, 200, (n,), generator=g).to(F64)
    mu = torch.exp(torch.randn(n, generator=g, dtype=F64) * 4.0)
    theta = torch.exp(torch.randn(n, generator=g, dtype=F64) * 4.0)
    lam = torch.exp(torch.randn(n, generator=g, dtype=F64) * 4.0)
    calls = [
        lambda: zt_negbin_nll(k, mu, theta, full=True, reduction="none"),
        lambda: zt_poisson_nll(k, lam, full=True, reduction="none"),
        lambda: zt_negbin_nll(k, mu.float(), theta.float(), full=True, reduction="none"),
    ]
    whole = [c() for c in calls]
    monkeypatch.setattr(K, "EAGER_CHUNK", 256)
    assert K.chunk_size() < n and K.chunk_size(K.FULL_CHUNK_SHARE) < n
    for c, w in zip(calls, whole, strict=True):
        assert torch.equal(c(), w)


# ---------------------------------------------------------------- warnings, meta
_FIRST_LOG_CALL = """
    import warnings
    warnings.simplefilter("error")
    import torch
    from ztbench.loss import zt_negbin_nll, zt_poisson_nll
    k = torch.tensor([1.0, 3.0, 8.0], dtype=torch.float64)
    a = torch.tensor([0.1, 1.2, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.3, -1.0, 4.0], dtype=torch.float64, requires_grad=True)
    zt_negbin_nll(k, log_mu=a, log_theta=b).backward()
    zt_poisson_nll(k, log_lam=a, full=True).backward()
    print("ok")
"""


def test_first_log_parameter_call_emits_no_warning() -> None:
    out = _run_python(_FIRST_LOG_CALL, "-W", "error")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_meta_tensors_raise_one_clear_error(validate: bool, dtype: torch.dtype) -> None:
    meta = torch.ones(4, device="meta", dtype=dtype)
    cpu = torch.ones(4, dtype=dtype)
    calls = [
        lambda: zt_poisson_nll(meta, meta, validate=validate),
        lambda: zt_poisson_nll(cpu, log_lam=meta, reduction="none", validate=validate),
        lambda: zt_negbin_nll(meta, meta, meta, validate=validate),
        lambda: zt_negbin_nll(cpu, log_mu=meta, log_theta=cpu, reduction="sum", validate=validate),
        lambda: zt_negbin_nll(cpu, cpu, cpu, weight=meta, validate=validate),
        lambda: zt_negbin_nll(cpu, cpu, cpu, mask=meta > 0, validate=validate),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="meta tensors are not supported"):
            call()
