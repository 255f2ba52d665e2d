"""Suite files (``suites/*.toml``): what to measure. Loading and strict validation.

:func:`load_suite` reads a TOML file (tomllib) and returns a frozen :class:`Suite`. It is
strict: an unknown key, an empty or inverted range, a value outside its family's domain,
a candidate pattern that matches nothing, an unknown dtype/device/mode, a missing file or
a TOML syntax error raise :class:`~ztbench.errors.UserError` with ONE line naming the
file, the key path and the problem, e.g.
``suites/x.toml: families.ztnb.grid.mu: range [1e9, 1e-30] is inverted``.

Schema (every key below; anything else is an error)::

    name = "quick"                  # optional, default: the file stem
    description = "CI gate"         # optional
    base = "default.toml"           # optional: inherit every top-level key not set here
                                    #   (except name/description) from that suite file,
                                    #   path relative to this file
    seed = 20240611                 # int >= 0, default 0: random samples and nothing else
    dtypes = ["float64", "float32"] # required: float64, float32, bfloat16, float16
    devices = ["cpu"]               # default ["cpu"]; cpu, cuda
    modes = ["eager", "compile"]    # default ["eager"]; eager, compile (torch.compile)

    [candidates]                    # required
    include = ["ztpoisson/*", "ztnb/*"]  # required: candidate ids or fnmatch globs
    exclude = ["*/r-actuar"]        # optional: ids or globs (each must match a candidate)
    kinds = ["torch"]               # optional: keep only these kinds (torch, peer)
    [candidates.modes]              # optional: restrict a mode to some candidates
    compile = ["*/naive", "*/stable"]    #   (modes not listed here: every candidate)
    [[candidates.external]]         # optional, repeatable: the user's own formulation
    id = "mylab/ztnb"               #   (schema: ztbench/candidates/external.py); every
    target = "losses.py:ztnb_nll"   #   declared one is measured, `include` is then optional
    family = "ztnb"
    form = "loss"

    [thresholds]                    # optional: threshold sweeps, candidate id -> t values
    "ztpoisson/threshold" = [5.0, 10.0, 20.0]          # explicit values, or
    "ztnb/threshold-w" = { min = 1.0, max = 50.0, num = 25, spacing = "log",
                           values = [15.0] }           # a range (+ extra values)

    [families.ztpoisson]            # the points of a family (at least one family)
    # Grids: a table, or an array of tables [[families.ztpoisson.grid]]: the cartesian
    # product of one spec per column. A column spec is a range {min, max, num} (log-spaced;
    # for k: log-spaced integers, deduplicated, so at most num) or an explicit list. The
    # mean parameter may instead be given relative to k: lam_over_k (ztpoisson) or
    # mu_over_k (ztnb), a positive range or list; the mean is then k * ratio, and points
    # that fall outside the domain are dropped.
    grid = { k = { min = 1, max = 1e7, num = 8 }, lam = { min = 1e-30, max = 1e9, num = 40 } }
    # Random samples: n points, each column log-uniform in {min, max} (k: log-uniform
    # integer); a table or an array of tables. Seeded from the suite seed and the family.
    random = { n = 1000, k = { min = 1, max = 1e7 }, lam = { min = 1e-30, max = 1e9 } }
    # Edge points: rows in column order (k, lam) / (k, mu, theta), or inline tables.
    edges = [[1, 1e-30], [1e7, 1e9], { k = 2, lam = 1.0 }]
    # Neighbourhoods of the published thresholds (each count k in the list times):
    #   ztpoisson: lam = t and `ulps` floats either side in EACH suite dtype, plus `decade`
    #     log-spaced points in [t / sqrt(10), t * sqrt(10)];
    #   ztnb: for each mu in sum_mu, theta = t - mu (the coded rule theta + mu = t); for
    #     each mu in product_mu, theta = 1 + t / (mu - 1) (the text rule (mu-1)(theta-1) =
    #     t); for each mu in pair_mu (> 1), theta on the published code's product curve
    #     (mu - 1 + 1e-8)(theta + 1e-8) = t; for each theta in w_theta, mu with
    #     w = theta log1p(mu/theta) = t; each with
    #     `ulps` floats either side (of theta, resp. mu) in each dtype, and `decade`
    #     points along the same curves with t scaled over a decade.
    [families.ztpoisson.near_thresholds]
    k = [1, 2, 10, 1000]            # required
    at = [10.0]                     # default: the published thresholds (10; ztnb: 15)
    ulps = 3                        # default 2
    decade = 9                      # default 9
    # ztnb only: sum_mu, product_mu, pair_mu, w_theta = [...] (default empty)
    # Realistic points from real counts: the (k, mu_cg, theta_g) that the certified
    # reference fit (ztbench.fit) places on a shipped dataset's nonzero counts, for the
    # genes whose fit is interior (status ok); n of them, a uniform subsample of the
    # nonzero cells seeded from the suite seed and the dataset name. model: "per-gene"
    # (default) or "size-factor"; family, if given, must be the table's family.
    dataset = { name = "mouse_brain_10k", family = "ztnb", model = "size-factor", n = 20000 }

    [regions.tiny-mu]               # optional: named regions for per-region summaries
    family = "ztnb"                 # a family, or a list of them (["ztpoisson", "ztnb"])
    mu_max = 1e-6                   # <var>_min / <var>_max, inclusive bounds, >= 1 of them
    description = "..."             # optional
    # variables: ztpoisson: k, lam, mean (= lam), w (= lam), lam_over_k;
    #            ztnb: k, mu, mean (= mu), theta, w (= theta log1p(mu/theta)), mu_over_k,
    #            theta_plus_mu; a region of several families: the variables they share
    [regions.realistic]             # or: the points of a family's dataset source (one
    family = "ztnb"                 #   family; bounds optional on top of it)
    source = "dataset"

    [goals]                         # optional: the shipped loss's goals (report, tests)
    candidates = ["ztpoisson/ztbench", "ztnb/ztbench"]   # required: ids in this suite
    dtypes = ["float64", "float32"] # required: judged in these dtypes (eager, region all)
    value_ulp = 4.0                 # required: max ulp error of the value
    gradient_ulp = 16.0             # required: max ulp error of each gradient
    speed_vs_naive = 0.8            # required: forward+backward element rate / the naive
                                    #   candidate's, CPU float32 eager, same throughput run

    [gate]                          # optional: tolerances of the regression gate
    max_ratio = 2.0                 # default 2.0 (>= 1)
    min_ulp = 1.0                   # default 1.0 (>= 0)
    [gate.candidates."ztnb/naive"]  # optional per-candidate (id or glob) overrides
    max_ratio = 10.0

Candidate patterns are checked against the candidate registry (or the ``known_ids`` the
caller passes), so a typo fails at load time, not after an hour of benchmarking.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ztbench import budget, rules
from ztbench.errors import UserError
from ztbench.families import FAMILIES, get_family
from ztbench.schema import DEVICES, DTYPE_NAMES, KINDS, MODES
from ztbench.textfmt import fmt_num
from ztbench.tolerance import GateTolerance, Tolerance

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
# Published thresholds (as the candidates' published_thresholds): near_thresholds' default.
PUBLISHED_THRESHOLDS: dict[str, tuple[float, ...]] = rules.PUBLISHED_THRESHOLDS
# The mean parameter given relative to k in point specs (ratio key -> column).
RATIO_KEYS: dict[str, dict[str, str]] = {
    "ztpoisson": {"lam_over_k": "lam"},
    "ztnb": {"mu_over_k": "mu"},
}
# Variables a region may bound (computed by ztbench.grids.region_variables).
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
    (see :func:`ztbench.fit.points.dataset_points`); ``seed`` is the suite's."""

    name: str
    family: str
    model: str = "per-gene"
    n: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class FamilyPoints:
    """How to build the points of one family (see :mod:`ztbench.grids`)."""

    family: str
    grids: tuple[GridSpec, ...] = ()
    randoms: tuple[RandomSpec, ...] = ()
    edges: tuple[tuple[float, ...], ...] = ()
    near_thresholds: NearThresholds | None = None
    dataset: DatasetSource | None = None


@dataclass(frozen=True)
class Region:
    """Named region: inclusive ``(lo, hi)`` bounds on variables of ``family``; with
    ``dataset`` set, only the points of that dataset source (``source = "dataset"``)."""

    name: str
    family: str
    bounds: Mapping[str, tuple[float, float]]
    description: str = ""
    families: tuple[str, ...] = ()
    dataset: DatasetSource | None = None

    def applies_to(self, family: str) -> bool:
        """True when the region bounds points of ``family``."""
        return family in (self.families or (self.family,))


@dataclass(frozen=True)
class Goals:
    """The shipped loss's goals: judged by the report, held by the tests.

    Accuracy: in each of ``dtypes`` (eager, the whole suite), zero failures, the value's
    max error <= ``value_ulp`` and each gradient's <= ``gradient_ulp``. Speed:
    forward+backward element rate >= ``speed_vs_naive`` times the family's naive
    candidate's, on CPU in float32, eager, in the same throughput run.
    """

    candidates: tuple[str, ...]
    dtypes: tuple[str, ...]
    value_ulp: float
    gradient_ulp: float
    speed_vs_naive: float


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
    dtypes: tuple[str, ...]
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

    def candidate(self, candidate_id: str) -> Any:
        """The candidate object of ``candidate_id``: the suite's external one, else the
        registry's (:func:`ztbench.candidates.get_candidate`)."""
        if candidate_id in self.external:
            return self.external[candidate_id]
        from ztbench.candidates import get_candidate

        return get_candidate(candidate_id)

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


# ----------------------------------------------------------------------------- helpers

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    part = key if _BARE_KEY.match(key) else f'"{key}"'
    return f"{prefix}.{part}" if prefix else part


class _Checker:
    """Validation helpers that raise one-line UserErrors naming the file and key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, problem: str) -> UserError:
        text = f"{self.file}: {key}: {problem}" if key else f"{self.file}: {problem}"
        return UserError(" ".join(text.split()))

    def table(
        self,
        value: Any,
        key: str,
        allowed: Iterable[str],
        required: Iterable[str] = (),
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {_type(value)}")
        allowed = tuple(allowed)
        for k in value:
            if k not in allowed:
                raise self.fail(_join(key, k), f"unknown key (allowed: {', '.join(allowed)})")
        for k in required:
            if k not in value:
                raise self.fail(_join(key, k), "missing required key")
        return value

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {_type(value)}")
        x = float(value)
        if not math.isfinite(x):
            raise self.fail(key, f"must be finite, got {value!r}")
        return x

    def integer(self, value: Any, key: str, lo: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {value!r}")
        if value < lo:
            raise self.fail(key, f"must be >= {lo}, got {value}")
        return int(value)

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {_type(value)}")
        return value

    def list_of(self, value: Any, key: str, *, allow_empty: bool = False) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list, got {_type(value)}")
        if not value and not allow_empty:
            raise self.fail(key, "is empty")
        return value

    def strings(
        self, value: Any, key: str, choices: Iterable[str] | None = None, what: str = "value"
    ) -> tuple[str, ...]:
        items = self.list_of(value, key)
        out: list[str] = []
        choices = tuple(choices) if choices is not None else None
        for i, v in enumerate(items):
            s = self.string(v, _join(key, i))
            if choices is not None and s not in choices:
                raise self.fail(key, f"unknown {what} {s!r} (known: {', '.join(choices)})")
            if s in out:
                raise self.fail(key, f"{what} {s!r} listed twice")
            out.append(s)
        return tuple(out)

    def numbers(self, value: Any, key: str) -> tuple[float, ...]:
        items = self.list_of(value, key)
        return tuple(self.number(v, _join(key, i)) for i, v in enumerate(items))


def _type(value: Any) -> str:
    return {
        dict: "a table",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


# ------------------------------------------------------------------- candidate info


@dataclass(frozen=True)
class _Info:
    kind: str | None
    threshold_family: bool | None


def _known_candidates(known_ids: Iterable[Any] | Mapping[str, str] | None) -> dict[str, _Info]:
    if known_ids is None:
        from ztbench.candidates import list_candidates

        known_ids = list_candidates()
    if isinstance(known_ids, Mapping):
        return {str(k): _Info(str(v), None) for k, v in known_ids.items()}
    out: dict[str, _Info] = {}
    for item in known_ids:
        if isinstance(item, str):
            out[item] = _Info(None, None)
        else:  # a Candidate (or anything with .id, .kind, .threshold)
            th = getattr(item, "threshold", None)
            out[str(item.id)] = _Info(getattr(item, "kind", None), th is not None)
    return out


def _matches(pattern: str, ids: Iterable[str]) -> list[str]:
    return [i for i in ids if fnmatch.fnmatchcase(i, pattern)]


# --------------------------------------------------------------------------- loading


def find_suite(spec: str | Path) -> Path:
    """A suite path from a path or a bare name (``quick`` -> ``suites/quick.toml``)."""
    p = Path(spec)
    if p.suffix != ".toml" and not p.exists() and "/" not in str(spec):
        return SUITES_DIR / f"{spec}.toml"
    return p


def _read(path: Path) -> tuple[bytes, dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        msg = " ".join(str(exc).split())
        raise UserError(f"{path}: TOML syntax error: {msg}") from None
    except RecursionError:
        raise UserError(f"{path}: TOML nested too deeply") from None
    return data, raw


TOP_KEYS = (
    "name",
    "description",
    "base",
    "seed",
    "dtypes",
    "devices",
    "modes",
    "candidates",
    "families",
    "thresholds",
    "regions",
    "gate",
    "goals",
)


def load_suite(
    path: str | Path, known_ids: Iterable[Any] | Mapping[str, str] | None = None
) -> Suite:
    """Load and validate a suite file; :class:`UserError` (one line) on any problem.

    ``known_ids``: the candidates patterns are checked against. None (default): the
    registry (:func:`ztbench.candidates.list_candidates`, imported lazily). Otherwise an
    iterable of ids (kinds unknown: a ``kinds`` filter is then a ValueError) or of
    candidate objects (``.id``, ``.kind``, ``.threshold``), or a mapping id -> kind.
    Ids keep the given order.
    """
    return _load(Path(path), _known_candidates(known_ids), ())


def _load(path: Path, known: dict[str, _Info], stack: tuple[Path, ...]) -> Suite:
    data, raw = _read(path)
    ck = _Checker(str(path))
    ck.table(raw, "", TOP_KEYS)
    digest = hashlib.sha256(data)
    base: Suite | None = None
    own_candidates = "candidates" in raw

    if "base" in raw:
        base_path = path.parent / ck.string(raw["base"], "base")
        resolved = base_path.resolve()
        if resolved in stack or resolved == path.resolve():
            raise ck.fail("base", f"{base_path} is a cycle of base suites")
        base = _load(base_path, known, (*stack, path.resolve()))
        _, base_raw = _read(base_path)
        base_raw = _merged_raw(base_path, base_raw)
        merged = {k: v for k, v in base_raw.items() if k not in ("name", "description")}
        merged.update({k: v for k, v in raw.items() if k != "base"})
        raw = merged
        digest.update(base.sha256.encode())

    for key in ("dtypes", "candidates", "families"):
        if key not in raw:
            raise ck.fail(key, "missing required key")
    name = ck.string(raw.get("name", path.stem), "name")
    if not name:
        raise ck.fail("name", "is empty")
    description = ck.string(raw.get("description", ""), "description")
    seed = ck.integer(raw.get("seed", 0), "seed")
    dtypes = ck.strings(raw["dtypes"], "dtypes", DTYPE_NAMES, "dtype")
    devices = ck.strings(raw.get("devices", ["cpu"]), "devices", DEVICES, "device")
    modes = ck.strings(raw.get("modes", ["eager"]), "modes", MODES, "mode")

    families = _families(ck, raw["families"], seed)
    counts = {f: budget.family_points(fp, len(dtypes)) for f, fp in families.items()}
    for f, count in counts.items():
        _check_budget(ck, _join("families", f), count)
    _check_budget(ck, "families", sum(counts.values()))
    if own_candidates or base is None:
        external = _external(ck, raw["candidates"], path, dtypes, known)
    else:  # [candidates] inherited: the base's external candidates, as the base loaded them
        external = dict(base.external)
    known = {**known, **{i: _Info(c.kind, c.threshold is not None) for i, c in external.items()}}
    cand = _candidates(ck, raw["candidates"], known, modes, tuple(external))
    selected, patterns, exclude, kinds, cand_modes = cand
    for cid in selected:
        fam = external[cid].family if cid in external else cid.split("/", 1)[0]
        if fam not in families:
            raise ck.fail("candidates", f"{cid} needs points of family {fam} (no [families.{fam}])")
    thresholds = _thresholds(ck, raw.get("thresholds", {}), selected, known)
    regions = _regions(ck, raw.get("regions", {}), families)
    gate = _gate(ck, raw.get("gate", {}), selected)
    goals = _goals(ck, raw["goals"], selected) if "goals" in raw else None
    return Suite(
        name=name,
        path=path,
        sha256=digest.hexdigest(),
        description=description,
        seed=seed,
        dtypes=dtypes,
        devices=devices,
        modes=modes,
        candidate_patterns=patterns,
        candidate_exclude=exclude,
        candidate_kinds=kinds,
        candidates=selected,
        candidate_modes=cand_modes,
        families=families,
        thresholds=thresholds,
        regions=regions,
        gate=gate,
        goals=goals,
        external=external,
    )


def _merged_raw(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """The raw table of an (already validated) suite with its own bases merged in."""
    if "base" not in raw:
        return raw
    base_path = path.parent / raw["base"]
    base_raw = _merged_raw(base_path, _read(base_path)[1])
    merged = {k: v for k, v in base_raw.items() if k not in ("name", "description")}
    merged.update({k: v for k, v in raw.items() if k != "base"})
    return merged


# ------------------------------------------------------------------------ candidates


def _candidates(
    ck: _Checker,
    value: Any,
    known: dict[str, _Info],
    modes: tuple[str, ...],
    external: tuple[str, ...] = (),
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...], dict]:
    required = () if external else ("include",)
    t = ck.table(value, "candidates", ("include", "exclude", "kinds", "modes", "external"),
                 required)  # fmt: skip
    ids = list(known)
    listing = ", ".join(ids)
    include: tuple[str, ...] = ()
    if "include" in t:
        include = ck.strings(t["include"], "candidates.include", what="pattern")
    for pat in include:
        if not _matches(pat, ids):
            raise ck.fail(
                "candidates.include", f"pattern {pat!r} matches no candidate (known: {listing})"
            )
    exclude: tuple[str, ...] = ()
    if "exclude" in t:
        exclude = ck.strings(t["exclude"], "candidates.exclude", what="pattern")
        for pat in exclude:
            if not _matches(pat, ids):
                raise ck.fail(
                    "candidates.exclude",
                    f"pattern {pat!r} matches no candidate (known: {listing})",
                )
    kinds: tuple[str, ...] = KINDS
    if "kinds" in t:
        kinds = ck.strings(t["kinds"], "candidates.kinds", KINDS, "kind")
        missing = [i for i in ids if known[i].kind is None]
        if missing and set(kinds) != set(KINDS):
            raise ValueError("a 'kinds' filter needs candidate kinds: pass id -> kind")

    def keep(cid: str) -> bool:
        return cid in external or (
            any(fnmatch.fnmatchcase(cid, p) for p in include)
            and not any(fnmatch.fnmatchcase(cid, p) for p in exclude)
            and (known[cid].kind is None or known[cid].kind in kinds)
        )

    selected = tuple(i for i in ids if keep(i))
    if not selected:
        raise ck.fail("candidates", "selects no candidate (include minus exclude and kinds)")

    restrict: dict[str, tuple[str, ...]] = {}
    if "modes" in t:
        mt = ck.table(t["modes"], "candidates.modes", MODES)
        for mode, pats in mt.items():
            key = _join("candidates.modes", mode)
            if mode not in modes:
                raise ck.fail(key, f"mode {mode!r} is not in the suite's modes ({modes})")
            restrict[mode] = ck.strings(pats, key, what="pattern")
            for pat in restrict[mode]:
                if not _matches(pat, selected):
                    raise ck.fail(key, f"pattern {pat!r} matches no selected candidate")
    cand_modes: dict[str, tuple[str, ...]] = {}
    for cid in selected:
        ms = tuple(
            m
            for m in modes
            if m not in restrict or any(fnmatch.fnmatchcase(cid, p) for p in restrict[m])
        )
        if not ms:
            raise ck.fail("candidates.modes", f"candidate {cid} runs in no mode")
        cand_modes[cid] = ms
    return selected, include, exclude, kinds, cand_modes


def _external(
    ck: _Checker, value: Any, path: Path, dtypes: tuple[str, ...], known: dict[str, _Info]
) -> dict[str, Any]:
    """``[[candidates.external]]``: the user's own candidates, loaded and probed (this
    imports the user's code); see :mod:`ztbench.candidates.external`."""
    if not isinstance(value, dict) or "external" not in value:
        return {}
    from ztbench.candidates.external import TargetError, from_suite

    try:
        return from_suite(value["external"], path, dtypes, known)
    except TargetError as exc:
        raise ck.fail(*exc.args) from None


def _thresholds(
    ck: _Checker, value: Any, selected: tuple[str, ...], known: dict[str, _Info]
) -> dict[str, tuple[float, ...]]:
    t = ck.table(value, "thresholds", selected)  # keys: selected candidate ids only
    out: dict[str, tuple[float, ...]] = {}
    for cid, spec in t.items():
        key = _join("thresholds", cid)
        if known[cid].threshold_family is False:
            raise ck.fail(key, f"{cid} is not a threshold family (it has no threshold)")
        values: list[float] = []
        if isinstance(spec, list):
            values = list(ck.numbers(spec, key))
        else:
            st = ck.table(spec, key, ("min", "max", "num", "spacing", "values"))
            if "min" in st or "max" in st or "num" in st:
                for k in ("min", "max", "num"):
                    if k not in st:
                        raise ck.fail(_join(key, k), "missing required key")
                spacing = ck.string(st.get("spacing", "log"), _join(key, "spacing"))
                if spacing not in ("log", "linear"):
                    raise ck.fail(_join(key, "spacing"), "must be 'log' or 'linear'")
                r = _range_bounds(ck, st, key, num=True)
                if r.min <= 0:
                    raise ck.fail(key, f"range {_rtext(r)} must be positive")
                space = np.geomspace if spacing == "log" else np.linspace
                values += [float(v) for v in space(r.min, r.max, int(r.num or 1))]
            if "values" in st:
                values += list(ck.numbers(st["values"], _join(key, "values")))
            if not values:
                raise ck.fail(key, "gives no threshold (set min/max/num or values)")
        for v in values:
            if v <= 0:
                raise ck.fail(key, f"threshold {fmt_num(v)} must be positive")
        out[cid] = tuple(sorted(set(values)))
    return out


def _gate(ck: _Checker, value: Any, selected: tuple[str, ...]) -> GateTolerance:
    t = ck.table(value, "gate", ("max_ratio", "min_ulp", "candidates"))
    default = _tolerance(ck, t, "gate", Tolerance())
    per: dict[str, Tolerance] = {}
    if "candidates" in t:
        ct = t["candidates"]
        if not isinstance(ct, dict):
            raise ck.fail("gate.candidates", f"must be a table, got {_type(ct)}")
        for pat, spec in ct.items():
            key = _join("gate.candidates", pat)
            hits = _matches(pat, selected)
            if not hits:
                raise ck.fail(key, f"pattern {pat!r} matches no selected candidate")
            st = ck.table(spec, key, ("max_ratio", "min_ulp"))
            for cid in hits:
                per[cid] = _tolerance(ck, st, key, per.get(cid, default))
    return GateTolerance(default, per)


def _goals(ck: _Checker, value: Any, selected: tuple[str, ...]) -> Goals:
    fields = ("candidates", "dtypes", "value_ulp", "gradient_ulp", "speed_vs_naive")
    t = ck.table(value, "goals", fields, required=fields)
    candidates = ck.strings(t["candidates"], "goals.candidates", selected, "candidate")
    dtypes = ck.strings(t["dtypes"], "goals.dtypes", DTYPE_NAMES, "dtype")
    numbers = {}
    for f in ("value_ulp", "gradient_ulp", "speed_vs_naive"):
        numbers[f] = ck.number(t[f], f"goals.{f}")
        if numbers[f] <= 0:
            raise ck.fail(f"goals.{f}", f"must be > 0, got {fmt_num(numbers[f])}")
    return Goals(candidates, dtypes, **numbers)


def _tolerance(ck: _Checker, t: dict[str, Any], key: str, base: Tolerance) -> Tolerance:
    ratio, min_ulp = base.max_ratio, base.min_ulp
    if "max_ratio" in t:
        ratio = ck.number(t["max_ratio"], _join(key, "max_ratio"))
        if ratio < 1:
            raise ck.fail(_join(key, "max_ratio"), f"must be >= 1, got {fmt_num(ratio)}")
    if "min_ulp" in t:
        min_ulp = ck.number(t["min_ulp"], _join(key, "min_ulp"))
        if min_ulp < 0:
            raise ck.fail(_join(key, "min_ulp"), f"must be >= 0, got {fmt_num(min_ulp)}")
    return Tolerance(ratio, min_ulp)


# --------------------------------------------------------------------------- regions


def _regions(ck: _Checker, value: Any, families: Mapping[str, FamilyPoints]) -> dict[str, Region]:
    if not isinstance(value, dict):
        raise ck.fail("regions", f"must be a table, got {_type(value)}")
    out: dict[str, Region] = {}
    for name, spec in value.items():
        key = _join("regions", name)
        if not isinstance(spec, dict):
            raise ck.fail(key, f"must be a table, got {_type(spec)}")
        if "family" not in spec:
            raise ck.fail(_join(key, "family"), "missing required key")
        raw = spec["family"]
        fkey = _join(key, "family")
        names = ([ck.string(f, fkey) for f in raw] if isinstance(raw, list)
                 else [ck.string(raw, fkey)])  # fmt: skip
        if not names:
            raise ck.fail(fkey, "names no family")
        for fam in names:
            if fam not in FAMILIES:
                raise ck.fail(fkey, f"unknown family {fam!r} (known: {', '.join(FAMILIES)})")
        # variables every listed family has (e.g. `mean`: lam or mu)
        variables = tuple(v for v in REGION_VARIABLES[names[0]]
                          if all(v in REGION_VARIABLES[f] for f in names))  # fmt: skip
        allowed = (
            "family",
            "description",
            "source",
            *(f"{v}_{b}" for v in variables for b in ("min", "max")),
        )
        ck.table(spec, key, allowed)
        dataset = None
        if "source" in spec:
            src = ck.string(spec["source"], _join(key, "source"))
            if src != "dataset":
                raise ck.fail(_join(key, "source"), f"unknown source {src!r} (known: dataset)")
            if len(names) != 1:
                raise ck.fail(_join(key, "source"), "a dataset region names one family")
            fam = names[0]
            dataset = families[fam].dataset if fam in families else None
            if dataset is None:
                raise ck.fail(
                    _join(key, "source"), f"[families.{fam}] has no dataset to take points from"
                )
        bounds: dict[str, tuple[float, float]] = {}
        for var in variables:
            lo_key, hi_key = f"{var}_min", f"{var}_max"
            if lo_key not in spec and hi_key not in spec:
                continue
            lo = ck.number(spec[lo_key], _join(key, lo_key)) if lo_key in spec else -math.inf
            hi = ck.number(spec[hi_key], _join(key, hi_key)) if hi_key in spec else math.inf
            if lo > hi:
                raise ck.fail(
                    _join(key, hi_key),
                    f"{var} range [{fmt_num(lo)}, {fmt_num(hi)}] is inverted",
                )
            bounds[var] = (lo, hi)
        if not bounds and dataset is None:
            raise ck.fail(key, "bounds no variable (set <var>_min or <var>_max, or source)")
        desc = ck.string(spec.get("description", ""), _join(key, "description"))
        out[name] = Region(name, names[0], bounds, desc, tuple(names), dataset)
    return out


# -------------------------------------------------------------------------- families


def _rtext(r: Range) -> str:
    return f"[{fmt_num(r.min)}, {fmt_num(r.max)}]"


def _range_bounds(ck: _Checker, t: dict[str, Any], key: str, *, num: bool) -> Range:
    lo = ck.number(t["min"], _join(key, "min"))
    hi = ck.number(t["max"], _join(key, "max"))
    n = ck.integer(t["num"], _join(key, "num")) if num else None
    r = Range(lo, hi, n)
    if lo > hi:
        raise ck.fail(key, f"range {_rtext(r)} is inverted")
    if n is not None and n < 1:
        raise ck.fail(key, f"range {_rtext(r)} is empty (num = {n})")
    _check_budget(ck, _join(key, "num"), n or 0)
    return r


def _check_budget(ck: _Checker, key: str, count: int) -> None:
    problem = budget.excess(count)
    if problem is not None:
        raise ck.fail(key, problem)


def _check_domain(ck: _Checker, key: str, family: str, col: str, values: Iterable[float]):
    lo, hi = get_family(family).domain[col]
    if col == "k":
        lo = 1.0  # suites never ask for k = 0
    for v in values:
        if col == "k" and v != math.floor(v):
            raise ck.fail(key, f"k = {fmt_num(v)} is not an integer")
        if not lo <= v <= hi:
            raise ck.fail(
                key,
                f"{col} = {fmt_num(v)} is outside the domain [{fmt_num(lo)}, {fmt_num(hi)}] "
                f"of {family}",
            )


def _column_spec(
    ck: _Checker, value: Any, key: str, family: str, col: str, *, grid: bool
) -> ColumnSpec:
    """One column of a grid (range with num, or list) or of a random block (range)."""
    ratio = col in RATIO_KEYS[family]
    if isinstance(value, list) and grid:
        vals = ck.numbers(value, key)
        if ratio:
            if any(v <= 0 for v in vals):
                raise ck.fail(key, "ratios must be positive")
        else:
            _check_domain(ck, key, family, col, vals)
        return tuple(vals)
    if not isinstance(value, dict):
        what = "a range {min, max, num} or a list" if grid else "a range {min, max}"
        raise ck.fail(key, f"must be {what}, got {_type(value)}")
    allowed = ("min", "max", "num") if grid else ("min", "max")
    ck.table(value, key, allowed, allowed)
    r = _range_bounds(ck, value, key, num=grid)
    if ratio:
        if r.min <= 0:
            raise ck.fail(key, f"range {_rtext(r)} must be positive")
        return r
    lo, hi = get_family(family).domain[col]
    if col == "k":
        lo = 1.0
        if r.min != math.floor(r.min) or r.max != math.floor(r.max):
            raise ck.fail(key, f"range {_rtext(r)}: k bounds must be integers")
    if r.min < lo or r.max > hi:
        raise ck.fail(
            key,
            f"range {_rtext(r)} is outside the domain [{fmt_num(lo)}, {fmt_num(hi)}] "
            f"of {family}.{col}",
        )
    return r


def _column_keys(family: str) -> tuple[str, ...]:
    return (*get_family(family).columns, *RATIO_KEYS[family])


def _block_columns(
    ck: _Checker, t: dict[str, Any], key: str, family: str, *, grid: bool
) -> dict[str, ColumnSpec]:
    fam = get_family(family)
    cols: dict[str, ColumnSpec] = {}
    for col in fam.columns:
        alts = [col] + [r for r, c in RATIO_KEYS[family].items() if c == col]
        given = [a for a in alts if a in t]
        if not given:
            raise ck.fail(_join(key, col), "missing required key")
        if len(given) > 1:
            raise ck.fail(_join(key, given[1]), f"give either {given[0]} or {given[1]}")
        cols[given[0]] = _column_spec(
            ck, t[given[0]], _join(key, given[0]), family, given[0], grid=grid
        )
    return cols


def _blocks(value: Any) -> list[tuple[int | None, Any]]:
    """A table -> [(None, table)]; an array of tables -> [(i, table), ...]."""
    if isinstance(value, list):
        return list(enumerate(value))
    return [(None, value)]


def _families(ck: _Checker, value: Any, seed: int = 0) -> dict[str, FamilyPoints]:
    t = ck.table(value, "families", tuple(FAMILIES))
    if not t:
        raise ck.fail("families", "is empty (give at least one family's points)")
    out: dict[str, FamilyPoints] = {}
    for family, spec in t.items():
        fkey = _join("families", family)
        st = ck.table(spec, fkey, ("grid", "random", "edges", "near_thresholds", "dataset"))
        if not st:
            raise ck.fail(
                fkey, "gives no points (set grid, random, edges, near_thresholds or dataset)"
            )
        grids: list[GridSpec] = []
        randoms: list[RandomSpec] = []
        allowed = _column_keys(family)
        if "grid" in st:
            blocks = _blocks(st["grid"])
            if not blocks or not isinstance(st["grid"], list | dict):
                raise ck.fail(_join(fkey, "grid"), "must be a table or an array of tables")
            for i, b in blocks:
                key = _join(fkey, "grid") if i is None else _join(_join(fkey, "grid"), i)
                bt = ck.table(b, key, allowed)
                grids.append(GridSpec(_block_columns(ck, bt, key, family, grid=True)))
                _check_budget(ck, key, budget.grid_points(budget.axis_sizes(grids[-1])))
        if "random" in st:
            blocks = _blocks(st["random"])
            if not blocks or not isinstance(st["random"], list | dict):
                raise ck.fail(_join(fkey, "random"), "must be a table or an array of tables")
            for i, b in blocks:
                key = _join(fkey, "random") if i is None else _join(_join(fkey, "random"), i)
                bt = ck.table(b, key, ("n", *allowed), ("n",))
                n = ck.integer(bt["n"], _join(key, "n"), lo=1)
                _check_budget(ck, _join(key, "n"), n)
                cols = {k: v for k, v in bt.items() if k != "n"}
                spec_cols = _block_columns(ck, cols, key, family, grid=False)
                randoms.append(RandomSpec(n, spec_cols))  # type: ignore[arg-type]
        edges = _edges(ck, st["edges"], _join(fkey, "edges"), family) if "edges" in st else ()
        near = None
        if "near_thresholds" in st:
            near = _near(ck, st["near_thresholds"], _join(fkey, "near_thresholds"), family)
        dataset = None
        if "dataset" in st:
            dataset = _dataset(ck, st["dataset"], _join(fkey, "dataset"), family, seed)
        out[family] = FamilyPoints(family, tuple(grids), tuple(randoms), edges, near, dataset)
    return out


def _edges(ck: _Checker, value: Any, key: str, family: str) -> tuple[tuple[float, ...], ...]:
    cols = get_family(family).columns
    rows = ck.list_of(value, key)
    out: list[tuple[float, ...]] = []
    for i, row in enumerate(rows):
        rkey = _join(key, i)
        if isinstance(row, dict):
            ck.table(row, rkey, cols, cols)
            vals = tuple(ck.number(row[c], _join(rkey, c)) for c in cols)
        elif isinstance(row, list):
            if len(row) != len(cols):
                raise ck.fail(
                    rkey, f"has {len(row)} values, expected {len(cols)} ({', '.join(cols)})"
                )
            vals = tuple(ck.number(v, _join(rkey, j)) for j, v in enumerate(row))
        else:
            raise ck.fail(rkey, f"must be a list ({', '.join(cols)}) or a table")
        for c, v in zip(cols, vals, strict=True):
            _check_domain(ck, rkey, family, c, (v,))
        out.append(vals)
    return tuple(out)


def _near(ck: _Checker, value: Any, key: str, family: str) -> NearThresholds:
    extra = ("sum_mu", "product_mu", "pair_mu", "w_theta") if family == "ztnb" else ()
    t = ck.table(value, key, ("k", "at", "ulps", "decade", *extra), ("k",))
    ks = ck.numbers(t["k"], _join(key, "k"))
    _check_domain(ck, _join(key, "k"), family, "k", ks)
    at = PUBLISHED_THRESHOLDS[family]
    if "at" in t:
        at = ck.numbers(t["at"], _join(key, "at"))
        for v in at:
            if v <= 0:
                raise ck.fail(_join(key, "at"), f"threshold {fmt_num(v)} must be positive")
    ulps = ck.integer(t.get("ulps", 2), _join(key, "ulps"))
    decade = ck.integer(t.get("decade", 9), _join(key, "decade"))
    _check_budget(ck, _join(key, "ulps"), ulps)
    _check_budget(ck, _join(key, "decade"), decade)
    lists: dict[str, tuple[float, ...]] = {}
    for name in extra:
        if name in t:
            lists[name] = ck.numbers(t[name], _join(key, name))
    for v in lists.get("sum_mu", ()):
        if not 0 < v < min(at):
            raise ck.fail(
                _join(key, "sum_mu"),
                f"mu = {fmt_num(v)} must be in (0, t) for every t in at (theta = t - mu > 0)",
            )
    for name in ("product_mu", "pair_mu"):
        for v in lists.get(name, ()):
            if v <= 1:
                raise ck.fail(_join(key, name), f"mu = {fmt_num(v)} must be > 1")
    for v in lists.get("w_theta", ()):
        if v <= 0:
            raise ck.fail(_join(key, "w_theta"), f"theta = {fmt_num(v)} must be positive")
    if family == "ztnb" and not lists:
        raise ck.fail(key, "gives no curve (set sum_mu, product_mu, pair_mu or w_theta)")
    return NearThresholds(k=ks, at=at, ulps=ulps, decade=decade, **lists)


def _dataset(ck: _Checker, value: Any, key: str, family: str, seed: int) -> DatasetSource:
    from ztbench.datasets import DATASETS
    from ztbench.fit.data import MODELS

    t = ck.table(value, key, ("name", "family", "model", "n"), ("name", "n"))
    name = ck.string(t["name"], _join(key, "name"))
    if name not in DATASETS:
        raise ck.fail(
            _join(key, "name"), f"unknown dataset {name!r} (known: {', '.join(DATASETS)})"
        )
    if "family" in t and ck.string(t["family"], _join(key, "family")) != family:
        raise ck.fail(_join(key, "family"), f"must be {family!r} (the table's family) if given")
    model = ck.string(t.get("model", "per-gene"), _join(key, "model"))
    if model not in MODELS:
        raise ck.fail(_join(key, "model"), f"unknown model {model!r} (known: {', '.join(MODELS)})")
    n = ck.integer(t["n"], _join(key, "n"), lo=1)
    return DatasetSource(name=name, family=family, model=model, n=n, seed=seed)
