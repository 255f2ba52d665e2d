"""The published replacement applied to an accurate NLL: what a threshold family measures.

The published rules replace the truncation term log(e^w - 1) by w, i.e. drop
log(1 - e^-w) = log1mexp(w), w = -log P(X = 0). Applied to the most accurate formulation
(the shipped loss, ``*/ztbench``) where a rule approximates, the error a threshold family
makes beyond that formulation's own is the rule's alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ztbench.loss import primitives as P


def with_rule(nll: Tensor, w: Tensor, approx: Tensor) -> Tensor:
    """``nll - log1mexp(w)`` where ``approx`` (log(e^w - 1) -> w), ``nll`` elsewhere.

    Float64 in, float64 out; the dropped term is evaluated on safe inputs where not
    taken, so the where does not manufacture NaN gradients.
    """
    safe = torch.where(approx, w, torch.ones_like(w))
    return nll - torch.where(approx, P.log1mexp(safe), torch.zeros_like(w))
