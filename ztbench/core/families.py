"""The two distribution families: parameter names, quantities and input domains.

Every other module asks this one what a family is, so the names of columns
(``k``, ``lam``, ``mu``, ``theta``) and of quantities (``nll``, ``nll_loss``,
``d_lam``, ``d_mu``, ``d_theta``) are defined here once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum

import numpy as np

from ztbench.core.schema import FAMILY_NAMES, member

K_MAX = 1e7


class Family(StrEnum):
    """A zero-truncated count family, named as its id: a member *is* its name's string
    (``Family.ztnb == "ztnb"``), so it stands wherever the name does while carrying what
    the family is to every stage below the one that resolved it (``Family("ztnb")`` or
    :func:`get_family`, once).

    ``params`` are the continuous parameters (the NLL is differentiated with respect to
    each); ``domain`` gives the closed interval each parameter must lie in.
    """

    params: tuple[str, ...]
    domain: Mapping[str, tuple[float, float]]
    description: str

    def __new__(
        cls,
        name: str,
        params: tuple[str, ...],
        domain: Mapping[str, tuple[float, float]],
        description: str,
    ) -> Family:
        member = str.__new__(cls, name)
        member._value_ = name
        member.params, member.domain, member.description = params, domain, description
        return member

    ztpoisson = (
        "ztpoisson",
        ("lam",),
        {"k": (1.0, K_MAX), "lam": (1e-30, 1e9)},
        "zero-truncated Poisson, mean lam",
    )
    ztnb = (
        "ztnb",
        ("mu", "theta"),
        {"k": (1.0, K_MAX), "mu": (1e-30, 1e9), "theta": (1e-12, 1e10)},
        "zero-truncated negative binomial, mean mu, inverse dispersion theta",
    )

    @property
    def columns(self) -> tuple[str, ...]:
        """Input columns: the count ``k`` then the parameters."""
        return ("k", *self.params)

    @property
    def gradients(self) -> tuple[str, ...]:
        """Gradient quantity names, one per parameter: ``d_<param>``."""
        return tuple(f"d_{p}" for p in self.params)

    @property
    def quantities(self) -> tuple[str, ...]:
        """Every reference quantity: full NLL, loss form (no lgamma(k+1)), gradients."""
        return ("nll", "nll_loss", *self.gradients)

    def own_params(self, log_params: Collection[str] = ()) -> tuple[str, ...]:
        """The parameters in a parameterisation: ``log_<p>`` for each p in ``log_params``
        (or ``total_count, logits`` for :data:`TORCH_NB`)."""
        if is_torch_nb(self, log_params):
            return TORCH_NB_COLUMNS
        unknown = set(log_params) - set(self.params)
        if unknown:
            raise ValueError(
                f"{self.name}: {', '.join(sorted(unknown))} is not a parameter "
                f"(parameters: {', '.join(self.params)})"
            )
        return tuple(param_column(p, p in log_params) for p in self.params)

    def columns_for(self, log_params: Collection[str] = ()) -> tuple[str, ...]:
        """Input columns in a parameterisation: ``k``, then ``p`` or ``log_p``."""
        return ("k", *self.own_params(log_params))

    def gradients_for(self, log_params: Collection[str] = ()) -> tuple[str, ...]:
        """Gradient names in a parameterisation: ``d_p`` or ``d_log_p``."""
        return tuple(f"d_{c}" for c in self.own_params(log_params))

    def quantities_for(self, log_params: Collection[str] = ()) -> tuple[str, ...]:
        """Reference quantities in a parameterisation (gradients w.r.t. its parameters)."""
        return ("nll", "nll_loss", *self.gradients_for(log_params))


# torch.distributions.NegativeBinomial's parameters: total_count = theta and logits =
# log(mu / theta) (its mean is total_count e^logits = mu). Not a log per parameter: a ztnb
# candidate declares it as log_params = (TORCH_NB,); the reference is then taken at
# theta = total_count, mu = total_count exp(logits) exactly, with d/dtotal_count (logits
# held) = d/dtheta + e^logits d/dmu and d/dlogits = mu d/dmu (reference.formulas).
TORCH_NB = "torch-nb"
TORCH_NB_COLUMNS: tuple[str, ...] = ("total_count", "logits")


def is_torch_nb(family: Family, log_params: Collection[str]) -> bool:
    """True for the :data:`TORCH_NB` parameterisation of ztnb."""
    return family.name == "ztnb" and tuple(log_params) == (TORCH_NB,)


def param_column(param: str, log: bool) -> str:
    """The column of ``param`` in its parameterisation: ``param`` or ``log_<param>``."""
    return f"log_{param}" if log else param


def to_own(
    family: Family, points: Mapping[str, np.ndarray], log_params: Collection[str] = ()
) -> dict[str, np.ndarray]:
    """Natural columns (``k``, ``p``) to a parameterisation's columns (``log_p`` = log p).

    The log is float64's; the caller rounds the result to its dtype, and the reference is
    then taken at the exact value that rounded input stands for (:func:`to_natural`'s
    float64 exp is only an approximation of it, for regions and reports).
    """
    out = {"k": np.asarray(points["k"], dtype=np.float64)}
    if is_torch_nb(family, log_params):
        mu, theta = (np.asarray(points[p], dtype=np.float64) for p in ("mu", "theta"))
        with np.errstate(divide="ignore", invalid="ignore"):
            return {**out, "total_count": theta, "logits": np.log(mu) - np.log(theta)}
    for p in family.params:
        x = np.asarray(points[p], dtype=np.float64)
        if p in log_params:
            with np.errstate(divide="ignore", invalid="ignore"):
                x = np.log(x)
        out[param_column(p, p in log_params)] = x
    return out


def to_natural(
    family: Family, points: Mapping[str, np.ndarray], log_params: Collection[str] = ()
) -> dict[str, np.ndarray]:
    """A parameterisation's columns back to natural ones (float64 exp of each ``log_p``;
    :data:`TORCH_NB`: mu = total_count exp(logits) in float64)."""
    out = {"k": np.asarray(points["k"], dtype=np.float64)}
    if is_torch_nb(family, log_params):
        tc, logits = (np.asarray(points[c], dtype=np.float64) for c in TORCH_NB_COLUMNS)
        with np.errstate(over="ignore", invalid="ignore"):
            return {**out, "mu": tc * np.exp(logits), "theta": tc}
    for p in family.params:
        x = np.asarray(points[param_column(p, p in log_params)], dtype=np.float64)
        if p in log_params:
            with np.errstate(over="ignore"):
                x = np.exp(x)
        out[p] = x
    return out


ZTPOISSON = Family.ztpoisson
ZTNB = Family.ztnb
FAMILIES: dict[str, Family] = {f.value: f for f in Family}
assert tuple(FAMILIES) == FAMILY_NAMES


def get_family(name: str) -> Family:
    """The family called ``name`` (a family is returned as it is); ValueError listing the
    known ones otherwise."""
    return member(Family, name, "family")


def _bad_rows(family: Family, col: str, arr: np.ndarray) -> tuple[np.ndarray, str]:
    """Mask of invalid values of one column, and the rule they break."""
    lo, hi = family.domain[col]
    if col == "k":
        bad = ~np.isfinite(arr) | (arr != np.floor(arr)) | (arr < 0.0) | (arr > hi)
        return bad, f"must be an integer in [0, {hi:g}]"
    bad = ~np.isfinite(arr) | (arr < lo) | (arr > hi)
    return bad, f"must be finite and in [{lo:g}, {hi:g}]"


def domain_mask(
    family: Family, points: Mapping[str, np.ndarray], allow_k0: bool = True
) -> np.ndarray:
    """True where a point is a valid input of ``family`` (the rules of :func:`validate_points`).

    ``allow_k0=False`` also excludes k = 0 (valid, NLL = +inf, but nothing to measure).
    Used to tell points that leave the domain after rounding to a low-precision dtype
    (e.g. lam = 1e-30 underflowing to 0 in float16) from points a candidate gets wrong.
    """
    k = np.asarray(points["k"], dtype=np.float64)
    ok = np.ones(len(k), dtype=bool) if allow_k0 else k >= 1
    for col in family.columns:
        ok &= ~_bad_rows(family, col, np.asarray(points[col], dtype=np.float64))[0]
    return ok


def validate_points(family: Family, points: Mapping[str, np.ndarray]) -> None:
    """Check that ``points`` holds valid inputs of ``family``; ValueError naming the row.

    Rules: k is an integer in [0, 1e7] (k = 0 is allowed: it has probability zero under
    truncation, so its NLL is +inf); each parameter is finite and inside its domain.
    Rows are numbered from 0 in the order given.
    """
    for col in family.columns:
        if col not in points:
            raise ValueError(f"{family.name}: missing column {col!r}")
    n = len(np.asarray(points["k"]))
    for col in family.columns:
        arr = np.asarray(points[col], dtype=np.float64)
        if arr.shape != (n,):
            raise ValueError(
                f"{family.name}: column {col!r} has shape {arr.shape}, expected ({n},)"
            )
        bad, what = _bad_rows(family, col, arr)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{family.name}: row {row}: {col} = {float(arr[row])!r} {what}")


SHIPPED_CALLS: dict[str, str] = {
    "ztpoisson/ztbench": "zt_poisson_nll(k, lam)",
    "ztpoisson/ztbench-log": "zt_poisson_nll(k, log_lam=log_lam)",
    "ztpoisson/ztbench-full": "zt_poisson_nll(k, lam, full=True)",
    "ztnb/ztbench": "zt_negbin_nll(k, mu, theta)",
    "ztnb/ztbench-log": "zt_negbin_nll(k, log_mu=log_mu, log_theta=log_theta)",
    "ztnb/ztbench-full": "zt_negbin_nll(k, mu, theta, full=True)",
}
"""The call of ``ztbench.loss`` each shipped candidate measures, as a user writes it."""
