"""The public API's losses (:mod:`ztbench.loss`) registered as candidates.

``ztpoisson/ztbench`` and ``ztnb/ztbench``: the loss form (``full=False``), elementwise
(``reduction="none"``), natural parameters, ``validate=False`` (NaN, not an exception, at
invalid points), exactly as a training loop would call them. ``ztpoisson/ztbench-full`` and
``ztnb/ztbench-full``: the same calls with ``full=True`` (the negative log probability,
with lgamma(k + 1)), measured against the full-form reference. ``ztpoisson/ztbench-log``
and ``ztnb/ztbench-log``: the loss form called with log-parameters (``log_lam``;
``log_mu``, ``log_theta``), as a model head gives them, measured at the parameters their
rounded logs stand for, with gradients in the log-parameters.
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


def ztpoisson_ztbench_log(k: Tensor, log_lam: Tensor, threshold: float | None = None) -> Tensor:
    """``zt_poisson_nll(k, log_lam=log_lam, reduction="none", validate=False)``."""
    return api.zt_poisson_nll(k, log_lam=log_lam, reduction="none", validate=False)


def ztnb_ztbench_log(
    k: Tensor, log_mu: Tensor, log_theta: Tensor, threshold: float | None = None
) -> Tensor:
    """``zt_negbin_nll(k, log_mu=log_mu, log_theta=log_theta, reduction="none",
    validate=False)``."""
    return api.zt_negbin_nll(k, log_mu=log_mu, log_theta=log_theta, reduction="none",
                             validate=False)  # fmt: skip


def ztpoisson_ztbench_full(k: Tensor, lam: Tensor, threshold: float | None = None) -> Tensor:
    """``zt_poisson_nll(k, lam, reduction="none", full=True, validate=False)`` (full form)."""
    return api.zt_poisson_nll(k, lam, reduction="none", full=True, validate=False)


def ztnb_ztbench_full(
    k: Tensor, mu: Tensor, theta: Tensor, threshold: float | None = None
) -> Tensor:
    """``zt_negbin_nll(k, mu, theta, reduction="none", full=True, validate=False)`` (full form)."""
    return api.zt_negbin_nll(k, mu, theta, reduction="none", full=True, validate=False)


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
register_torch(
    "ztpoisson",
    "ztbench-full",
    ztpoisson_ztbench_full,
    "full",
    "ztbench.loss.zt_poisson_nll(full=True): -log P(X = k), lgamma(k + 1) computed with "
    "the terms it cancels against (Stirling difference and bd0 where k ~ lam).",
    "ztbench public API, full form",
)
register_torch(
    "ztnb",
    "ztbench-full",
    ztnb_ztbench_full,
    "full",
    "ztbench.loss.zt_negbin_nll(full=True): -log P(X = k), lgamma(k + 1) computed with "
    "the log-gamma differences it cancels against.",
    "ztbench public API, full form",
)
register_torch(
    "ztpoisson",
    "ztbench-log",
    ztpoisson_ztbench_log,
    "loss",
    "ztbench.loss.zt_poisson_nll(log_lam=...): the shipped loss with a log-parameter "
    "(lam = exp(log_lam) in float64, then as ztpoisson/ztbench).",
    "ztbench public API, log-parameters",
    log_params=("lam",),
)
register_torch(
    "ztnb",
    "ztbench-log",
    ztnb_ztbench_log,
    "loss",
    "ztbench.loss.zt_negbin_nll(log_mu=..., log_theta=...): the shipped loss with "
    "log-parameters (exp in float64, then as ztnb/ztbench).",
    "ztbench public API, log-parameters",
    log_params=("mu", "theta"),
)
