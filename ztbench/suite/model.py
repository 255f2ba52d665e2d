"""The suite's data model: the validated suite and its parts (frozen dataclasses).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ztbench.core import rules
from ztbench.core.dtypes import FloatFormat
from ztbench.core.families import Family, get_family
from ztbench.core.tolerance import GateTolerance

SUITES_DIR = Path(__file__).resolve().parents[2] / "suites"
# Published thresholds (as the candidates' published_thresholds): near_thresholds' default.
PUBLISHED_THRESHOLDS: dict[str, tuple[float, ...]] = rules.PUBLISHED_THRESHOLDS
# The mean parameter given relative to k in point specs (ratio key -> column).
RATIO_KEYS: dict[str, dict[str, str]] = {
    "ztpoisson": {"lam_over_k": "lam"},
    "ztnb": {"mu_over_k": "mu"},
}
# Variables a region may bound (computed by ztbench.points.grids.region_variables).
REGION_VARIABLES: dict[str, tuple[str, ...]] = {
    "ztpoisson": ("k", "lam", "mean", "w", "lam_over_k"),
    "ztnb": ("k", "mu", "mean", "theta", "w", "mu_over_k", "theta_plus_mu"),
}


@dataclass(frozen=True)
class Range:
    """Closed interval [min, max]; ``num`` points (grids) or None (random sampling)."""

    min: float
    max: float
    num: int | None = None


ColumnSpec = Range | tuple[float, ...]  # a range, or explicit values


@dataclass(frozen=True)
class GridSpec:
    """Cartesian product of one spec per column (keys: columns or a ratio key)."""

    columns: Mapping[str, ColumnSpec]


@dataclass(frozen=True)
class RandomSpec:
    """``n`` log-uniform samples (keys: columns or a ratio key; every value a Range)."""

    n: int
    columns: Mapping[str, Range]


@dataclass(frozen=True)
class NearThresholds:
    """Neighbourhoods of thresholds ``at`` (see the module docstring)."""

    k: tuple[float, ...]
    at: tuple[float, ...]
    ulps: int = 2
    decade: int = 9
    sum_mu: tuple[float, ...] = ()
    product_mu: tuple[float, ...] = ()
    pair_mu: tuple[float, ...] = ()
    w_theta: tuple[float, ...] = ()


@dataclass(frozen=True)
class DatasetSource:
    """Realistic points: ``n`` (k, mu, theta) from the reference fit of a shipped dataset
    (see :func:`ztbench.points.datasets.dataset_points`); ``seed`` is the suite's."""

    name: str
    family: Family
    model: str = "per-gene"
    n: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "family", get_family(self.family))  # resolved once, here


@dataclass(frozen=True)
class FamilyPoints:
    """How to build the points of one family (see :mod:`ztbench.points.grids`)."""

    family: Family
    grids: tuple[GridSpec, ...] = ()
    randoms: tuple[RandomSpec, ...] = ()
    edges: tuple[tuple[float, ...], ...] = ()
    near_thresholds: NearThresholds | None = None
    dataset: DatasetSource | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "family", get_family(self.family))  # resolved once, here


@dataclass(frozen=True)
class Region:
    """Named region: inclusive ``(lo, hi)`` bounds on variables of ``family``; with
    ``dataset`` set, only the points of that dataset source (``source = "dataset"``)."""

    name: str
    family: Family
    bounds: Mapping[str, tuple[float, float]]
    description: str = ""
    families: tuple[Family, ...] = ()
    dataset: DatasetSource | None = None

    def __post_init__(self) -> None:
        # resolved once, here
        object.__setattr__(self, "family", get_family(self.family))
        object.__setattr__(self, "families", tuple(map(get_family, self.families)))

    def applies_to(self, family: str) -> bool:
        """True when the region bounds points of ``family``."""
        return family in (self.families or (self.family,))


def speed_goal(speed_vs_naive: float, speed: Mapping[str, Mapping[str, float]], family: str,
               dtype: str) -> float:  # fmt: skip
    """The speed goal of ``family`` in ``dtype``: ``speed[dtype][family]`` where the suite
    names it, else ``speed_vs_naive`` (:class:`Goals`; the report applies the same rule to
    goals.json)."""
    return float(speed.get(dtype, {}).get(family, speed_vs_naive))


@dataclass(frozen=True)
class Goals:
    """The shipped loss's goals: judged by the report, held by the tests.

    Accuracy: in each of ``dtypes`` (eager, the whole suite), zero failures, the value's
    max error <= ``value_ulp`` and each gradient's <= ``gradient_ulp``. Speed: on CPU,
    eager, in every dtype timed, the forward+backward element rate >= the goal times the
    family's naive candidate's in the same throughput run; the goal is
    ``speed[dtype][family]`` where given, else ``speed_vs_naive`` (:func:`speed_goal`).
    """

    candidates: tuple[str, ...]
    dtypes: tuple[str, ...]
    value_ulp: float
    gradient_ulp: float
    speed_vs_naive: float
    speed: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def speed_goal(self, family: str, dtype: str) -> float:
        """The speed goal of ``family`` in ``dtype`` (see the class docstring)."""
        return speed_goal(self.speed_vs_naive, self.speed, family, dtype)


@dataclass(frozen=True)
class Impact:
    """What the impact stage of ``ztbench bench`` refits (the suite's ``[impact]``).

    ``candidates``: patterns over the suite's candidates (None: every one); ``dtypes``:
    the fits' dtypes (None: the suite's dtypes other than float64, float32 when there are
    none); ``synthetic``: the mu x theta grid of exact ZTNB samples (None: no grid);
    ``training``: also train the masked-count model on each dataset source (the
    published package against the shipped loss, ``ztbench impact --model masked``'s
    defaults).
    """

    candidates: tuple[str, ...] | None = None
    dtypes: tuple[FloatFormat, ...] | None = None
    synthetic: tuple[int, int] | None = (9, 9)
    training: bool = True

    def fit_dtypes(self, suite_dtypes: tuple[FloatFormat, ...]) -> tuple[FloatFormat, ...]:
        """The dtypes fitted in: :attr:`dtypes`, or the rule above applied to the suite's."""
        if self.dtypes is not None:
            return self.dtypes
        return tuple(d for d in suite_dtypes if d != "float64") or (FloatFormat.float32,)


@dataclass(frozen=True)
class Suite:
    """A validated suite. Treat the mappings as read-only.

    ``sha256`` is the hex digest of the file's bytes; for a suite with a ``base``, of the
    file's bytes followed by the base suite's sha256 (so a change to either changes it).
    ``candidates`` are the resolved candidate ids in registry order; ``candidate_modes``
    maps each to the modes it runs in.
    """

    name: str
    path: Path
    sha256: str
    description: str
    seed: int
    dtypes: tuple[FloatFormat, ...]
    devices: tuple[str, ...]
    modes: tuple[str, ...]
    candidate_patterns: tuple[str, ...]
    candidate_exclude: tuple[str, ...]
    candidate_kinds: tuple[str, ...]
    candidates: tuple[str, ...]
    candidate_modes: Mapping[str, tuple[str, ...]]
    families: Mapping[str, FamilyPoints]
    thresholds: Mapping[str, tuple[float, ...]]
    regions: Mapping[str, Region]
    gate: GateTolerance
    goals: Goals | None = None
    external: Mapping[str, Any] = field(default_factory=dict)  # id -> Candidate
    impact: Impact = field(default_factory=Impact)

    def family_of(self, candidate_id: str) -> str:
        """The family of one of the suite's candidates."""
        ext = self.external.get(candidate_id)
        return ext.family if ext is not None else candidate_id.split("/", 1)[0]

    def modes_for(self, candidate_id: str) -> tuple[str, ...]:
        """Modes ``candidate_id`` runs in (empty when it is not in the suite)."""
        return self.candidate_modes.get(candidate_id, ())

    def candidates_of(self, family: str) -> tuple[str, ...]:
        """The suite's candidate ids of ``family``."""
        return tuple(c for c in self.candidates if self.family_of(c) == family)

    def impact_candidates(self, family: str) -> tuple[str, ...]:
        """The candidate ids of ``family`` that the impact stage refits (``[impact]``'s
        patterns; every one when it names none)."""
        pats = self.impact.candidates
        return tuple(c for c in self.candidates_of(family)
                     if pats is None or any(fnmatch.fnmatchcase(c, p) for p in pats))  # fmt: skip


