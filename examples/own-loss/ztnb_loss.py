"""A zero-truncated negative binomial loss, as a project of its own would write it.

This file is the example's "user code": ztbench knows nothing about it except what
suite.toml declares (``target = "ztnb_loss.py:ztnb_nll"``).
"""

import torch


def ztnb_nll(k: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Elementwise -log P(K = k | K >= 1) + lgamma(k + 1) of NB(mean mu, dispersion theta).

    With w = -log P(K = 0) = theta log1p(mu / theta)::

        lgamma(theta) - lgamma(k + theta) + k log1p(theta / mu) + w + log(1 - e^-w)

    log1p keeps w and k log1p(theta / mu) accurate when mu / theta (or theta / mu) is
    tiny, and log(-expm1(-w)) keeps the truncation term accurate when w is tiny.
    """
    w = theta * torch.log1p(mu / theta)
    return (
        torch.lgamma(theta)
        - torch.lgamma(k + theta)
        + k * torch.log1p(theta / mu)
        + w
        + torch.log(-torch.expm1(-w))
    )
