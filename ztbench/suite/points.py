"""The points a suite asks for: families (grids, random samples, edges, threshold
neighbourhoods, dataset sources) and regions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ztbench.core.families import FAMILIES, get_family
from ztbench.core.schema import FIT_MODELS
from ztbench.core.textfmt import fmt_num
from ztbench.io import budget
from ztbench.io.datasets import DATASETS
from ztbench.suite.check import (
    Checker,
    child,
    type_name,
)
from ztbench.suite.model import (
    PUBLISHED_THRESHOLDS,
    RATIO_KEYS,
    REGION_VARIABLES,
    ColumnSpec,
    DatasetSource,
    FamilyPoints,
    GridSpec,
    NearThresholds,
    RandomSpec,
    Range,
    Region,
)

# --------------------------------------------------------------------------- regions


def parse_regions(
    ck: Checker, value: Any, families: Mapping[str, FamilyPoints]
) -> dict[str, Region]:
    if not isinstance(value, dict):
        raise ck.fail("regions", f"must be a table, got {type_name(value)}")
    out: dict[str, Region] = {}
    for name, spec in value.items():
        key = child("regions", name)
        if not isinstance(spec, dict):
            raise ck.fail(key, f"must be a table, got {type_name(spec)}")
        if "family" not in spec:
            raise ck.fail(child(key, "family"), "missing required key")
        raw = spec["family"]
        fkey = child(key, "family")
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
            src = ck.string(spec["source"], child(key, "source"))
            if src != "dataset":
                raise ck.fail(child(key, "source"), f"unknown source {src!r} (known: dataset)")
            if len(names) != 1:
                raise ck.fail(child(key, "source"), "a dataset region names one family")
            fam = names[0]
            dataset = families[fam].dataset if fam in families else None
            if dataset is None:
                raise ck.fail(
                    child(key, "source"), f"[families.{fam}] has no dataset to take points from"
                )
        bounds: dict[str, tuple[float, float]] = {}
        for var in variables:
            lo_key, hi_key = f"{var}_min", f"{var}_max"
            if lo_key not in spec and hi_key not in spec:
                continue
            lo = ck.number(spec[lo_key], child(key, lo_key)) if lo_key in spec else -math.inf
            hi = ck.number(spec[hi_key], child(key, hi_key)) if hi_key in spec else math.inf
            if lo > hi:
                raise ck.fail(
                    child(key, hi_key),
                    f"{var} range [{fmt_num(lo)}, {fmt_num(hi)}] is inverted",
                )
            bounds[var] = (lo, hi)
        if not bounds and dataset is None:
            raise ck.fail(key, "bounds no variable (set <var>_min or <var>_max, or source)")
        desc = ck.string(spec.get("description", ""), child(key, "description"))
        out[name] = Region(name, names[0], bounds, desc, tuple(names), dataset)
    return out


# -------------------------------------------------------------------------- families


def range_text(r: Range) -> str:
    return f"[{fmt_num(r.min)}, {fmt_num(r.max)}]"


def range_bounds(ck: Checker, t: dict[str, Any], key: str, *, num: bool) -> Range:
    lo = ck.number(t["min"], child(key, "min"))
    hi = ck.number(t["max"], child(key, "max"))
    n = ck.integer(t["num"], child(key, "num")) if num else None
    r = Range(lo, hi, n)
    if lo > hi:
        raise ck.fail(key, f"range {range_text(r)} is inverted")
    if n is not None and n < 1:
        raise ck.fail(key, f"range {range_text(r)} is empty (num = {n})")
    check_budget(ck, child(key, "num"), n or 0)
    return r


def check_budget(ck: Checker, key: str, count: int) -> None:
    problem = budget.excess(count)
    if problem is not None:
        raise ck.fail(key, problem)


def _check_domain(ck: Checker, key: str, family: str, col: str, values: Iterable[float]):
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
    ck: Checker, value: Any, key: str, family: str, col: str, *, grid: bool
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
        raise ck.fail(key, f"must be {what}, got {type_name(value)}")
    allowed = ("min", "max", "num") if grid else ("min", "max")
    ck.table(value, key, allowed, allowed)
    r = range_bounds(ck, value, key, num=grid)
    if ratio:
        if r.min <= 0:
            raise ck.fail(key, f"range {range_text(r)} must be positive")
        return r
    lo, hi = get_family(family).domain[col]
    if col == "k":
        lo = 1.0
        if r.min != math.floor(r.min) or r.max != math.floor(r.max):
            raise ck.fail(key, f"range {range_text(r)}: k bounds must be integers")
    if r.min < lo or r.max > hi:
        raise ck.fail(
            key,
            f"range {range_text(r)} is outside the domain [{fmt_num(lo)}, {fmt_num(hi)}] "
            f"of {family}.{col}",
        )
    return r


def _column_keys(family: str) -> tuple[str, ...]:
    return (*get_family(family).columns, *RATIO_KEYS[family])


def _block_columns(
    ck: Checker, t: dict[str, Any], key: str, family: str, *, grid: bool
) -> dict[str, ColumnSpec]:
    fam = get_family(family)
    cols: dict[str, ColumnSpec] = {}
    for col in fam.columns:
        alts = [col] + [r for r, c in RATIO_KEYS[family].items() if c == col]
        given = [a for a in alts if a in t]
        if not given:
            raise ck.fail(child(key, col), "missing required key")
        if len(given) > 1:
            raise ck.fail(child(key, given[1]), f"give either {given[0]} or {given[1]}")
        cols[given[0]] = _column_spec(
            ck, t[given[0]], child(key, given[0]), family, given[0], grid=grid
        )
    return cols


def _blocks(ck: Checker, value: Any, key: str) -> list[tuple[str, Any]]:
    """(key, block) of each block at ``key``: a table -> [(key, table)]; an array of
    tables -> [(key[i], table), ...]. Anything else, or an empty array, fails."""
    if not isinstance(value, list | dict) or value == []:
        raise ck.fail(key, "must be a table or an array of tables")
    if isinstance(value, list):
        return [(child(key, i), b) for i, b in enumerate(value)]
    return [(key, value)]


def parse_families(ck: Checker, value: Any, seed: int = 0) -> dict[str, FamilyPoints]:
    t = ck.table(value, "families", tuple(FAMILIES))
    if not t:
        raise ck.fail("families", "is empty (give at least one family's points)")
    out: dict[str, FamilyPoints] = {}
    for family, spec in t.items():
        fkey = child("families", family)
        st = ck.table(spec, fkey, ("grid", "random", "edges", "near_thresholds", "dataset"))
        if not st:
            raise ck.fail(
                fkey, "gives no points (set grid, random, edges, near_thresholds or dataset)"
            )
        grids: list[GridSpec] = []
        randoms: list[RandomSpec] = []
        allowed = _column_keys(family)
        if "grid" in st:
            for key, b in _blocks(ck, st["grid"], child(fkey, "grid")):
                bt = ck.table(b, key, allowed)
                grids.append(GridSpec(_block_columns(ck, bt, key, family, grid=True)))
                check_budget(ck, key, budget.grid_points(budget.axis_sizes(grids[-1])))
        if "random" in st:
            for key, b in _blocks(ck, st["random"], child(fkey, "random")):
                bt = ck.table(b, key, ("n", *allowed), ("n",))
                n = ck.integer(bt["n"], child(key, "n"), lo=1)
                check_budget(ck, child(key, "n"), n)
                cols = {k: v for k, v in bt.items() if k != "n"}
                spec_cols = _block_columns(ck, cols, key, family, grid=False)
                randoms.append(RandomSpec(n, spec_cols))  # type: ignore[arg-type]
        edges = _edges(ck, st["edges"], child(fkey, "edges"), family) if "edges" in st else ()
        near = None
        if "near_thresholds" in st:
            near = _near(ck, st["near_thresholds"], child(fkey, "near_thresholds"), family)
        dataset = None
        if "dataset" in st:
            dataset = _dataset(ck, st["dataset"], child(fkey, "dataset"), family, seed)
        out[family] = FamilyPoints(family, tuple(grids), tuple(randoms), edges, near, dataset)
    return out


def _edges(ck: Checker, value: Any, key: str, family: str) -> tuple[tuple[float, ...], ...]:
    cols = get_family(family).columns
    rows = ck.list_of(value, key)
    out: list[tuple[float, ...]] = []
    for i, row in enumerate(rows):
        rkey = child(key, i)
        if isinstance(row, dict):
            ck.table(row, rkey, cols, cols)
            vals = tuple(ck.number(row[c], child(rkey, c)) for c in cols)
        elif isinstance(row, list):
            if len(row) != len(cols):
                raise ck.fail(
                    rkey, f"has {len(row)} values, expected {len(cols)} ({', '.join(cols)})"
                )
            vals = tuple(ck.number(v, child(rkey, j)) for j, v in enumerate(row))
        else:
            raise ck.fail(rkey, f"must be a list ({', '.join(cols)}) or a table")
        for c, v in zip(cols, vals, strict=True):
            _check_domain(ck, rkey, family, c, (v,))
        out.append(vals)
    return tuple(out)


def _near(ck: Checker, value: Any, key: str, family: str) -> NearThresholds:
    extra = ("sum_mu", "product_mu", "pair_mu", "w_theta") if family == "ztnb" else ()
    t = ck.table(value, key, ("k", "at", "ulps", "decade", *extra), ("k",))
    ks = ck.numbers(t["k"], child(key, "k"))
    _check_domain(ck, child(key, "k"), family, "k", ks)
    at = PUBLISHED_THRESHOLDS[family]
    if "at" in t:
        at = ck.numbers(t["at"], child(key, "at"))
        for v in at:
            if v <= 0:
                raise ck.fail(child(key, "at"), f"threshold {fmt_num(v)} must be positive")
    ulps = ck.integer(t.get("ulps", 2), child(key, "ulps"))
    decade = ck.integer(t.get("decade", 9), child(key, "decade"))
    check_budget(ck, child(key, "ulps"), ulps)
    check_budget(ck, child(key, "decade"), decade)
    lists: dict[str, tuple[float, ...]] = {}
    for name in extra:
        if name in t:
            lists[name] = ck.numbers(t[name], child(key, name))
    for v in lists.get("sum_mu", ()):
        if not 0 < v < min(at):
            raise ck.fail(
                child(key, "sum_mu"),
                f"mu = {fmt_num(v)} must be in (0, t) for every t in at (theta = t - mu > 0)",
            )
    for name in ("product_mu", "pair_mu"):
        for v in lists.get(name, ()):
            if v <= 1:
                raise ck.fail(child(key, name), f"mu = {fmt_num(v)} must be > 1")
    for v in lists.get("w_theta", ()):
        if v <= 0:
            raise ck.fail(child(key, "w_theta"), f"theta = {fmt_num(v)} must be positive")
    if family == "ztnb" and not lists:
        raise ck.fail(key, "gives no curve (set sum_mu, product_mu, pair_mu or w_theta)")
    return NearThresholds(k=ks, at=at, ulps=ulps, decade=decade, **lists)


def _dataset(ck: Checker, value: Any, key: str, family: str, seed: int) -> DatasetSource:
    t = ck.table(value, key, ("name", "family", "model", "n"), ("name", "n"))
    name = ck.string(t["name"], child(key, "name"))
    if name not in DATASETS:
        raise ck.fail(
            child(key, "name"), f"unknown dataset {name!r} (known: {', '.join(DATASETS)})"
        )
    if "family" in t and ck.string(t["family"], child(key, "family")) != family:
        raise ck.fail(child(key, "family"), f"must be {family!r} (the table's family) if given")
    model = ck.string(t.get("model", "per-gene"), child(key, "model"))
    if model not in FIT_MODELS:
        known = ", ".join(FIT_MODELS)
        raise ck.fail(child(key, "model"), f"unknown model {model!r} (known: {known})")
    n = ck.integer(t["n"], child(key, "n"), lo=1)
    return DatasetSource(name=name, family=family, model=model, n=n, seed=seed)
