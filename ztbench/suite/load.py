"""Reading a suite file: TOML, base suites, the top-level keys, candidates, thresholds,
gate tolerances and goals.
"""

from __future__ import annotations

import fnmatch
import hashlib
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ztbench.core.dtypes import get_format
from ztbench.core.schema import DEVICES, DTYPE_NAMES, FAMILY_NAMES, KINDS, MODES
from ztbench.core.textfmt import fmt_num
from ztbench.core.tolerance import GateTolerance, Tolerance
from ztbench.io import budget
from ztbench.io.errors import UserError, grid_shape, read_input_bytes
from ztbench.suite.check import (
    Checker,
    child,
    type_name,
)
from ztbench.suite.model import (
    SUITES_DIR,
    Goals,
    Impact,
    Suite,
)
from ztbench.suite.points import (
    check_budget,
    parse_families,
    parse_regions,
    range_bounds,
    range_text,
)

# ------------------------------------------------------------------- candidate info


@dataclass(frozen=True)
class _Info:
    kind: str | None
    threshold_family: bool | None


# Loads a suite's [[candidates.external]] array (value, suite file, the suite's dtypes, the
# ids already taken) into {id: candidate}; raises ValueError(key path, problem).
ExternalLoader = Callable[[Any, Path, tuple[str, ...], Iterable[str]], dict[str, Any]]


def _known_candidates(known_ids: Iterable[Any] | Mapping[str, str]) -> dict[str, _Info]:
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
    data = read_input_bytes(path)
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
    "impact",
)


def load_suite(
    path: str | Path,
    known_ids: Iterable[Any] | Mapping[str, str],
    load_external: ExternalLoader | None = None,
) -> Suite:
    """Load and validate a suite file; :class:`UserError` (one line) on any problem.

    ``known_ids``: the candidates patterns are checked against: an iterable of ids (kinds
    unknown: a ``kinds`` filter is then a ValueError) or of candidate objects (``.id``,
    ``.kind``, ``.threshold``), or a mapping id -> kind. Ids keep the given order.
    ``load_external`` loads ``[[candidates.external]]`` (a suite that declares some is an
    error without it). :func:`ztbench.candidates.load_suite` passes the registry and the
    loader of external candidates.
    """
    return _load(Path(path), _known_candidates(known_ids), (), load_external)


def _load(
    path: Path, known: dict[str, _Info], stack: tuple[Path, ...], loader: ExternalLoader | None
) -> Suite:
    data, raw = _read(path)
    ck = Checker(str(path))
    ck.table(raw, "", TOP_KEYS)
    digest = hashlib.sha256(data)
    base: Suite | None = None
    own_candidates = "candidates" in raw

    if "base" in raw:
        base_path = path.parent / ck.string(raw["base"], "base")
        resolved = base_path.resolve()
        if resolved in stack or resolved == path.resolve():
            raise ck.fail("base", f"{base_path} is a cycle of base suites")
        base = _load(base_path, known, (*stack, path.resolve()), loader)
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
    dtypes = tuple(map(get_format, ck.strings(raw["dtypes"], "dtypes", DTYPE_NAMES, "dtype")))
    devices = ck.strings(raw.get("devices", ["cpu"]), "devices", DEVICES, "device")
    modes = ck.strings(raw.get("modes", ["eager"]), "modes", MODES, "mode")

    families = parse_families(ck, raw["families"], seed)
    counts = {f: budget.family_points(fp, len(dtypes)) for f, fp in families.items()}
    for f, count in counts.items():
        check_budget(ck, child("families", f), count)
    check_budget(ck, "families", sum(counts.values()))
    if own_candidates or base is None:
        external = _external(ck, raw["candidates"], path, dtypes, known, loader)
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
    regions = parse_regions(ck, raw.get("regions", {}), families)
    gate = _gate(ck, raw.get("gate", {}), selected)
    goals = _goals(ck, raw["goals"], selected) if "goals" in raw else None
    impact = _impact(ck, raw["impact"], selected) if "impact" in raw else Impact()
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
        impact=impact,
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
    ck: Checker,
    value: Any,
    known: dict[str, _Info],
    modes: tuple[str, ...],
    external: tuple[str, ...] = (),
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...], dict]:
    required = () if external else ("include",)
    t = ck.table(value, "candidates", ("include", "exclude", "kinds", "modes", "external"),
                 required)  # fmt: skip
    ids = list(known)

    def patterns(name: str) -> tuple[str, ...]:
        """candidates.<name>: patterns, each matching some known candidate (() if absent)."""
        if name not in t:
            return ()
        key = f"candidates.{name}"
        pats = ck.strings(t[name], key, what="pattern")
        for pat in pats:
            if not _matches(pat, ids):
                raise ck.fail(
                    key, f"pattern {pat!r} matches no candidate (known: {', '.join(ids)})"
                )
        return pats

    include = patterns("include")
    exclude = patterns("exclude")
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
            key = child("candidates.modes", mode)
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
    ck: Checker,
    value: Any,
    path: Path,
    dtypes: tuple[str, ...],
    known: dict[str, _Info],
    loader: ExternalLoader | None,
) -> dict[str, Any]:
    """``[[candidates.external]]``: the user's own candidates, loaded and probed by
    ``loader`` (this imports the user's code)."""
    if not isinstance(value, dict) or "external" not in value:
        return {}
    if loader is None:
        raise ck.fail("candidates.external", "external candidates are not loaded here")
    try:
        return loader(value["external"], path, dtypes, known)
    except ValueError as exc:
        if len(exc.args) != 2:
            raise
        raise ck.fail(*exc.args) from None


def _thresholds(
    ck: Checker, value: Any, selected: tuple[str, ...], known: dict[str, _Info]
) -> dict[str, tuple[float, ...]]:
    t = ck.table(value, "thresholds", selected)  # keys: selected candidate ids only
    out: dict[str, tuple[float, ...]] = {}
    for cid, spec in t.items():
        key = child("thresholds", cid)
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
                        raise ck.fail(child(key, k), "missing required key")
                spacing = ck.string(st.get("spacing", "log"), child(key, "spacing"))
                if spacing not in ("log", "linear"):
                    raise ck.fail(child(key, "spacing"), "must be 'log' or 'linear'")
                r = range_bounds(ck, st, key, num=True)
                if r.min <= 0:
                    raise ck.fail(key, f"range {range_text(r)} must be positive")
                space = np.geomspace if spacing == "log" else np.linspace
                values += [float(v) for v in space(r.min, r.max, int(r.num or 1))]
            if "values" in st:
                values += list(ck.numbers(st["values"], child(key, "values")))
            if not values:
                raise ck.fail(key, "gives no threshold (set min/max/num or values)")
        for v in values:
            if v <= 0:
                raise ck.fail(key, f"threshold {fmt_num(v)} must be positive")
        out[cid] = tuple(sorted(set(values)))
    return out


def _gate(ck: Checker, value: Any, selected: tuple[str, ...]) -> GateTolerance:
    t = ck.table(value, "gate", ("max_ratio", "min_ulp", "failure_slack", "broken_ratio",
                                 "candidates"))  # fmt: skip
    default = _tolerance(ck, t, "gate", Tolerance())
    per: dict[str, Tolerance] = {}
    if "candidates" in t:
        ct = t["candidates"]
        if not isinstance(ct, dict):
            raise ck.fail("gate.candidates", f"must be a table, got {type_name(ct)}")
        for pat, spec in ct.items():
            key = child("gate.candidates", pat)
            hits = _matches(pat, selected)
            if not hits:
                raise ck.fail(key, f"pattern {pat!r} matches no selected candidate")
            st = ck.table(spec, key, ("max_ratio", "min_ulp", "failure_slack", "broken_ratio"))
            for cid in hits:
                per[cid] = _tolerance(ck, st, key, per.get(cid, default))
    return GateTolerance(default, per)


def _goals(ck: Checker, value: Any, selected: tuple[str, ...]) -> Goals:
    required = ("candidates", "dtypes", "value_ulp", "gradient_ulp", "speed_vs_naive")
    t = ck.table(value, "goals", (*required, "speed"), required=required)
    candidates = ck.strings(t["candidates"], "goals.candidates", selected, "candidate")
    dtypes = ck.strings(t["dtypes"], "goals.dtypes", DTYPE_NAMES, "dtype")
    numbers = {}
    for f in ("value_ulp", "gradient_ulp", "speed_vs_naive"):
        numbers[f] = _positive(ck, t[f], f"goals.{f}")
    speed: dict[str, dict[str, float]] = {}
    if "speed" in t:  # dtype -> a goal for every family, or a table family -> goal
        st = ck.table(t["speed"], "goals.speed", DTYPE_NAMES)
        for dtype, v in st.items():
            key = child("goals.speed", dtype)
            if isinstance(v, dict):
                ft = ck.table(v, key, FAMILY_NAMES)
                speed[dtype] = {f: _positive(ck, x, child(key, f)) for f, x in ft.items()}
            else:
                speed[dtype] = dict.fromkeys(FAMILY_NAMES, _positive(ck, v, key))
    return Goals(candidates, dtypes, **numbers, speed=speed)


def _positive(ck: Checker, value: Any, key: str) -> float:
    x = ck.number(value, key)
    if x <= 0:
        raise ck.fail(key, f"must be > 0, got {fmt_num(x)}")
    return x


def _tolerance(ck: Checker, t: dict[str, Any], key: str, base: Tolerance) -> Tolerance:
    ratio, min_ulp = base.max_ratio, base.min_ulp
    if "max_ratio" in t:
        ratio = ck.number(t["max_ratio"], child(key, "max_ratio"))
        if ratio < 1:
            raise ck.fail(child(key, "max_ratio"), f"must be >= 1, got {fmt_num(ratio)}")
    if "min_ulp" in t:
        min_ulp = ck.number(t["min_ulp"], child(key, "min_ulp"))
        if min_ulp < 0:
            raise ck.fail(child(key, "min_ulp"), f"must be >= 0, got {fmt_num(min_ulp)}")
    slack = base.failure_slack
    if "failure_slack" in t:
        slack = ck.number(t["failure_slack"], child(key, "failure_slack"))
        if slack < 0:
            raise ck.fail(child(key, "failure_slack"), f"must be >= 0, got {fmt_num(slack)}")
    broken = base.broken_ratio
    if "broken_ratio" in t:
        broken = ck.number(t["broken_ratio"], child(key, "broken_ratio"))
        if broken < 1:
            raise ck.fail(child(key, "broken_ratio"), f"must be >= 1, got {fmt_num(broken)}")
    return Tolerance(ratio, min_ulp, slack, broken)




def _impact(ck: Checker, value: Any, selected: tuple[str, ...]) -> Impact:
    t = ck.table(value, "impact", ("candidates", "dtypes", "synthetic", "training"))
    candidates = None
    if "candidates" in t:
        candidates = ck.strings(t["candidates"], "impact.candidates", what="pattern")
        for pat in candidates:
            if not _matches(pat, selected):
                raise ck.fail("impact.candidates", f"pattern {pat!r} matches no selected candidate")
    dtypes = None
    if "dtypes" in t:
        names = ck.strings(t["dtypes"], "impact.dtypes", DTYPE_NAMES, "dtype")
        dtypes = tuple(map(get_format, names))
    synthetic: tuple[int, int] | None = Impact().synthetic
    if "synthetic" in t:
        spec = t["synthetic"]
        if spec is False:
            synthetic = None
        else:
            try:
                synthetic = grid_shape(ck.string(spec, "impact.synthetic"))
            except ValueError as exc:
                raise ck.fail("impact.synthetic", f"{exc} (or false)") from None
    training = ck.boolean(t["training"], "impact.training") if "training" in t else True
    return Impact(candidates, dtypes, synthetic, training)
