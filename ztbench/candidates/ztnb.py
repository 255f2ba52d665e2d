"""Zero-truncated negative binomial candidates (torch): the NLL in (k, mu, theta).

Forms: the candidates written from the textbook formulas (naive, the published rules, the
softplus forms, the threshold families) compute the **loss** form, without lgamma(k + 1),
as the original training code does; ``ztnb/torch-distributions`` and ``ztnb/scvi-style``
compute the **full** form because the log-pmfs they start from include -lgamma(k + 1).

Exact loss, with l = log(mu) - log(theta) and w = theta softplus(l) =
theta log1p(mu/theta) = -log P(X = 0)::

    lgamma(theta) - lgamma(k + theta) - theta log(theta) + log((theta + mu)^theta - theta^theta)
        - k log(mu) + k log(theta + mu)
  = lgamma(theta) - lgamma(k + theta) + k softplus(-l) + log(expm1(w))
"""

from __future__ import annotations

import torch
from torch import Tensor

from ztbench import loss as api
from ztbench.candidates.base import Candidate, in_float64, register_torch
from ztbench.candidates.rule_sweep import rule_fires, with_rule
from ztbench.core import rules as R
from ztbench.loss import primitives as P

FAMILY = "ztnb"
PUBLISHED_THRESHOLD = R.ZTNB_THRESHOLD
SCVI_EPS = 1e-8


def _inf_where_k0(k: Tensor, value: Tensor) -> Tensor:
    """+inf where k < 1 (probability zero under truncation), ``value`` elsewhere."""
    return torch.where(k >= 1.0, value, torch.full_like(value, float("inf")))


def naive(k: Tensor, mu: Tensor, theta: Tensor, threshold: float | None = None) -> Tensor:
    """The pow form with plain lgamma terms, loss form::

    lgamma(theta) - lgamma(k + theta) - theta log(theta)
        + log((theta + mu)^theta - theta^theta) - k log(mu) + k log(theta + mu)
    """
    s = theta + mu
    return (
        torch.lgamma(theta)
        - torch.lgamma(k + theta)
        - theta * torch.log(theta)
        + torch.log(torch.pow(s, theta) - torch.pow(theta, theta))
        - k * torch.log(mu)
        + k * torch.log(s)
    )


def published_code(
    k: Tensor, mu: Tensor, log_theta: Tensor, threshold: float | None = None
) -> Tensor:
    """bento-sc 0.0.8's ``NegativeBinomialNLL.loss`` transcribed (loss form; takes mu and
    log theta, as the package does), in its operation order so that it matches bit for bit.

    With tiny = the smallest normal of the input dtype, log_theta' = log_theta + tiny,
    theta = exp(log_theta'), mu' = mu + tiny, G(z) = lgamma of z cast to float32::

        base = [G(theta) - G(k + theta) + k log(theta + mu') - theta log_theta'
                - k log(mu')] cast to the input dtype
        T    = theta log(theta + mu')      where (mu' - 1 + 1e-8)(theta + 1e-8) > 15
                                              or mu' + theta > 15
        T    = log(min(theta + mu', 15)^min(theta, 15) - min(theta, 15)^min(theta, 15)
                   + 1e-8)                 otherwise
        loss = base + T

    The rule and its constants are :func:`ztbench.core.rules.ztnb_code_approximates`. The
    approximation drops log(1 - e^-w), which is large when mu is small whatever theta is.
    """
    log_theta = log_theta + torch.finfo(mu.dtype).tiny
    theta = log_theta.exp()
    mu = mu + torch.finfo(mu.dtype).tiny
    base = (
        torch.lgamma(theta.float())
        - torch.lgamma((k + theta).float())
        + k * (theta + mu).log()
        - theta * log_theta
        - k * mu.log()
    ).to(mu.dtype)
    th_c = torch.clamp(theta, max=R.ZTNB_CLAMP)
    exact = (torch.clamp(theta + mu, max=R.ZTNB_CLAMP) ** th_c - th_c**th_c + R.EPS).log()
    return base + torch.where(
        R.ztnb_code_approximates(mu, theta), theta * (theta + mu).log(), exact
    )


def published_code_2024_10(
    k: Tensor, mu: Tensor, theta: Tensor, threshold: float | None = None
) -> Tensor:
    """The October 2024 code's rule (loss form), kept for history.

    With tiny = the smallest normal number of the input dtype, mu' = mu + tiny,
    s = theta + mu', log_theta = log(theta + tiny) (our reading of "tiny added to log
    theta": inside the log, the usual idiom), and G(z) = lgamma evaluated in float32 then
    cast back to the input dtype (whatever the input dtype)::

        G(theta) - G(k + theta) - theta log_theta + T - k log(mu') + k log(s)
        T = theta log(s)                                   if s > 15
        T = log(min(s, 15)^min(theta, 14) - min(theta, 14)^min(theta, 14))   otherwise

    The clamps are applied on both sides (the code clamps inside the pow); s = 15 exactly
    takes the pow form.
    """
    dt = mu.dtype
    tiny = torch.finfo(dt).tiny
    mu_t = mu + tiny
    s = theta + mu_t
    log_theta = torch.log(theta + tiny)

    def g(z: Tensor) -> Tensor:
        return torch.lgamma(z.to(torch.float32)).to(dt)

    th_c = torch.clamp(theta, max=R.ZTNB_THETA_CLAMP_2024_10)
    s_c = torch.clamp(s, max=R.ZTNB_CLAMP)
    exact = torch.log(torch.pow(s_c, th_c) - torch.pow(th_c, th_c))
    trunc = torch.where(R.ztnb_code_2024_10_approximates(mu_t, theta), theta * torch.log(s), exact)
    return (
        g(theta) - g(k + theta) - theta * log_theta + trunc - k * torch.log(mu_t) + k * torch.log(s)
    )


def published_text(k: Tensor, mu: Tensor, theta: Tensor, threshold: float | None = None) -> Tensor:
    """The rule as the published text states it (loss form, plain formula otherwise).

    The approximation T = theta log(theta + mu) (dropping theta^theta) is used when
    mu + theta > 15 or (mu - 1)(theta - 1) > 15 (both strict); otherwise the exact pow
    form log((theta + mu)^theta - theta^theta), unclamped (the text states no clamp), fed
    safe inputs where not taken so the where does not manufacture NaN gradients. Other
    terms as in ``ztnb/naive``.
    """
    s = theta + mu
    approx = R.ztnb_text_approximates(mu, theta)
    one = torch.ones_like(theta)
    th_e = torch.where(approx, one, theta)
    s_e = torch.where(approx, one + one, s)
    exact = torch.log(torch.pow(s_e, th_e) - torch.pow(th_e, th_e))
    trunc = torch.where(approx, theta * torch.log(s), exact)
    return (
        torch.lgamma(theta)
        - torch.lgamma(k + theta)
        - theta * torch.log(theta)
        + trunc
        - k * torch.log(mu)
        + k * torch.log(s)
    )


def _softplus_parts(mu: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """(softplus(-l), w) with l = log(mu) - log(theta), w = theta softplus(l).

    w comes from :func:`~ztbench.loss.primitives.nb_log_p0` (mu log1p(x)/x for
    l < 0, so no subnormal softplus(l) and no overflow in its gradient chain).
    """
    lg = torch.log(mu) - torch.log(theta)
    return P.softplus(-lg), P.nb_log_p0(mu, theta, lg)


def softplus_form(k: Tensor, mu: Tensor, theta: Tensor, threshold: float | None = None) -> Tensor:
    """lgamma(theta) - lgamma(k + theta) + k softplus(-l) + log_expm1(w), loss form.

    l = log(mu) - log(theta), w = theta softplus(l); softplus and log_expm1 are the
    stable primitives. The lgamma difference is plain (cancels for large theta).
    """
    sp_neg, w = _softplus_parts(mu, theta)
    return torch.lgamma(theta) - torch.lgamma(k + theta) + k * sp_neg + P.log_expm1(w)


def stable(k: Tensor, mu: Tensor, theta: Tensor, threshold: float | None = None) -> Tensor:
    """-lgamma_difference(k, theta) + k softplus(-l) + log_expm1(w), loss form.

    The softplus form with lgamma(k + theta) - lgamma(theta) from
    :func:`~ztbench.loss.primitives.lgamma_difference` (Stirling difference for
    theta >= 10, accurate up to theta = 1e10). Every branch is fed safe inputs, so value
    and gradients are finite for all k >= 1, mu > 0, theta > 0 representable; k = 0
    gives +inf. Known limits: at k = 1 and small mu the terms cancel to a
    tiny NLL (relative accuracy lost; d_mu's -k/mu and 1/w terms cancel likewise), and for
    large k and theta, -lgamma_difference ~ -k log(theta) cancels against
    k softplus(-l) ~ k log(theta/mu) (absolute error a few ulp of k log(theta)).
    """
    sp_neg, w = _softplus_parts(mu, theta)
    value = -P.lgamma_difference(k, theta) + k * sp_neg + P.log_expm1(w)
    return _inf_where_k0(k, value)


def _threshold(k: Tensor, mu: Tensor, theta: Tensor, variable: str, t: float) -> Tensor:
    """``ztnb/ztbench``'s full NLL with log(expm1(w)) -> w where the rule on ``variable``
    approximates at t (:func:`ztbench.core.rules.approximates`, on the float64 values)."""
    k64, m64, th64 = k.double(), mu.double(), theta.double()
    nll = api.zt_negbin_nll(k64, m64, th64, reduction="none", full=True, validate=False)
    w = P.nb_log_p0(m64, th64)
    return with_rule(nll, w, rule_fires(variable, t, mu=m64, theta=th64, w=w)).to(mu.dtype)


def threshold_sum(k: Tensor, mu: Tensor, theta: Tensor, threshold: float | None = None) -> Tensor:
    """``ztnb/ztbench`` (full NLL) with log(expm1(w)) replaced by w where theta + mu > t
    (default 15: the October 2024 code's rule).

    Switches on theta + mu; the error of the approximation is -log(1 - e^-w), which is not
    small where mu is small, so no t makes it safe.
    """
    t = PUBLISHED_THRESHOLD if threshold is None else float(threshold)
    return _threshold(k, mu, theta, "theta_plus_mu", t)


def threshold_pair(k: Tensor, mu: Tensor, theta: Tensor, threshold: float | None = None) -> Tensor:
    """``ztnb/ztbench`` (full NLL) with log(expm1(w)) replaced by w where
    (mu - 1 + 1e-8)(theta + 1e-8) > t or mu + theta > t (default 15: the code as
    published, both of its conditions scaled together)."""
    t = PUBLISHED_THRESHOLD if threshold is None else float(threshold)
    return _threshold(k, mu, theta, "code_pair", t)


def threshold_w(k: Tensor, mu: Tensor, theta: Tensor, threshold: float | None = None) -> Tensor:
    """``ztnb/ztbench`` (full NLL) with log(expm1(w)) replaced by w where w > t (default 15).

    w = theta log1p(mu/theta) = -log P(0): the error of the approximation is
    -log(1 - e^-w) ~ e^-w < e^-t, bounded for every mu and theta.
    """
    t = PUBLISHED_THRESHOLD if threshold is None else float(threshold)
    return _threshold(k, mu, theta, "w", t)


def torch_distributions(
    k: Tensor, mu: Tensor, theta: Tensor, threshold: float | None = None
) -> Tensor:
    """-NB.log_prob(k) + log1p(-exp(NB.log_prob(0))), full form, as a user would write it.

    NB = torch.distributions.NegativeBinomial(total_count=theta, logits=log mu - log theta)
    (mean theta e^logits = mu).
    """
    dist = torch.distributions.NegativeBinomial(
        total_count=theta, logits=torch.log(mu) - torch.log(theta), validate_args=False
    )
    log_p0 = dist.log_prob(torch.zeros_like(k))
    return -dist.log_prob(k) + torch.log1p(-torch.exp(log_p0))


def _scvi_log_nb_positive(x: Tensor, mu: Tensor, theta: Tensor, eps: float = SCVI_EPS) -> Tensor:
    """scvi-tools' ``log_nb_positive`` formula (re-expressed; scvi-tools not imported)::

    theta (log(theta + eps) - log(theta + mu + eps)) + x (log(mu + eps) - log(theta + mu + eps))
        + lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)
    """
    log_theta_mu_eps = torch.log(theta + mu + eps)
    return (
        theta * (torch.log(theta + eps) - log_theta_mu_eps)
        + x * (torch.log(mu + eps) - log_theta_mu_eps)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


def scvi_style(k: Tensor, mu: Tensor, theta: Tensor, threshold: float | None = None) -> Tensor:
    """-log_nb_positive(k) + log1p(-exp(log_nb_positive(0))), full form (eps = 1e-8)."""
    log_p0 = _scvi_log_nb_positive(torch.zeros_like(k), mu, theta)
    return -_scvi_log_nb_positive(k, mu, theta) + torch.log1p(-torch.exp(log_p0))


def _torch(name: str, fn, form: str, description: str, provenance: str, **kw) -> Candidate:
    return register_torch(FAMILY, name, fn, form, description, provenance, **kw)


_torch(
    "naive",
    naive,
    "loss",
    "Pow form log((theta+mu)^theta - theta^theta) with plain lgamma terms.",
    "textbook ZTNB likelihood",
)
_torch(
    "naive-float64",
    in_float64(naive),
    "loss",
    "The naive pow form computed in float64 and rounded once to the input dtype.",
    "the naive formula with float64 internals (the 'compute it in double' fix)",
)
_torch(
    "published-code",
    published_code,
    "loss",
    "Takes mu and log theta; theta log(theta+mu) when (mu-1+1e-8)(theta+1e-8) > 15 or "
    "mu+theta > 15, else log(min(theta+mu,15)^min(theta,15) - min(theta,15)^min(theta,15) "
    "+ 1e-8); lgamma in float32; tiny added to mu and log theta.",
    "the code as published with the write-up (bento-sc 0.0.8 loss.py), transcribed",
    log_params=("theta",),
)
_torch(
    "published-code-2024-10",
    published_code_2024_10,
    "loss",
    "theta log(theta+mu) when theta+mu > 15, else the pow form with theta <= 14, "
    "theta+mu <= 15 clamps; lgamma in float32; tiny added to mu and inside log theta.",
    "the October 2024 version of the published training code's rule",
)
_torch(
    "published-text",
    published_text,
    "loss",
    "Pow form, approximated by theta log(theta+mu) when mu+theta > 15 or (mu-1)(theta-1) > 15.",
    "the rule as stated in the original publication's text",
)
_torch(
    "softplus",
    softplus_form,
    "loss",
    "lgamma(theta) - lgamma(k+theta) + k softplus(-l) + log(expm1(theta softplus(l))), "
    "l = log mu - log theta.",
    "softplus form as in glmmTMB's truncated nbinom2 and torch NegativeBinomial logits",
)
_torch(
    "stable",
    stable,
    "loss",
    "The softplus form with a Stirling-difference lgamma(k+theta) - lgamma(theta) "
    "and safe branches; finite gradients.",
    "ztbench: TOMS 708 algdiv / TFP log_gamma_difference idea plus safe-input where",
)
_torch(
    "threshold-sum",
    threshold_sum,
    "full",
    "ztnb/ztbench's full NLL with log(expm1(w)) replaced by w where theta + mu > t "
    "(t swept; default 15): the rule's error alone.",
    "threshold family generalising the October 2024 code's theta + mu > 15 rule",
    threshold=PUBLISHED_THRESHOLD,
    published_thresholds=(PUBLISHED_THRESHOLD,),
    threshold_variable="theta_plus_mu",
)
_torch(
    "threshold-pair",
    threshold_pair,
    "full",
    "ztnb/ztbench's full NLL with log(expm1(w)) replaced by w where "
    "(mu-1+1e-8)(theta+1e-8) > t or mu+theta > t (t swept; default 15): the rule's error alone.",
    "threshold family generalising the published code's pair of conditions (bento-sc 0.0.8)",
    threshold=PUBLISHED_THRESHOLD,
    published_thresholds=(PUBLISHED_THRESHOLD,),
    threshold_variable="code_pair",
)
_torch(
    "threshold-w",
    threshold_w,
    "full",
    "ztnb/ztbench's full NLL with log(expm1(w)) replaced by w where w = theta log1p(mu/theta) "
    "> t (t swept; default 15).",
    "ztbench: switch on -log P(0), the variable that bounds the error",
    threshold=PUBLISHED_THRESHOLD,
    threshold_variable="w",
)
_torch(
    "torch-distributions",
    torch_distributions,
    "full",
    "-NegativeBinomial(theta, logits=log mu - log theta).log_prob(k) + "
    "log1p(-exp(log_prob(0))) (full form).",
    "torch.distributions.NegativeBinomial plus a user-written truncation term",
)
_torch(
    "scvi-style",
    scvi_style,
    "full",
    "scvi-tools' log_nb_positive (eps = 1e-8 inside the logs) negated, plus "
    "log1p(-exp(log_nb_positive(0))) (full form).",
    "scvi-tools log_nb_positive published formula, re-expressed (not imported)",
)
