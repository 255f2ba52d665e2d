"""nn modules and torch.distributions classes of the shipped loss.

References: the functional loss (already tested against certified values), scipy's
untruncated pmfs for the truncated laws' moments, and a chi-square test of the samples
against the pmf."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats

from ztbench.loss import (
    ZeroTruncatedNegativeBinomial,
    ZeroTruncatedNegativeBinomialNLLLoss,
    ZeroTruncatedPoisson,
    ZeroTruncatedPoissonNLLLoss,
    zt_negbin_nll,
    zt_poisson_nll,
)

F64 = torch.float64


def test_modules_mirror_the_functional_form() -> None:
    k = torch.tensor([1.0, 0.0, 5.0, 2.0])
    eta = torch.tensor([0.1, -3.0, 1.5, 0.0], requires_grad=True)
    phi = torch.tensor([0.5, 0.5, 2.0, -1.0], requires_grad=True)
    keep = k > 0
    crit = ZeroTruncatedPoissonNLLLoss()
    assert "log_input=True" in repr(crit)
    torch.testing.assert_close(crit(eta, k, mask=keep), zt_poisson_nll(k, log_lam=eta, mask=keep))
    crit = ZeroTruncatedPoissonNLLLoss(log_input=False, full=True, reduction="none")
    lam = eta.detach().exp()
    torch.testing.assert_close(
        crit(lam, k, mask=keep), zt_poisson_nll(k, lam, full=True, reduction="none", mask=keep)
    )
    nb = ZeroTruncatedNegativeBinomialNLLLoss(reduction="sum")
    w = torch.tensor([1.0, 1.0, 0.5, 2.0])
    got = nb(eta, k, phi, mask=keep, weight=w)
    want = zt_negbin_nll(k, log_mu=eta, log_theta=phi, reduction="sum", mask=keep, weight=w)
    torch.testing.assert_close(got, want)
    got.backward()
    assert eta.grad is not None and eta.grad[1] == 0.0 and torch.isfinite(phi.grad).all()
    with pytest.raises(ValueError, match="reduction"):
        ZeroTruncatedNegativeBinomialNLLLoss(reduction="avg")  # type: ignore[arg-type]


ZTP_RATES = [0.01, 1.5, 20.0]
ZTNB_PARAMS = [(0.05, 2.0), (1.5, 0.3), (10.0, 5.0), (100.0, 0.05), (0.5, 1e4)]


def _pmf_ztp(lam: float, kmax: int) -> np.ndarray:
    k = np.arange(1, kmax + 1)
    return stats.poisson.pmf(k, lam) / -np.expm1(-lam)


def _pmf_ztnb(mu: float, theta: float, kmax: int) -> np.ndarray:
    k = np.arange(1, kmax + 1)
    p = theta / (theta + mu)
    return stats.nbinom.pmf(k, theta, p) / -np.expm1(theta * np.log(p))


@pytest.mark.parametrize("lam", ZTP_RATES)
def test_ztp_distribution_against_scipy(lam: float) -> None:
    d = ZeroTruncatedPoisson(torch.tensor(lam, dtype=F64))
    kmax = 400
    pmf = _pmf_ztp(lam, kmax)
    k = torch.arange(1, kmax + 1, dtype=F64)
    torch.testing.assert_close(d.log_prob(k).exp().numpy(), pmf, rtol=1e-10, atol=1e-300)
    kk = np.arange(1, kmax + 1)
    mean = (kk * pmf).sum()
    var = ((kk - mean) ** 2 * pmf).sum()
    torch.testing.assert_close(d.mean.item(), mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(d.variance.item(), var, rtol=1e-9, atol=0)
    assert pmf[int(d.mode) - 1] >= pmf.max() * (1.0 - 1e-12)  # a mode (ties: either)


@pytest.mark.parametrize(("mu", "theta"), ZTNB_PARAMS)
def test_ztnb_distribution_against_scipy(mu: float, theta: float) -> None:
    d = ZeroTruncatedNegativeBinomial(torch.tensor(mu, dtype=F64), torch.tensor(theta, dtype=F64))
    kmax = 200_000
    pmf = _pmf_ztnb(mu, theta, kmax)
    k = torch.arange(1, 200, dtype=F64)
    torch.testing.assert_close(d.log_prob(k).exp().numpy(), pmf[:199], rtol=1e-9, atol=1e-300)
    kk = np.arange(1, kmax + 1, dtype=float)
    mean = (kk * pmf).sum()
    var = ((kk - mean) ** 2 * pmf).sum()
    torch.testing.assert_close(d.mean.item(), mean, rtol=1e-9, atol=0)
    torch.testing.assert_close(d.variance.item(), var, rtol=1e-7, atol=0)
    assert pmf[int(d.mode) - 1] >= pmf.max() * (1.0 - 1e-12)  # a mode (ties: either)


@pytest.fixture
def _mp_dps():  # type: ignore[no-untyped-def]
    old = mpmath.mp.dps
    yield
    mpmath.mp.dps = old


@pytest.mark.usefixtures("_mp_dps")
def test_variance_keeps_relative_accuracy_as_x_tends_to_1() -> None:
    # X -> 1: the variance vanishes while E[X^2] - E[X]^2 subtracts numbers near 1
    # (the naive difference would be rounding noise); reference: that difference in
    # mpmath at 60 digits
    mpmath.mp.dps = 60  # restored by the fixture below
    for lam in (1e-8, 1e-4, 0.3):
        m = mpmath.mpf(lam)
        c = 1 / -mpmath.expm1(-m)
        want = float(c * (m + m * m) - (c * m) ** 2)
        got = ZeroTruncatedPoisson(torch.tensor(lam, dtype=F64)).variance.item()
        assert abs(got / want - 1.0) < 1e-13, (lam, got, want)
    for mu, theta in ((1e-8, 1.0), (1e-6, 1e6), (1e-5, 1e-3), (0.2, 3.0)):
        m, t = mpmath.mpf(mu), mpmath.mpf(theta)
        c = 1 / -mpmath.expm1(t * mpmath.log(t / (t + m)))
        want = float(c * (m + m * m / t + m * m) - (c * m) ** 2)
        mt = torch.tensor([mu, theta], dtype=F64)
        got = ZeroTruncatedNegativeBinomial(mt[0], mt[1]).variance.item()
        assert abs(got / want - 1.0) < 1e-12, (mu, theta, got, want)


def _chisquare_p(samples: np.ndarray, pmf: np.ndarray) -> float:
    """Chi-square p-value of the counts of samples 1..K (the tail beyond K as one bin,
    bins with expected counts < 5 merged into the tail)."""
    n = samples.size
    expected = n * pmf
    keep = int(np.argmax(expected < 5)) if (expected < 5).any() else pmf.size
    keep = max(keep, 1)
    obs = np.array([(samples == k).sum() for k in range(1, keep + 1)], dtype=float)
    exp = expected[:keep]
    obs = np.r_[obs, n - obs.sum()]
    exp = np.r_[exp, n - exp.sum()]
    if exp[-1] < 1e-9:  # no tail mass to test
        obs, exp = obs[:-1], exp[:-1]
    return float(stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


@pytest.mark.parametrize("lam", ZTP_RATES)
def test_ztp_samples_follow_the_pmf(lam: float) -> None:
    torch.manual_seed(16)
    s = ZeroTruncatedPoisson(torch.tensor(lam)).sample((20000,))
    assert s.shape == (20000,) and s.dtype == torch.float32 and (s >= 1).all()
    assert _chisquare_p(s.numpy(), _pmf_ztp(lam, 400)) > 1e-3


@pytest.mark.parametrize(("mu", "theta"), ZTNB_PARAMS)
def test_ztnb_samples_follow_the_pmf(mu: float, theta: float) -> None:
    torch.manual_seed(16)
    d = ZeroTruncatedNegativeBinomial(torch.tensor(mu, dtype=F64), torch.tensor(theta, dtype=F64))
    s = d.sample((20000,))
    assert (s >= 1).all() and (s == torch.floor(s)).all()
    assert _chisquare_p(s.numpy(), _pmf_ztnb(mu, theta, 20000)) > 1e-3


def test_distribution_conventions() -> None:
    d = ZeroTruncatedNegativeBinomial(torch.tensor([1.0, 2.0]), 3.0)
    assert d.batch_shape == (2,) and d.sample((5,)).shape == (5, 2)
    e = d.expand((4, 2))
    assert e.batch_shape == (4, 2) and e.sample().shape == (4, 2)
    assert d.support.check(torch.tensor([1.0, 7.0])).all()
    assert not d.support.check(torch.tensor(0.0))
    with pytest.raises(ValueError):
        ZeroTruncatedPoisson(torch.tensor([1.0, -1.0]), validate_args=True)
    with pytest.raises(ValueError):
        ZeroTruncatedNegativeBinomial(1.0, torch.tensor(0.0), validate_args=True)
    with pytest.raises(ValueError):
        ZeroTruncatedPoisson(torch.tensor(1.0), validate_args=True).log_prob(torch.tensor(0.0))
    lp = ZeroTruncatedPoisson(torch.tensor(1.0), validate_args=False).log_prob(torch.tensor(0.0))
    assert torch.isnan(lp)
    # log_prob is differentiable in the parameters
    mu = torch.tensor(1.5, requires_grad=True)
    ZeroTruncatedNegativeBinomial(mu, 2.0).log_prob(torch.tensor(3.0)).backward()
    assert mu.grad is not None and torch.isfinite(mu.grad)
