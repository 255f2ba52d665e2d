"""The published replacement applied to an accurate NLL: what a threshold family measures.

The published rules replace the truncation term log(e^w - 1) by w, i.e. drop
log(1 - e^-w) = log1mexp(w), w = -log P(X = 0). Applied to the most accurate formulation
(the shipped loss, ``*/ztbench``) where a rule approximates, the error a threshold family
makes beyond that formulation's own is the rule's alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ztbench.core import rules as R
from ztbench.loss import primitives as P


def with_rule(nll: Tensor, w: Tensor, approx: Tensor) -> Tensor:
    """``nll - log1mexp(w)`` where ``approx`` (log(e^w - 1) -> w), ``nll`` elsewhere.

    Float64 in, float64 out; the dropped term is evaluated on safe inputs where not
    taken, so the where does not manufacture NaN gradients.
    """
    safe = torch.where(approx, w, torch.ones_like(w))
    return nll - torch.where(approx, P.log1mexp(safe), torch.zeros_like(w))


def rule_fires(variable: str, t: float, **params: Tensor) -> Tensor:
    """Where a threshold family's rule on ``variable`` replaces log(e^w - 1) by w at ``t``.

    ``params``: the float64 parameters the candidate computes with, ``lam`` (ztpoisson) or
    ``mu`` and ``theta`` (ztnb; ``w`` = -log P(0) is computed when the rule needs it and
    not given). The one place a threshold candidate and the threshold sweep decide which
    points a rule switches (:func:`ztbench.core.rules.approximates`). Every rule fires
    everywhere at t = -inf and nowhere at t = inf.
    """
    if variable == "w" and "w" not in params:
        params = {**params, "w": P.nb_log_p0(params["mu"], params["theta"])}
    return R.approximates(variable, t, **params)
