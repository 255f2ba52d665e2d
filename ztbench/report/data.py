"""Reading a results directory for the report: summaries, sweeps, environment, throughput.

A results directory holds what ``ztbench accuracy`` wrote (``summary.csv``,
``thresholds.csv``, ``env.json``; ``points.parquet`` unless ``--no-points``) and, when
throughput was measured, ``throughput.csv`` (and ``throughput.json``). The first three are
required: a missing or unreadable one is a :class:`~ztbench.io.errors.UserError` (one line).
``throughput.csv`` and ``points.parquet`` are optional: the report says what it left out.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from ztbench.core.families import FAMILIES
from ztbench.core.schema import (
    DTYPE_NAMES,
    GOAL_THROUGHPUT_DIR,
    OPTIONAL_COLUMNS,
    SUMMARY_COLUMNS,
    THRESHOLD_COLUMNS,
    THROUGHPUT_REPORT_COLUMNS,
)
from ztbench.io import jsonfloat
from ztbench.io.errors import UserError
from ztbench.io.pointsio import read_csv_table

REQUIRED_FILES: tuple[str, ...] = ("summary.csv", "thresholds.csv", "env.json")


@dataclass
class Results:
    """The contents of one results directory.

    Attributes:
        dir: the directory.
        summary: summary.csv (one row per family x candidate x dtype x device x mode x
            quantity x region).
        thresholds: thresholds.csv (threshold sweeps).
        env: env.json.
        goals: goals.json (the suite's goals for the shipped loss), or None when absent.
        throughput: throughput.csv, or None when absent.
        throughput_settings: the ``settings`` block of throughput.json, or None.
        goal_throughput: :data:`GOAL_THROUGHPUT_DIR`/throughput.csv, the shipped loss and
            the naive formula timed again for the speed goals (``ztbench bench``: at the
            goals' size, on both input kinds), or None when absent.
        points_path: points.parquet, or None when absent.
        bench: bench.json (each stage's wall time and peak memory, written by
            ``ztbench bench``), or None when absent or unreadable.
    """

    dir: Path
    summary: pd.DataFrame
    thresholds: pd.DataFrame
    env: dict
    goals: dict | None = None
    throughput: pd.DataFrame | None = None
    throughput_settings: dict | None = None
    goal_throughput: pd.DataFrame | None = None
    points_path: Path | None = None
    bench: dict | None = None

    def read_points(self, columns: list[str], **equal: str) -> pd.DataFrame:
        """Per-point rows whose columns equal ``equal`` (pyarrow filter); only ``columns``.

        Returns an empty frame when there is no points.parquet.
        """
        if self.points_path is None:
            return pd.DataFrame(columns=columns)
        expr = None
        for name, value in equal.items():
            term = ds.field(name) == value
            expr = term if expr is None else expr & term
        try:
            table = _dataset(self.points_path).to_table(columns=columns, filter=expr)
        except (OSError, ValueError) as exc:  # pyarrow's errors subclass these
            raise UserError(f"{self.points_path}: cannot read ({_first_line(exc)})") from None
        return table.to_pandas()


@functools.lru_cache(maxsize=4)
def _dataset(path: Path) -> ds.Dataset:
    """The opened points.parquet (opened once per report: the heatmaps read it ~100 times)."""
    return ds.dataset(path, format="parquet")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_csv(path: Path, columns: tuple[str, ...], allow_empty: bool = False) -> pd.DataFrame:
    """A CSV file ztbench wrote: strict (see :func:`ztbench.io.pointsio.read_csv_table`); a
    file cut short (no final newline) or, unless ``allow_empty``, with no rows is refused.
    Optional columns an older file lacks read as NaN."""
    required = [c for c in columns if c not in OPTIONAL_COLUMNS]
    df = read_csv_table(path, required, infer_types=True, complete=True,
                        allow_empty=allow_empty)  # fmt: skip
    for c in columns:
        if c not in df.columns:
            df[c] = np.nan
    return df


def _read_json(path: Path) -> object:
    try:
        return jsonfloat.loads(path.read_bytes())
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or _first_line(exc)})") from None
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None


_KEY_TEXT = ("family", "candidate", "dtype", "device", "mode", "quantity")
# Text (or boolean) columns; every other column of summary.csv and thresholds.csv is numeric.
_OTHER_TEXT = ("region", "status", "kind", "form", "variable", "best", "published",
               "harmless_half_ulp", "harmless_one_ulp")  # fmt: skip
_COUNTS = ("n", "failures", "out_of_range", "uncertified", "switched")


def _check_rows(df: pd.DataFrame, path: Path) -> None:
    """The values the report relies on, checked once (one line naming the file and line):
    key columns non-empty text with a known family and dtype, counts non-negative
    integers, the numeric columns empty or numbers."""

    def bad(mask: np.ndarray, col: str, what: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise UserError(f"{path}: line {i + 2}: {col} = {df[col].iloc[i]!r} {what}")

    for col in _KEY_TEXT:
        if col in df:
            text = df[col].astype(str)
            bad((df[col].isna() | (text.str.strip() == "")).to_numpy(), col, "is empty")
            df[col] = text
    bad(~df["family"].isin(FAMILIES).to_numpy(), "family", f"is not one of {', '.join(FAMILIES)}")
    bad(~df["dtype"].isin(DTYPE_NAMES).to_numpy(), "dtype", "is not a known dtype")
    for col in df.columns:
        if col in _KEY_TEXT or col in _OTHER_TEXT:
            continue
        num = pd.to_numeric(df[col], errors="coerce")
        bad((num.isna() & df[col].notna()).to_numpy(), col, "is not a number")
        if col in _COUNTS:
            ok = num.isna() | ((num >= 0) & (num == np.floor(num)) & (num < 2**53))
            bad(~ok.to_numpy(), col, "is not a count")
            df[col] = num
        else:
            df[col] = num.astype(np.float64)


def _check_env(env: object, path: Path) -> None:
    """env.json as the report reads it: an object; ``devices`` and ``cuda_devices`` lists
    of strings, ``packages`` an object of strings or nulls (any other value is printed as
    is)."""
    if not isinstance(env, dict):
        raise UserError(f"{path}: expected a JSON object")
    for key in ("devices", "cuda_devices"):
        v = env.get(key)
        if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise UserError(f"{path}: {key} must be a list of strings, got {v!r:.60}")
    pk = env.get("packages")
    if pk is not None and not (
        isinstance(pk, dict) and all(x is None or isinstance(x, str) for x in pk.values())
    ):
        raise UserError(f"{path}: packages must be an object of strings or nulls, got {pk!r:.60}")


def _bool_column(df: pd.DataFrame, col: str) -> None:
    if col in df and df[col].dtype != bool:
        df[col] = df[col].astype(str).str.lower().isin(["true", "1"])


GOAL_FIELDS: tuple[str, ...] = (
    "candidates", "dtypes", "value_ulp", "gradient_ulp", "speed_vs_naive",
)  # fmt: skip


def _read_goals(path: Path) -> dict | None:
    """goals.json as a dict, None when absent; UserError when it is not a goals object."""
    if not path.is_file():
        return None
    goals = _read_json(path)
    if not isinstance(goals, dict) or any(f not in goals for f in GOAL_FIELDS):
        raise UserError(f"{path}: expected an object with {', '.join(GOAL_FIELDS)}")
    return goals


def load_results(directory: Path | str) -> Results:
    """Read a results directory; UserError (one line) when a required file is missing/bad."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"{d}: no such results directory (run `ztbench accuracy SUITE -o {d}`)")
    for name in REQUIRED_FILES:
        if not (d / name).is_file():
            raise UserError(
                f"{d / name}: missing (a results directory needs {', '.join(REQUIRED_FILES)}; "
                f"run `ztbench accuracy SUITE -o {d}`)"
            )
    summary = _read_csv(d / "summary.csv", SUMMARY_COLUMNS)
    thresholds = _read_csv(d / "thresholds.csv", THRESHOLD_COLUMNS, allow_empty=True)
    _check_rows(summary, d / "summary.csv")
    _check_rows(thresholds, d / "thresholds.csv")
    _bool_column(thresholds, "best")
    _bool_column(thresholds, "published")
    for col in ("harmless_half_ulp", "harmless_one_ulp"):
        if col in thresholds:
            _bool_column(thresholds, col)
    if "region" in thresholds:  # sweeps before the rule-cost columns had one region
        thresholds["region"] = thresholds["region"].astype(object).fillna("all")
    summary["status"] = summary["status"].fillna("").astype(str)
    env = _read_json(d / "env.json")
    _check_env(env, d / "env.json")
    results = Results(d, summary, thresholds, env, _read_goals(d / "goals.json"))
    if (d / "throughput.csv").is_file():
        results.throughput = _read_throughput(d / "throughput.csv")
        try:
            doc = jsonfloat.loads((d / "throughput.json").read_bytes())
            results.throughput_settings = doc.get("settings") if isinstance(doc, dict) else None
        except (OSError, ValueError):  # optional: the report says it has no settings
            results.throughput_settings = None
    if (d / GOAL_THROUGHPUT_DIR / "throughput.csv").is_file():
        results.goal_throughput = _read_throughput(d / GOAL_THROUGHPUT_DIR / "throughput.csv")
    if (d / "points.parquet").is_file():
        results.points_path = d / "points.parquet"
    results.bench = _read_bench(d / "bench.json")
    return results


def _read_throughput(path: Path) -> pd.DataFrame:
    tp = _read_csv(path, THROUGHPUT_REPORT_COLUMNS)
    if "status" not in tp:
        tp["status"] = "ok"
    tp["status"] = tp["status"].fillna("").astype(str)
    return tp


def _read_bench(path: Path) -> dict | None:
    """bench.json when it is an object whose stages each have a wall time; else None (the
    report then has no stage table: the file is informative, never required)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    stages = doc.get("stages") if isinstance(doc, dict) else None
    if not isinstance(stages, dict) or not all(
        isinstance(r, dict) and isinstance(r.get("wall_s"), int | float) for r in stages.values()
    ):
        return None
    return doc
