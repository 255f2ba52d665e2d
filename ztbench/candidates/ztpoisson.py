"""Zero-truncated Poisson candidates (torch): formulations of the NLL in (k, lam).

Forms: every candidate here written from the textbook formulas computes the **loss** form
(-k log lam + truncation term, no lgamma(k + 1)), as the original training code does;
``ztpoisson/torch-distributions`` computes the **full** form because Poisson.log_prob
includes -lgamma(k + 1).

Exact loss: -k log(lam) + log(e^lam - 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ztbench import loss as api
from ztbench.candidates.base import Candidate, in_float64, register_torch
from ztbench.candidates.rule_sweep import rule_fires, with_rule
from ztbench.core import rules as R
from ztbench.loss import primitives as P

FAMILY = "ztpoisson"
PUBLISHED_THRESHOLD = R.ZTP_THRESHOLD


def naive(k: Tensor, lam: Tensor, threshold: float | None = None) -> Tensor:
    """-k log(lam) + log(exp(lam) - 1) as written (overflows above lam ~ 88 in float32)."""
    return -k * torch.log(lam) + torch.log(torch.exp(lam) - 1.0)


def published(k: Tensor, lam: Tensor, threshold: float | None = None) -> Tensor:
    """bento-sc 0.0.8's ``PoissonNLL.loss`` (zero-truncated, loss form) transcribed in its
    operation order (it matches the package bit for bit)::

        T - k log(lam + 1e-8),  T = log(exp(min(lam, 10)) - 1 + 1e-8) where lam < 10,
                                T = lam from lam = 10 on

    The constants are added in the input dtype (1e-8 rounds to 0 in float16, as it would
    for a user); the rule is :func:`ztbench.core.rules.ztp_approximates`.
    """
    t = R.ZTP_THRESHOLD
    exact = (torch.clamp(lam, max=t).exp() - 1 + R.EPS).log()
    trunc = torch.where(R.ztp_approximates(lam, t), lam, exact)
    return trunc - k * (lam + R.EPS).log()


def expm1_form(k: Tensor, lam: Tensor, threshold: float | None = None) -> Tensor:
    """-k log(lam) + log(expm1(lam)): accurate for small lam, overflows for large lam."""
    return -k * torch.log(lam) + torch.log(torch.expm1(lam))


def branch_free(k: Tensor, lam: Tensor, threshold: float | None = None) -> Tensor:
    """-k log(lam) + lam + log(-expm1(-lam)): no overflow, one formula for all lam."""
    return -k * torch.log(lam) + lam + torch.log(-torch.expm1(-lam))


def log1mexp_where(k: Tensor, lam: Tensor, threshold: float | None = None) -> Tensor:
    """-k log(lam) + lam + log1mexp(lam), Maechler's two branches through a plain where.

    Kept deliberately unsafe: both branches see every lam, so where exp(-lam) rounds to 1
    (lam below about half an ulp of 1) the untaken branch log1p(-exp(-lam)) has derivative
    1/0 and the gradient of the where is 0 * inf = NaN although the value is fine.
    """
    small = lam <= P.LOG2
    l1me = torch.where(small, torch.log(-torch.expm1(-lam)), torch.log1p(-torch.exp(-lam)))
    return -k * torch.log(lam) + lam + l1me


def _k0_inf(k: Tensor, value: Tensor) -> Tensor:
    """+inf where k < 1 (probability zero under truncation), ``value`` elsewhere."""
    return torch.where(k >= 1.0, value, torch.full_like(value, float("inf")))


def stable(k: Tensor, lam: Tensor, threshold: float | None = None) -> Tensor:
    """-(k - 1) log(lam) + log(expm1(lam) / lam), with safe branches.

    Algebraically the loss; the regrouping takes one log(lam) out of the truncation term
    so that small-lam cancellation never happens (k = 1: the loss ~ lam/2 and its
    gradient ~ 1/2 come out to full relative accuracy). log(expm1(x)/x) is
    :func:`~ztbench.loss.primitives.log_expm1_over_x` (series below 1, log_expm1
    above, no overflow). (k - 1) log(lam) is xlogy (0 at k = 1 even if lam underflowed).
    Value and gradient are finite for every k >= 1 and lam > 0 representable; k = 0 gives
    +inf. Remaining limit: none in the loss form; the full form's -k log lam + lam +
    lgamma(k+1) cancellation at k ~ lam is not this candidate's quantity.
    """
    value = -torch.xlogy(k - 1.0, lam) + P.log_expm1_over_x(lam)
    return _k0_inf(k, value)


def threshold_rule(k: Tensor, lam: Tensor, threshold: float | None = None) -> Tensor:
    """``ztpoisson/ztbench``'s full NLL with the published replacement from lam = t on.

    log(e^lam - 1) -> lam, i.e. log(1 - e^-lam) dropped, where lam >= t (the published
    switch, :func:`ztbench.core.rules.ztp_approximates`; t defaults to the published 10). Built
    on the most accurate formulation, so that the error measured is the rule's alone
    (:func:`~ztbench.candidates.rule_sweep.with_rule`); full form, so that its ulps are
    those of -log P >= 0.
    """
    t = PUBLISHED_THRESHOLD if threshold is None else float(threshold)
    lam64 = lam.double()
    nll = api.zt_poisson_nll(k.double(), lam64, reduction="none", full=True, validate=False)
    return with_rule(nll, lam64, rule_fires("lam", t, lam=lam64)).to(lam.dtype)


def torch_distributions(k: Tensor, lam: Tensor, threshold: float | None = None) -> Tensor:
    """-Poisson(lam).log_prob(k) + log1p(-exp(-lam)), full form, as a user would write it."""
    dist = torch.distributions.Poisson(lam, validate_args=False)
    return -dist.log_prob(k) + torch.log1p(-torch.exp(-lam))


def _torch(name: str, fn, form: str, description: str, provenance: str, **kw) -> Candidate:
    return register_torch(FAMILY, name, fn, form, description, provenance, **kw)


_torch(
    "naive",
    naive,
    "loss",
    "-k log(lam) + log(exp(lam) - 1) as written.",
    "textbook ZTP likelihood",
)
_torch(
    "naive-float64",
    in_float64(naive),
    "loss",
    "-k log(lam) + log(exp(lam) - 1) as written, computed in float64, rounded once to the dtype.",
    "the naive formula with float64 internals (the 'compute it in double' fix)",
)
_torch(
    "published",
    published,
    "loss",
    "-k log(lam + 1e-8) + [log(exp(min(lam, 10)) - 1 + 1e-8) if lam < 10 else lam].",
    "the original (published) training code's rule, reproduced faithfully",
)
_torch(
    "expm1",
    expm1_form,
    "loss",
    "-k log(lam) + log(expm1(lam)).",
    "standard expm1 rewrite of the truncation term",
)
_torch(
    "branch-free",
    branch_free,
    "loss",
    "-k log(lam) + lam + log(-expm1(-lam)), one formula for all lam.",
    "log(e^lam - 1) = lam + log(1 - e^-lam) with the expm1 branch of log1mexp",
)
_torch(
    "log1mexp-where",
    log1mexp_where,
    "loss",
    "-k log(lam) + lam + log1mexp(lam) via a plain torch.where (NaN gradient for tiny lam).",
    "Maechler 2012 log1mexp (as in R/actuar), written without safe inputs",
)
_torch(
    "stable",
    stable,
    "loss",
    "-(k-1) log(lam) + log(expm1(lam)/lam) with series and safe branches; finite gradients.",
    "ztbench: log1mexp/log_expm1 rules with safe-input where",
)
_torch(
    "threshold",
    threshold_rule,
    "full",
    "ztpoisson/ztbench's full NLL with log(e^lam - 1) replaced by lam from lam = t on "
    "(t swept; default 10): the rule's error alone.",
    "threshold family generalising the published lam >= 10 rule",
    threshold=PUBLISHED_THRESHOLD,
    published_thresholds=(PUBLISHED_THRESHOLD,),
    threshold_variable="lam",
)
_torch(
    "torch-distributions",
    torch_distributions,
    "full",
    "-Poisson(lam).log_prob(k) + log1p(-exp(-lam)) (full form).",
    "torch.distributions.Poisson plus a user-written truncation term",
)
