"""The shipped zero-truncated Poisson and negative binomial losses (torch only).

``from ztbench.loss import zt_poisson_nll, zt_negbin_nll`` (also importable from
``ztbench``). This package depends on torch alone and never imports the benchmark: the
benchmark's candidates import it.

- :mod:`.nll`: the public functions, their kernels and the autograd.
- :mod:`.primitives`: the stable building blocks (series, log-gamma and digamma
  differences, log1mexp and friends), each written once.
- :mod:`.dd`: double-double refinement of float64 results where the float64 sum cancels.
"""

from __future__ import annotations

from ztbench.loss.nll import zt_negbin_nll, zt_poisson_nll

__all__ = ["zt_negbin_nll", "zt_poisson_nll"]
