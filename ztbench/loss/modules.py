"""``torch.nn`` modules for the shipped losses, mirroring :class:`torch.nn.PoissonNLLLoss`.

::

    crit = ZeroTruncatedNegativeBinomialNLLLoss()      # log_input=True: log mu, log theta
    loss = crit(head_mu, counts, head_theta, mask=counts > 0)

``log_input=True`` (the default, as in ``nn.PoissonNLLLoss``) takes the log of the
untruncated mean (and of theta), the natural output of a linear head: no exp/clamp in the
model, and the loss stays exact where mu underflows. ``full=True`` adds lgamma(k + 1), so
that the loss is -log P(X = k | X > 0). ``mask`` and ``weight`` are per call, as in the
functional form (:func:`~ztbench.loss.api.zt_negbin_nll`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ztbench.loss.api import Reduction, check_reduction, zt_negbin_nll, zt_poisson_nll

__all__ = ["ZeroTruncatedNegativeBinomialNLLLoss", "ZeroTruncatedPoissonNLLLoss"]


class _ZTLoss(nn.Module):
    def __init__(
        self,
        log_input: bool = True,
        full: bool = False,
        reduction: Reduction = "mean",
        validate: bool = True,
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        self.log_input = log_input
        self.full = full
        self.reduction: Reduction = reduction
        self.validate = validate

    def _options(self, mask: Tensor | None, weight: Tensor | None) -> dict[str, Any]:
        """The keyword arguments of the functional form."""
        return {"reduction": self.reduction, "full": self.full, "validate": self.validate,
                "mask": mask, "weight": weight}  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"log_input={self.log_input}, full={self.full}, reduction={self.reduction!r}, "
            f"validate={self.validate}"
        )


class ZeroTruncatedPoissonNLLLoss(_ZTLoss):
    """-log P(target | target > 0) for a Poisson with mean lam, up to lgamma(k + 1).

    ``forward(input, target, mask=None, weight=None)``: ``input`` is log(lam) with
    ``log_input=True`` (default), else lam; ``target`` the counts (>= 1 where kept).
    The loss -k log(lam) + log(e^lam - 1) is computed by
    :func:`~ztbench.loss.api.zt_poisson_nll` (float64 inside, one rounding).
    """

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        mask: Tensor | None = None,
        weight: Tensor | None = None,
    ) -> Tensor:
        rate = {"log_lam": input} if self.log_input else {"lam": input}
        return zt_poisson_nll(target, **rate, **self._options(mask, weight))


class ZeroTruncatedNegativeBinomialNLLLoss(_ZTLoss):
    """-log P(target | target > 0) for a negative binomial with mean mu and size theta
    (variance mu + mu^2/theta), up to lgamma(k + 1).

    ``forward(input, target, theta, mask=None, weight=None)``: with ``log_input=True``
    (default) ``input`` is log(mu) and ``theta`` is log(theta); else both natural. ``mu``
    is the untruncated mean: the truncated law's mean is mu / (1 - (theta/(theta+mu))^theta).
    Computed by :func:`~ztbench.loss.api.zt_negbin_nll`.
    """

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        theta: Tensor,
        mask: Tensor | None = None,
        weight: Tensor | None = None,
    ) -> Tensor:
        if self.log_input:
            params = {"log_mu": input, "log_theta": theta}
        else:
            params = {"mu": input, "theta": theta}
        return zt_negbin_nll(target, **params, **self._options(mask, weight))
