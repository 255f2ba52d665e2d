"""The public API's losses (:mod:`ztbench.loss`) registered as candidates.

``ztpoisson/ztbench`` and ``ztnb/ztbench``: the loss form (``full=False``), elementwise
(``reduction="none"``), natural parameters, ``validate=False`` (NaN, not an exception, at
invalid points), exactly as a training loop would call them.
"""

from __future__ import annotations

from torch import Tensor

from ztbench import loss as api
from ztbench.candidates.base import register_torch


def ztpoisson_ztbench(k: Tensor, lam: Tensor, threshold: float | None = None) -> Tensor:
    """``zt_poisson_nll(k, lam, reduction="none", validate=False)`` (loss form)."""
    return api.zt_poisson_nll(k, lam, reduction="none", validate=False)


def ztnb_ztbench(k: Tensor, mu: Tensor, theta: Tensor, threshold: float | None = None) -> Tensor:
    """``zt_negbin_nll(k, mu, theta, reduction="none", validate=False)`` (loss form)."""
    return api.zt_negbin_nll(k, mu, theta, reduction="none", validate=False)


register_torch(
    "ztpoisson",
    "ztbench",
    ztpoisson_ztbench,
    "loss",
    "ztbench.loss.zt_poisson_nll: float64 internals, -(k-1) log lam + "
    "log(expm1(lam)/lam), analytic backward without cancellation.",
    "ztbench.loss, the shipped loss",
)
register_torch(
    "ztnb",
    "ztbench",
    ztnb_ztbench,
    "loss",
    "ztbench.loss.zt_negbin_nll: float64 internals, log-gamma/digamma "
    "excess series, log w + log(expm1(w)/w) split, analytic backward.",
    "ztbench.loss, the shipped loss",
)
