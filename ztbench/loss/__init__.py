"""The shipped zero-truncated Poisson and negative binomial losses (torch only).

``from ztbench.loss import zt_poisson_nll, zt_negbin_nll`` (the two functions also
importable from ``ztbench``). This package depends on torch alone and never imports the
benchmark: the benchmark's candidates import it.

- :mod:`.nll`: the public functions, their kernels and the autograd.
- :mod:`.modules`: ``nn.Module`` forms (``ZeroTruncatedPoissonNLLLoss``,
  ``ZeroTruncatedNegativeBinomialNLLLoss``), mirroring ``nn.PoissonNLLLoss``.
- :mod:`.distributions`: ``ZeroTruncatedPoisson`` and ``ZeroTruncatedNegativeBinomial``
  (log_prob, exact sampling, mean, variance).
- :mod:`.validation`: the input checks.
- :mod:`.primitives`: the stable building blocks (series, log-gamma and digamma
  differences, log1mexp and friends), each written once.
- :mod:`.dd`: double-double refinement of float64 results where the float64 sum cancels.
"""

from __future__ import annotations

from ztbench.loss.distributions import ZeroTruncatedNegativeBinomial, ZeroTruncatedPoisson
from ztbench.loss.modules import ZeroTruncatedNegativeBinomialNLLLoss, ZeroTruncatedPoissonNLLLoss
from ztbench.loss.nll import zt_negbin_nll, zt_poisson_nll

__all__ = [
    "ZeroTruncatedNegativeBinomial",
    "ZeroTruncatedNegativeBinomialNLLLoss",
    "ZeroTruncatedPoisson",
    "ZeroTruncatedPoissonNLLLoss",
    "zt_negbin_nll",
    "zt_poisson_nll",
]
