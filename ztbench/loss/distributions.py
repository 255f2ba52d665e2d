"""Zero-truncated Poisson and negative binomial as ``torch.distributions`` classes.

``log_prob`` is the shipped loss with ``full=True``, negated (float64 inside, accurate over
the whole domain); ``sample`` draws exactly from the truncated law (no rejection of zeros
from the untruncated law, whose cost grows as 1/(1 - P(0))); ``mean`` and ``variance``
are the truncated law's, in forms that do not cancel. Parameters follow the loss: the
*untruncated* means lam and mu (NB2: variance mu + mu^2/theta, size theta).

Validation follows torch.distributions: ``validate_args`` (default
``torch.distributions.Distribution._validate_args``) checks the parameters against
``arg_constraints`` at construction and the values given to ``log_prob`` against
``support`` (integers >= 1).

Sampling, exactly:

- ZTP(lam): the counts of a unit-rate Poisson process on [0, 1] given at least one
  event. The first event time T given T <= 1 has the truncated exponential law,
  T = -log1p(U expm1(-lam)) / lam (inversion, U uniform); the events after T form a
  Poisson process on (T, 1], so X = 1 + Poisson(lam (1 - T)).
- ZTNB(mu, theta): the negative binomial is Poisson(L) with L ~ Gamma(theta, rate
  theta/mu); given X > 0, L has density proportional to g(L) (1 - e^-L). L is drawn
  from that density by rejection, then X ~ ZTP(L) as above. Two envelopes: Gamma(theta)
  accepted with probability 1 - e^-L (overall rate 1 - P(0)), or Gamma(theta + 1)
  (g(L) L normalised) accepted with probability (1 - e^-L)/L (overall rate
  (1 - P(0))/mu); each element uses the better one, so the rate is
  (1 - P(0)) max(1, 1/mu): at least 1 - e^-1 when mu <= 1 or mu >= 1 with w >= 1. Only
  mu > 1 with w = theta log1p(mu/theta) << 1 (theta tiny) needs many rounds (about 1/w);
  each round is vectorised over the elements still rejected.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints
from torch.distributions.utils import broadcast_all

from ztbench.loss import primitives as P
from ztbench.loss.api import zt_negbin_nll, zt_poisson_nll

__all__ = ["ZeroTruncatedNegativeBinomial", "ZeroTruncatedPoisson"]

_F64 = torch.float64


def _ztp_sample(lam: Tensor) -> Tensor:
    """One exact ZTP draw per element of lam (float64 > 0), as float64 counts >= 1."""
    u = torch.rand_like(lam)
    t = -torch.log1p(u * torch.expm1(-lam)) / lam
    rest = (lam * (1.0 - t)).clamp_min(0.0)  # t <= 1 up to rounding
    return 1.0 + torch.poisson(rest)


def _ztnb_sample(mu: Tensor, theta: Tensor) -> Tensor:
    """One exact ZTNB draw per element (float64 mu, theta > 0); see the module docstring."""
    # rate of the Gamma(theta) envelope: 1 - e^-w; of the Gamma(theta + 1) one: that / mu
    shifted = mu < 1.0
    lam = torch.empty_like(mu)
    todo = torch.arange(mu.numel(), device=mu.device)
    mu_f, th_f, sh_f = mu.reshape(-1), theta.reshape(-1), shifted.reshape(-1)
    lam_f = lam.reshape(-1)
    while todo.numel():
        m, th, sh = mu_f[todo], th_f[todo], sh_f[todo]
        shape = torch.where(sh, th + 1.0, th)
        g = torch._standard_gamma(shape) * (m / th)
        accept_p = torch.where(sh, -torch.expm1(-g) / g, -torch.expm1(-g))
        ok = (torch.rand_like(g) < accept_p) & (g > 0)
        lam_f[todo[ok]] = g[ok]
        todo = todo[~ok]
    return _ztp_sample(lam)


class ZeroTruncatedPoisson(Distribution):
    """Poisson(rate) conditioned on X >= 1; ``rate`` is the untruncated mean lam.

    P(X = k) = lam^k e^-lam / (k! (1 - e^-lam)), k >= 1. Mean lam / (1 - e^-lam).
    """

    arg_constraints = {"rate": constraints.positive}  # noqa: RUF012 (torch's convention)
    support = constraints.positive_integer
    has_rsample = False

    def __init__(self, rate: Tensor | float, validate_args: bool | None = None) -> None:
        (self.rate,) = broadcast_all(rate)
        super().__init__(self.rate.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):  # type: ignore[no-untyped-def]
        new = self._get_checked_instance(ZeroTruncatedPoisson, _instance)
        new.rate = self.rate.expand(torch.Size(batch_shape))
        super(ZeroTruncatedPoisson, new).__init__(new.rate.shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> Tensor:
        lam = self.rate.to(_F64)
        return (lam / -torch.expm1(-lam)).to(self.rate.dtype)

    @property
    def mode(self) -> Tensor:
        return torch.clamp(torch.floor(self.rate), min=1.0)

    @property
    def variance(self) -> Tensor:
        """mean (1 - lam/expm1(lam)) = mean (1 - e^-h), h = log(expm1(lam)/lam): the
        difference E[X^2] - E[X]^2 is taken analytically, and 1 - e^-h = -expm1(-h) keeps
        its relative accuracy where the variance vanishes (lam -> 0: X -> 1)."""
        lam = self.rate.to(_F64)
        mean = lam / -torch.expm1(-lam)
        return (mean * -torch.expm1(-P.log_expm1_over_x(lam))).to(self.rate.dtype)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return -zt_poisson_nll(value, self.rate, reduction="none", full=True, validate=False)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            lam = self.rate.to(_F64).expand(shape).contiguous()
            return _ztp_sample(lam).to(self.rate.dtype)


class ZeroTruncatedNegativeBinomial(Distribution):
    """NegativeBinomial(mean mu, size theta) conditioned on X >= 1 (NB2 parametrisation).

    P(X = k) = NB(k; mu, theta) / (1 - P0), P0 = (theta / (theta + mu))^theta, k >= 1;
    the untruncated law is torch's ``NegativeBinomial(total_count=theta,
    logits=log(mu/theta))``. Mean mu / (1 - P0).
    """

    arg_constraints = {"mu": constraints.positive, "theta": constraints.positive}  # noqa: RUF012
    support = constraints.positive_integer
    has_rsample = False

    def __init__(
        self, mu: Tensor | float, theta: Tensor | float, validate_args: bool | None = None
    ) -> None:
        self.mu, self.theta = broadcast_all(mu, theta)
        super().__init__(self.mu.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):  # type: ignore[no-untyped-def]
        new = self._get_checked_instance(ZeroTruncatedNegativeBinomial, _instance)
        shape = torch.Size(batch_shape)
        new.mu, new.theta = self.mu.expand(shape), self.theta.expand(shape)
        super(ZeroTruncatedNegativeBinomial, new).__init__(shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _w(self) -> tuple[Tensor, Tensor, Tensor]:
        mu, theta = self.mu.to(_F64), self.theta.to(_F64)
        return mu, theta, P.nb_log_p0(mu, theta)

    @property
    def mean(self) -> Tensor:
        mu, _, w = self._w()
        return (mu / -torch.expm1(-w)).to(self.mu.dtype)

    @property
    def mode(self) -> Tensor:
        """floor((theta - 1) mu/theta), the untruncated law's mode (torch's
        NegativeBinomial.mode), at least 1: the pmf ratio P(k+1)/P(k) = (k + theta)/(k + 1)
        mu/(theta + mu) decreases in k, so the truncated law's mode is the untruncated
        one's unless that is 0."""
        mode = torch.floor((self.theta - 1.0) * (self.mu / self.theta))
        return torch.clamp(mode, min=1.0)

    @property
    def variance(self) -> Tensor:
        """mean (1 + mu/theta - mu/expm1(w)), w = -log P0, evaluated as
        mean (x - expm1(A)), x = mu/theta, A = log(mu/w) - log(expm1(w)/w) =
        -log(r) - h(w) (r = log1p(x)/x): for small mu both x and -expm1(A) are small
        and computed to relative accuracy, so the variance keeps it where X -> 1."""
        mu, theta, w = self._w()
        x = mu / theta
        mean = mu / -torch.expm1(-w)
        # log r = log1p(log1pmx(x)/x) for x < 1 (no log of a number near 1)
        x_s, x_l = P.split(x < 1.0, x, 0.5, 2.0)
        log_r = torch.where(
            x < 1.0, torch.log1p(P.log1pmx(x_s) / x_s), torch.log(torch.log1p(x_l) / x_l)
        )
        a = -log_r - P.log_expm1_over_x(w)
        return (mean * (x - torch.expm1(a))).to(self.mu.dtype)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return -zt_negbin_nll(
            value, self.mu, self.theta, reduction="none", full=True, validate=False
        )

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            mu = self.mu.to(_F64).expand(shape).contiguous()
            theta = self.theta.to(_F64).expand(shape).contiguous()
            return _ztnb_sample(mu, theta).to(self.mu.dtype)
