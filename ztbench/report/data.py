"""Reading a results directory for the report: summaries, sweeps, environment, throughput.

A results directory holds what ``ztbench accuracy`` wrote (``summary.csv``,
``thresholds.csv``, ``env.json``; ``points.parquet`` unless ``--no-points``) and, when
throughput was measured, ``throughput.csv`` (and ``throughput.json``). The first three are
required: a missing or unreadable one is a :class:`~ztbench.errors.UserError` (one line).
``throughput.csv`` and ``points.parquet`` are optional: the report says what it left out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from ztbench import jsonfloat
from ztbench.accuracy import SUMMARY_COLUMNS, THRESHOLD_COLUMNS
from ztbench.errors import UserError
from ztbench.pointsio import read_csv_table

REQUIRED_FILES: tuple[str, ...] = ("summary.csv", "thresholds.csv", "env.json")
THROUGHPUT_COLUMNS: tuple[str, ...] = (
    "family", "candidate", "dtype", "device", "mode", "pass", "size", "median_s",
    "elements_per_s", "ratio_to_naive",
)  # fmt: skip
POINT_COLUMNS: tuple[str, ...] = (
    "family", "candidate", "dtype", "device", "mode", "quantity", "k", "lam", "mu", "theta",
    "computed", "reference", "ulp_err", "abs_err", "failure",
)  # fmt: skip


@dataclass
class Results:
    """The contents of one results directory.

    Attributes:
        dir: the directory.
        summary: summary.csv (one row per family x candidate x dtype x device x mode x
            quantity x region).
        thresholds: thresholds.csv (threshold sweeps).
        env: env.json.
        throughput: throughput.csv, or None when absent.
        throughput_settings: the ``settings`` block of throughput.json, or None.
        points_path: points.parquet, or None when absent.
    """

    dir: Path
    summary: pd.DataFrame
    thresholds: pd.DataFrame
    env: dict
    throughput: pd.DataFrame | None = None
    throughput_settings: dict | None = None
    points_path: Path | None = None

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
    """A CSV file ztbench wrote: strict (see :func:`ztbench.pointsio.read_csv_table`); a
    file cut short (no final newline) or, unless ``allow_empty``, with no rows is refused."""
    return read_csv_table(path, columns, infer_types=True, complete=True,
                          allow_empty=allow_empty)  # fmt: skip


def _read_json(path: Path) -> object:
    try:
        return jsonfloat.loads(path.read_bytes())
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or _first_line(exc)})") from None
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None


def _bool_column(df: pd.DataFrame, col: str) -> None:
    if col in df and df[col].dtype != bool:
        df[col] = df[col].astype(str).str.lower().isin(["true", "1"])


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
    for df in (summary, thresholds):
        for col in ("max_ulp", "p99_ulp", "max_abs_err"):
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(np.float64)
    _bool_column(thresholds, "best")
    _bool_column(thresholds, "published")
    summary["status"] = summary["status"].fillna("").astype(str)
    env = _read_json(d / "env.json")
    if not isinstance(env, dict):
        raise UserError(f"{d / 'env.json'}: expected a JSON object")
    results = Results(d, summary, thresholds, env)
    if (d / "throughput.csv").is_file():
        tp = _read_csv(d / "throughput.csv", THROUGHPUT_COLUMNS)
        if "status" not in tp:
            tp["status"] = "ok"
        tp["status"] = tp["status"].fillna("").astype(str)
        results.throughput = tp
        try:
            doc = jsonfloat.loads((d / "throughput.json").read_bytes())
            results.throughput_settings = doc.get("settings") if isinstance(doc, dict) else None
        except (OSError, ValueError):  # optional: the report says it has no settings
            results.throughput_settings = None
    if (d / "points.parquet").is_file():
        results.points_path = d / "points.parquet"
    return results
