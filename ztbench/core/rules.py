"""The published rules and their thresholds, stated once (torch-free: the report reads it).

The published system replaces the truncation term log(e^w - 1), w = -log P(X = 0), by w
past a threshold, i.e. drops log(1 - e^-w) (about e^-w nats). Its rules switch on other
variables than w:

- ZTP (all published versions): the code computes log(exp(min(lam, 10)) - 1 + 1e-8)
  where lam < 10 and lam from lam = 10 on, with -k log(lam + 1e-8) (w = lam here).
- ZTNB, the code as published with the write-up (bento-sc 0.0.8): approximate where
  ``(mu - 1 + 1e-8)(theta + 1e-8) > 15 or mu + theta > 15``; elsewhere the pow form
  ``log(min(theta + mu, 15)^min(theta, 15) - min(theta, 15)^min(theta, 15) + 1e-8)``.
- ZTNB, the October 2024 code: approximate where ``theta + mu > 15``; the pow form with
  ``theta`` clamped at 14 and ``theta + mu`` at 15, no 1e-8.
- ZTNB, the text: approximate where ``mu + theta > 15 or (mu - 1)(theta - 1) > 15``.

The predicates are written with Python operators only, so they accept numpy arrays and
torch tensors alike, and a tensor expression evaluates in exactly the operation order of
the published code (the transcriptions in :mod:`ztbench.candidates.ztnb` use them and
must match the package bit for bit).

The published system's reachable domain: its model head gives ``lam = mu =
clamp(exp(y) + 1, max=1e7)`` in zero-truncated mode, so 1 < lam, mu <= 1e7
(:data:`PUBLISHED_DOMAIN`); theta = exp(log_theta) is unconstrained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------- constants
ZTP_THRESHOLD = 10.0
"""ZTP: the exact term is used where lam < 10, lam itself from 10 on."""
EPS = 1e-8
"""The 1e-8 the published code adds inside its logs and to its conditions."""
ZTNB_THRESHOLD = 15.0
"""Every published ZTNB rule compares with 15."""
ZTNB_CLAMP = 15.0
"""bento-sc 0.0.8 clamps theta and theta + mu at 15 inside the pow form."""
ZTNB_THETA_CLAMP_2024_10 = 14.0
"""The October 2024 code clamped theta at 14 (theta + mu at 15)."""
HEAD_MAX = 1e7
"""The model head clamps lam and mu at 1e7."""

PUBLISHED_THRESHOLDS: dict[str, tuple[float, ...]] = {
    "ztpoisson": (ZTP_THRESHOLD,),
    "ztnb": (ZTNB_THRESHOLD,),
}
"""Per family, the thresholds the published rules use (threshold neighbourhoods' default)."""

PUBLISHED_DOMAIN: dict[str, dict[str, tuple[float, float]]] = {
    "ztpoisson": {"lam": (1.0, HEAD_MAX)},
    "ztnb": {"mu": (1.0, HEAD_MAX)},
}
"""Per family, the bounds of the published system's reachable domain: (lower, upper) with
the lower bound exclusive (mu = exp(y) + 1 > 1) and the upper inclusive (the clamp)."""
PUBLISHED_DOMAIN_REGION = "published-domain"
"""The region name every shipped suite gives that domain."""
OUTSIDE_PUBLISHED_DOMAIN_REGION = "outside-published-domain"
"""The summaries' name for its complement (added by the accuracy runner)."""


# ---------------------------------------------------------------------------- predicates
def ztp_approximates(lam: Any, t: float = ZTP_THRESHOLD) -> Any:
    """True where the ZTP rule uses lam instead of log(e^lam - 1): lam >= t."""
    return lam >= t


def ztnb_code_approximates(mu: Any, theta: Any, t: float = ZTNB_THRESHOLD) -> Any:
    """bento-sc 0.0.8: ``(mu - 1 + 1e-8) * (theta + 1e-8) > t or mu + theta > t``.

    With ``t`` other than 15 both conditions are scaled together (the swept "pair").
    """
    return ((mu - 1 + EPS) * (theta + EPS) > t) | (mu + theta > t)


def ztnb_code_2024_10_approximates(mu: Any, theta: Any, t: float = ZTNB_THRESHOLD) -> Any:
    """The October 2024 code: ``theta + mu > t``."""
    return theta + mu > t


def ztnb_text_approximates(mu: Any, theta: Any, t: float = ZTNB_THRESHOLD) -> Any:
    """The text: ``mu + theta > t or (mu - 1)(theta - 1) > t``."""
    return (mu + theta > t) | ((mu - 1.0) * (theta - 1.0) > t)


def w_approximates(w: Any, t: float) -> Any:
    """The rule on w = -log P(0) itself: w > t (its error is below e^-t nats)."""
    return w > t


# ------------------------------------------------------------------ swept threshold variables
SWEEP_VARIABLES: dict[str, tuple[str, ...]] = {
    "ztpoisson": ("lam",),  # w = lam: the lam sweep is the w sweep
    "ztnb": ("theta_plus_mu", "code_pair", "w"),
}
"""Per family, the variables a threshold family may switch on (``ztbench/threshold-*``).

``lam``: lam >= t. ``theta_plus_mu``: theta + mu > t (the October 2024 code).
``code_pair``: bento-sc 0.0.8's two conditions with 15 replaced by t. ``w``: w > t.
"""


def approximates(variable: str, t: float, **params: Any) -> Any:
    """Where a rule on ``variable`` (see :data:`SWEEP_VARIABLES`) approximates at ``t``.

    ``params``: ``lam`` (ztpoisson) or ``mu``, ``theta``, ``w`` (ztnb).
    """
    if variable == "lam":
        return ztp_approximates(params["lam"], t)
    if variable == "theta_plus_mu":
        return ztnb_code_2024_10_approximates(params["mu"], params["theta"], t)
    if variable == "code_pair":
        return ztnb_code_approximates(params["mu"], params["theta"], t)
    if variable == "w":
        return w_approximates(params["w"], t)
    raise ValueError(f"unknown threshold variable {variable!r}")


# ------------------------------------------------------------- switch curves (points, plots)
def sum_curve_theta(mu: float, t: float = ZTNB_THRESHOLD) -> float:
    """theta on the curve theta + mu = t."""
    return t - mu


def product_curve_theta(mu: Any, t: float = ZTNB_THRESHOLD) -> Any:
    """theta on the text's curve (mu - 1)(theta - 1) = t (inf at mu = 1); float or array."""
    with np.errstate(divide="ignore"):
        return np.where(np.asarray(mu) != 1.0, 1.0 + t / (np.asarray(mu, dtype=float) - 1.0),
                        np.inf)[()]  # fmt: skip


def pair_curve_theta(mu: Any, t: float = ZTNB_THRESHOLD) -> Any:
    """theta on bento-sc 0.0.8's product curve (mu - 1 + 1e-8)(theta + 1e-8) = t
    (inf where mu <= 1, where that condition never holds); float or array."""
    m = np.asarray(mu, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m > 1.0, t / (m - 1.0 + EPS) - EPS, np.inf)[()]


def w_curve_mu(theta: float, t: Any) -> Any:
    """mu on the curve theta log1p(mu / theta) = t (inf where it overflows); ``t`` a float
    or a numpy array."""
    if isinstance(t, np.ndarray):
        with np.errstate(over="ignore"):
            return theta * np.expm1(t / theta)
    return theta * math.expm1(t / theta) if t / theta < 700 else math.inf


# ---------------------------------------------------------------------------- the rules
@dataclass(frozen=True)
class PublishedRule:
    """One published rule, as the candidate that measures it.

    ``text`` says what it does in plain words (the report's sentence after its id);
    ``sweeps`` are the threshold families that sweep its switch variable; ``regions`` the
    suite regions where its switch matters (reported when the suite defines them).
    """

    candidate: str
    text: str
    sweeps: tuple[str, ...]
    regions: tuple[str, ...]

    @property
    def family(self) -> str:
        return self.candidate.split("/", 1)[0]


_ZTP_SWEEPS = ("ztpoisson/threshold",)
_ZTNB_REGIONS = ("sum-rule-wrong", "near-sum-15")
PUBLISHED_RULES: tuple[PublishedRule, ...] = (
    PublishedRule(
        "ztpoisson/published",
        "replaces log(e^lam - 1) by lam when lam >= 10 (the published code)",
        _ZTP_SWEEPS,
        ("near-lam-10",),
    ),
    PublishedRule(
        "ztpoisson/bento-sc",
        "is the published package's own PoissonNLL (bento-sc 0.0.8), which replaces "
        "log(e^lam - 1) by lam when lam >= 10",
        _ZTP_SWEEPS,
        ("near-lam-10",),
    ),
    PublishedRule(
        "ztnb/published-code",
        "replaces log((theta+mu)^theta - theta^theta) by theta log(theta+mu) when "
        "(mu - 1 + 1e-8)(theta + 1e-8) > 15 or mu + theta > 15 (the code as published with "
        "the write-up, bento-sc 0.0.8: takes mu and log theta, clamps theta and theta + mu at "
        "15 and adds 1e-8 inside the log, lgamma in float32)",
        ("ztnb/threshold-pair", "ztnb/threshold-w"),
        _ZTNB_REGIONS,
    ),
    PublishedRule(
        "ztnb/bento-sc",
        "is the published package's own NegativeBinomialNLL (bento-sc 0.0.8), the same rule "
        "as `ztnb/published-code`",
        ("ztnb/threshold-pair", "ztnb/threshold-w"),
        _ZTNB_REGIONS,
    ),
    PublishedRule(
        "ztnb/published-code-2024-10",
        "replaces log((theta+mu)^theta - theta^theta) by theta log(theta+mu) when theta + mu "
        "> 15 (the October 2024 code: theta clamped at 14, theta + mu at 15, lgamma in float32)",
        ("ztnb/threshold-sum", "ztnb/threshold-w"),
        _ZTNB_REGIONS,
    ),
    PublishedRule(
        "ztnb/published-text",
        "makes the same replacement when mu + theta > 15 or (mu - 1)(theta - 1) > 15 (the rule "
        "as the publication's text states it)",
        ("ztnb/threshold-sum", "ztnb/threshold-w"),
        _ZTNB_REGIONS,
    ),
)
"""Every published rule the benchmark measures, in the report's order."""
