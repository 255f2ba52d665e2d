"""The shipped zero-truncated Poisson and negative binomial losses (torch only).

``from ztbench.loss import zt_poisson_nll, zt_negbin_nll`` (the two functions also
importable from ``ztbench``). This package depends on torch alone and never imports the
benchmark: the benchmark's candidates import it.

- :mod:`.api`: the public functions (argument handling, reductions).
- :mod:`.kernels`: the careful kernels, each formula written once over a dispatcher
  (:mod:`.dispatch`).
- :mod:`.paths`: the seven forward paths (one ``Path`` enum) and ``choose_path``.
- :mod:`.fused`: the float32 screen and the float64 kernels as C++ loops that torch
  builds (``status()`` says whether they are active; otherwise the pure-torch paths run).
- :mod:`.eager`: the eager computations (the float32 screen of :mod:`.screened`, the
  careful kernels in chunks, the refined kernels).
- :mod:`.refine`: the float64 refinement entry points (double-double, :mod:`.dd`), the
  full form (:mod:`.stirlerr`), the correction of log-parameters' rounding.
- :mod:`.autograd`: the autograd node (one Function, its constants a frozen record).
- :mod:`.ops`: the ``torch.library`` custom operators compiled code calls.
- :mod:`.modules`: ``nn.Module`` forms (``ZeroTruncatedPoissonNLLLoss``,
  ``ZeroTruncatedNegativeBinomialNLLLoss``), mirroring ``nn.PoissonNLLLoss``.
- :mod:`.distributions`: ``ZeroTruncatedPoisson`` and ``ZeroTruncatedNegativeBinomial``
  (log_prob, exact sampling, mean, variance).
- :mod:`.validation`: the input checks.
- :mod:`.primitives`: the stable building blocks (series, log-gamma and digamma
  differences, log1mexp and friends), each written once.
- :mod:`.dd`: double-double arithmetic and formulas for the refinement.
- :mod:`.last_resort`: the refinement's last resort, decimal arithmetic at a precision
  raised until the result is certified (the float64 nearest a deep zero crossing).
"""

from __future__ import annotations

from ztbench.loss.api import zt_negbin_nll, zt_poisson_nll
from ztbench.loss.distributions import ZeroTruncatedNegativeBinomial, ZeroTruncatedPoisson
from ztbench.loss.modules import ZeroTruncatedNegativeBinomialNLLLoss, ZeroTruncatedPoissonNLLLoss

__all__ = [
    "ZeroTruncatedNegativeBinomial",
    "ZeroTruncatedNegativeBinomialNLLLoss",
    "ZeroTruncatedPoisson",
    "ZeroTruncatedPoissonNLLLoss",
    "zt_negbin_nll",
    "zt_poisson_nll",
]
