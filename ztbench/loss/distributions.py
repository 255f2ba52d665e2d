"""Zero-truncated Poisson and negative binomial as ``torch.distributions`` classes.

``log_prob`` is the shipped loss with ``full=True``, negated (float64 inside, accurate over
the whole domain); ``sample`` draws exactly from the truncated law (no rejection of zeros
from the untruncated law, whose cost grows as 1/(1 - P(0))); ``mean`` and ``variance``
are the truncated law's, in forms that do not cancel. Parameters follow the loss: the
*untruncated* means lam and mu (NB2: variance mu + mu^2/theta, size theta).

Validation follows torch.distributions: ``validate_args`` (default
``torch.distributions.Distribution._validate_args``) checks the parameters against
``arg_constraints`` at construction (:data:`positive_finite`: finite and > 0, as the
loss requires; torch's ``constraints.positive`` admits +inf) and the values given to
``log_prob`` against ``support`` (integers >= 1).

Sampling, exactly (up to the normal limit of Poisson counts past 2^50, last item):

- ZTP(lam): the counts of a unit-rate Poisson process on [0, 1] given at least one
  event. The first event time T given T <= 1 has the truncated exponential law,
  T = -log1p(U expm1(-lam)) / lam (inversion, U uniform); the events after T form a
  Poisson process on (T, 1], so X = 1 + Poisson(lam (1 - T)).
- ZTNB(mu, theta): the negative binomial is Poisson(L) with L ~ Gamma(theta, rate
  b = theta/mu); given X > 0, L has density proportional to g(L) (1 - e^-L), and
  1 - e^-L = integral_0^1 L e^-uL du. So (L, U) with joint density proportional to
  g(L) L e^-UL = L^theta e^-(b + U) L on U in [0, 1] has exactly that L-marginal, and
  given L, U is the first event time T above. Both conditionals are explicit: U has
  density proportional to (b + U)^-(theta + 1), whose CDF inverts in closed form,
  U = b expm1(E), E = -log1p(-V (1 - P0))/theta (V uniform, P0 = e^-w,
  w = theta log1p(mu/theta)); L given U is Gamma(theta + 1, rate b + U); then
  X = 1 + Poisson(L (1 - U)). No rejection: the cost of a draw does not depend on P0
  (a rejection sampler from the untruncated law needs ~1/(1 - P0) rounds, ~5 10^6 at
  mu = 2, theta = 1e-8).
- Poisson counts whose rate exceeds 2^50 (``torch.poisson`` returns garbage past its
  int64 range, ~9.2e18, which a heavy ZTNB tail reaches) are drawn from the normal
  limit, round(rate + sqrt(rate) N(0, 1)), within ~2^-25 of the Poisson law there (its
  skewness, 1/sqrt(rate)). A draw past the float64 range (mu/theta near or past
  DBL_MAX puts much of the law there) is inf.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution, biject_to, constraints, transform_to
from torch.distributions.transforms import ExpTransform
from torch.distributions.utils import broadcast_all

from ztbench.loss import primitives as P
from ztbench.loss.api import zt_negbin_nll, zt_poisson_nll

__all__ = ["ZeroTruncatedNegativeBinomial", "ZeroTruncatedPoisson", "positive_finite"]

_F64 = torch.float64


class _PositiveFinite(constraints.Constraint):
    """0 < value < inf (NaN fails): the parameters' domain. torch's ``constraints.positive``
    is (0, inf], so ``validate_args`` would let an infinite mean through to NaN results."""

    is_discrete = False
    event_dim = 0
    lower_bound = 0.0  # as constraints.positive (code that reads the bound)

    def check(self, value: Tensor) -> Tensor:
        return (value > 0.0) & (value < math.inf)

    def __repr__(self) -> str:
        return "PositiveFinite()"


positive_finite = _PositiveFinite()
# an unconstrained parametrisation, as constraints.positive's (exp; a float overflowing
# to inf is then outside the constraint, as any parameter that large)
for _registry in (transform_to, biject_to):
    _registry.register(_PositiveFinite, lambda _c: ExpTransform())


_POISSON_NORMAL_MIN = 2.0**50  # rates from which a count is drawn by its normal limit


def _poisson(rate: Tensor) -> Tensor:
    """Poisson(rate) counts (float64 rate >= 0, possibly inf), see the module docstring."""
    big = rate > _POISSON_NORMAL_MIN
    if not bool(big.any()):  # the common case: torch's sampler alone (its random stream)
        return torch.poisson(rate)
    small = torch.poisson(torch.where(big, 0.0, rate))
    normal = torch.round(rate + torch.sqrt(rate) * torch.randn_like(rate))
    # an infinite rate (a draw of the law's tail past the float64 range): an infinite count
    normal = torch.where(rate < math.inf, normal, rate)
    return torch.where(big, normal, small)


def _ztp_sample(lam: Tensor) -> Tensor:
    """One exact ZTP draw per element of lam (float64 > 0), as float64 counts >= 1."""
    u = torch.rand_like(lam)
    t = -torch.log1p(u * torch.expm1(-lam)) / lam
    rest = (lam * (1.0 - t)).clamp_min(0.0)  # t <= 1 up to rounding
    return 1.0 + _poisson(rest)


def _ztnb_sample(mu: Tensor, theta: Tensor) -> Tensor:
    """One exact ZTNB draw per element (float64 mu, theta > 0): U, then L, then X (see the
    module docstring); three random numbers per draw whatever P0."""
    b = theta / mu
    p_pos = -torch.expm1(-P.nb_log_p0(mu, theta))  # 1 - P0, without cancellation
    e = -torch.log1p(-torch.rand_like(mu) * p_pos) / theta  # in [0, log1p(mu/theta)]
    # U = b expm1(E) <= 1; for E > 1 as exp(log b + E) - b, with log b from the logs: b
    # expm1(E) would overflow to inf * b where mu/theta overflows (E up to ~745)
    big_e = e > 1.0
    lb_e = torch.log(theta) - torch.log(mu) + torch.where(big_e, e, 0.0)
    u = torch.where(big_e, torch.exp(lb_e) - b, b * torch.expm1(torch.where(big_e, 0.0, e)))
    u = u.clamp(0.0, 1.0)  # [0, 1] up to rounding
    lam = torch._standard_gamma(theta + 1.0) / (b + u)
    return 1.0 + _poisson(lam * (1.0 - u))


class ZeroTruncatedPoisson(Distribution):
    """Poisson(rate) conditioned on X >= 1; ``rate`` is the untruncated mean lam.

    P(X = k) = lam^k e^-lam / (k! (1 - e^-lam)), k >= 1. Mean lam / (1 - e^-lam).
    """

    arg_constraints = {"rate": positive_finite}  # noqa: RUF012 (torch's convention)
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

    arg_constraints = {"mu": positive_finite, "theta": positive_finite}  # noqa: RUF012
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
