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
from ztbench.dtypes import DTYPE_NAMES
from ztbench.errors import UserError
from ztbench.families import FAMILIES
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


_KEY_TEXT = ("family", "candidate", "dtype", "device", "mode", "quantity", "region")
_COUNTS = ("n", "failures", "out_of_range", "uncertified")


def _check_rows(df: pd.DataFrame, path: Path) -> None:
    """The values the report relies on, checked once (one line naming the file and line):
    key columns non-empty text with a known family and dtype, counts non-negative
    integers, every other column either empty, a number, or (``status``, ``best``,
    ``published``) text."""

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
    if "dtype" in df:
        bad(~df["dtype"].isin(DTYPE_NAMES).to_numpy(), "dtype", "is not a known dtype")
    for col in df.columns:
        if col in _KEY_TEXT or col in ("status", "best", "published"):
            continue
        num = pd.to_numeric(df[col], errors="coerce")
        bad((num.isna() & df[col].notna()).to_numpy(), col, "is not a number")
        if col in _COUNTS:
            ok = num.isna() | ((num >= 0) & (num == np.floor(num)) & (num < 2**53))
            bad(~ok.to_numpy(), col, "is not a count")
        df[col] = num.astype(np.float64) if col not in _COUNTS else num


def _check_env(env: object, path: Path) -> None:
    """env.json as the report reads it: an object; ``devices`` and ``cuda_devices`` lists
    of strings, ``packages`` an object of strings (any other value is printed as is)."""
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
    summary["status"] = summary["status"].fillna("").astype(str)
    env = _read_json(d / "env.json")
    _check_env(env, d / "env.json")
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
