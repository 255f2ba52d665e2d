"""The baseline file: the gated fields, its JSON format, reading it strictly and writing
it atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ztbench.core.schema import KEY_COLUMNS, SUMMARY_COLUMNS, WORST_COLUMNS
from ztbench.io import jsonfloat
from ztbench.io.atomic import atomic_write_text
from ztbench.io.errors import UserError
from ztbench.io.jsonfloat import decode_float, encode

FORMAT_VERSION = 2
# format 1 had no *_best fields (one recording: its best is its value); it is still read
READ_FORMATS = (1, 2)
INT_FIELDS: tuple[str, ...] = ("n", "failures", "out_of_range", "uncertified")
FLOAT_FIELDS: tuple[str, ...] = (
    "max_ulp",
    "p99_ulp",
    "median_ulp",
    "mean_ulp",
    "max_abs_err",
    *WORST_COLUMNS,
)
STR_FIELDS: tuple[str, ...] = ("status",)
# the float fields that are errors (never negative; the worst-input columns are inputs)
ERROR_FIELDS: tuple[str, ...] = ("max_ulp", "p99_ulp", "median_ulp", "mean_ulp", "max_abs_err")
GATED_METRICS: tuple[str, ...] = ("max_ulp", "p99_ulp")
# The lowest value of each gated metric over the recordings of an envelope: a run improves
# only when it beats every recording (a lone recording's best is its value).
BEST_FIELDS: tuple[str, ...] = tuple(f"{m}_best" for m in GATED_METRICS)
# every recorded field, in summary.csv's column order, then the envelope's best values
ROW_FIELDS: tuple[str, ...] = (
    *(c for c in SUMMARY_COLUMNS if c in (*INT_FIELDS, *FLOAT_FIELDS, *STR_FIELDS)),
    *BEST_FIELDS,
)
ENV_KEYS: tuple[str, ...] = ("torch", "device_kind")
# What a baseline records of the environment: the gated keys plus a few informative ones
# (never timestamps or host names, which would make every re-recording a diff).
BASELINE_ENV_KEYS: tuple[str, ...] = (*ENV_KEYS, "python", "numpy")
# The env key that lists the CPU capabilities an envelope was recorded under (informative:
# the rows hold the worst of them, so any of them passes).
CAPABILITIES_KEY = "cpu_capabilities"
STATUS_OK = "ok"

Key = tuple[str, ...]




@dataclass(frozen=True)
class Baseline:
    """A recorded summary: suite name and hash, environment, and rows keyed by KEY_COLUMNS.

    ``rows`` maps the key tuple to a dict with every field of :data:`ROW_FIELDS` (ints,
    floats with inf/NaN as Python floats, status string).
    """

    suite: str
    suite_sha256: str
    env: Mapping[str, str]
    rows: Mapping[Key, Mapping[str, Any]]

    @classmethod
    def from_summary(
        cls, summary: pd.DataFrame, suite: str, suite_sha256: str, env: Mapping[str, Any]
    ) -> Baseline:
        """Build a baseline from a run's summary (ValueError on a malformed summary).

        Only :data:`BASELINE_ENV_KEYS` of ``env`` are kept.
        """
        return cls(suite, suite_sha256, baseline_env(env), summary_rows(summary))


def envelope(baselines: Sequence[Baseline], capabilities: Sequence[str]) -> Baseline:
    """The worst of several recordings of one suite, field by field: a baseline that every
    one of them passes.

    The same torch gives other last bits under another CPU capability (its vector
    kernels), and a badly conditioned formulation turns those into errors that differ by
    more than the gate's tolerance. Recorded under each capability, the envelope gates a
    machine of any of them. Per row: counts and error measures take their largest value
    (NaN only where every recording has NaN), the worst-input columns come from the
    recording with the largest ``max_ulp``, and a status other than ``ok`` wins. A row
    recorded under some capabilities only is kept. ``capabilities[i]`` names the
    capability of ``baselines[i]``; the list is recorded in the env (:data:`CAPABILITIES_KEY`).
    """
    if not baselines or len(baselines) != len(capabilities):
        raise ValueError("an envelope needs one capability name per baseline, at least one")
    first = baselines[0]
    if any(b.suite != first.suite or b.suite_sha256 != first.suite_sha256 for b in baselines):
        raise ValueError("an envelope is made of recordings of one suite file")
    rows: dict[Key, dict[str, Any]] = {}
    for b in baselines:
        for key, row in b.rows.items():
            rows[key] = _worse_row(rows[key], row) if key in rows else dict(row)
    env = dict(first.env)
    env[CAPABILITIES_KEY] = ",".join(capabilities)
    return Baseline(first.suite, first.suite_sha256, _env_strings(env), dict(sorted(rows.items())))


def _worse_row(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Field by field the worse of two recordings of one row (see :func:`envelope`)."""
    out = dict(a)
    for f in INT_FIELDS:
        out[f] = max(a[f], b[f])
    for f in FLOAT_FIELDS:
        if f not in WORST_COLUMNS:
            out[f] = float(max(a[f], b[f])) if not math.isnan(a[f]) else b[f]
    for f in BEST_FIELDS:
        out[f] = float(min(a[f], b[f])) if not math.isnan(a[f]) else b[f]
    if not b["max_ulp"] <= a["max_ulp"] and not math.isnan(b["max_ulp"]):
        for f in WORST_COLUMNS:
            out[f] = b[f]
    if a["status"] == STATUS_OK:
        out["status"] = b["status"]
    return out


def baseline_env(env: Mapping[str, Any]) -> dict[str, str]:
    """The part of a run's environment a baseline records: :data:`BASELINE_ENV_KEYS`.

    A key missing at the top level is looked up in ``env["packages"]`` (package name ->
    version, as :func:`ztbench.io.environment.environment_info` reports numpy); keys found
    nowhere are left out.
    """
    packages = env.get("packages")
    out: dict[str, Any] = {}
    for k in BASELINE_ENV_KEYS:
        if env.get(k) is not None:
            out[k] = env[k]
        elif isinstance(packages, Mapping) and packages.get(k) is not None:
            out[k] = packages[k]
    return _env_strings(out)


def _env_strings(env: Mapping[str, Any]) -> dict[str, str]:
    """The environment as strings (JSON-friendly), every key kept, sorted."""
    return {str(k): str(v) for k, v in sorted(env.items())}


def _to_int(v: Any) -> int:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return 0
    return int(v)


def _to_float(v: Any) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _to_str(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def summary_rows(summary: pd.DataFrame) -> dict[Key, dict[str, Any]]:
    """Rows of a summary DataFrame keyed by KEY_COLUMNS, normalised to Python scalars.

    Missing optional columns (worst_mu for a Poisson-only suite...) become NaN / 0 / "".
    ValueError when a key column is missing or a key appears twice.
    """
    missing = [c for c in KEY_COLUMNS if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks key column(s): {', '.join(missing)}")
    out: dict[Key, dict[str, Any]] = {}
    records = summary.to_dict(orient="records")
    for rec in records:
        key = tuple(str(rec[c]) for c in KEY_COLUMNS)
        if key in out:
            raise ValueError(f"summary has the row {_key_text(key)} twice")
        row: dict[str, Any] = {}
        for f in INT_FIELDS:
            row[f] = _to_int(rec.get(f))
        for f in FLOAT_FIELDS:
            row[f] = _to_float(rec.get(f))
        for f in STR_FIELDS:
            row[f] = _to_str(rec.get(f))
        for m, best in zip(GATED_METRICS, BEST_FIELDS, strict=True):
            row[best] = row[m]
        out[key] = row
    return dict(sorted(out.items()))


def _key_text(key: Key) -> str:
    return " ".join(f"{c}={v}" for c, v in zip(KEY_COLUMNS, key, strict=True))


def baseline_to_json(baseline: Baseline) -> str:
    """Serialise a baseline (see the package docstring); ends with a newline."""
    lines = ["{"]
    lines.append(f'"env": {json.dumps(dict(sorted(baseline.env.items())), sort_keys=True)},')
    lines.append(f'"format": {FORMAT_VERSION},')
    lines.append('"rows": [')
    row_lines = []
    for key in sorted(baseline.rows):
        row = baseline.rows[key]
        obj: dict[str, Any] = dict(zip(KEY_COLUMNS, key, strict=True))
        for f in ROW_FIELDS:
            v = row[f]
            obj[f] = encode(v) if f in (*FLOAT_FIELDS, *BEST_FIELDS) else v
        row_lines.append(json.dumps(obj, allow_nan=False))
    lines.append(",\n".join(row_lines))
    lines.append("],")
    lines.append(f'"suite": {json.dumps(baseline.suite)},')
    lines.append(f'"suite_sha256": {json.dumps(baseline.suite_sha256)}')
    lines.append("}")
    return "\n".join(line for line in lines if line) + "\n"


def save_baseline(baseline: Baseline, path: Path | str) -> None:
    """Write ``baseline`` to ``path`` atomically (parent directories created)."""
    atomic_write_text(path, baseline_to_json(baseline))


class _Malformed(Exception):
    pass


def _decode_float(v: Any, where: str) -> float:
    try:
        return decode_float(v)
    except ValueError as exc:
        raise _Malformed(f"{where} {exc}") from None


def baseline_from_json(text: str) -> Baseline:
    """Parse and validate a baseline file's text; ValueError (one line) when malformed."""
    data = jsonfloat.loads(text)
    try:
        return _validate(data)
    except _Malformed as exc:
        raise ValueError(str(exc)) from None


def _validate(data: Any) -> Baseline:
    if not isinstance(data, dict):
        raise _Malformed("top level must be a JSON object")
    expected = {"format", "suite", "suite_sha256", "env", "rows"}
    missing = sorted(expected - set(data))
    if missing:
        raise _Malformed(f"missing key(s): {', '.join(missing)}")
    unknown = sorted(set(data) - expected)
    if unknown:
        raise _Malformed(f"unknown key(s): {', '.join(unknown)}")
    fmt = data["format"]
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt not in READ_FORMATS:
        known = " or ".join(map(str, READ_FORMATS))
        raise _Malformed(f"format must be {known}, got {fmt!r}")
    fields = ROW_FIELDS if fmt >= 2 else tuple(f for f in ROW_FIELDS if f not in BEST_FIELDS)
    for k in ("suite", "suite_sha256"):
        if not isinstance(data[k], str) or not data[k]:
            raise _Malformed(f"{k} must be a non-empty string")
    env = data["env"]
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise _Malformed("env must be an object of strings")
    for k in ENV_KEYS:
        if k not in env:
            raise _Malformed(f"env lacks {k!r}")
    rows_in = data["rows"]
    if not isinstance(rows_in, list):
        raise _Malformed("rows must be a list")
    rows: dict[Key, dict[str, Any]] = {}
    for i, obj in enumerate(rows_in):
        where = f"rows[{i}]"
        if not isinstance(obj, dict):
            raise _Malformed(f"{where} must be an object")
        lacking = [f for f in (*KEY_COLUMNS, *fields) if f not in obj]
        if lacking:
            raise _Malformed(f"{where} lacks {', '.join(lacking)}")
        extra = sorted(set(obj) - set(KEY_COLUMNS) - set(fields))
        if extra:
            raise _Malformed(f"{where} has unknown field(s) {', '.join(extra)}")
        for c in KEY_COLUMNS:
            if not isinstance(obj[c], str) or not obj[c]:
                raise _Malformed(f"{where}.{c} must be a non-empty string")
        key = tuple(obj[c] for c in KEY_COLUMNS)
        if key in rows:
            raise _Malformed(f"{where} repeats the row {_key_text(key)}")
        row: dict[str, Any] = {}
        for f in INT_FIELDS:
            v = obj[f]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
                raise _Malformed(f"{where}.{f} must be a non-negative integer, got {v!r}")
            row[f] = v
        for f in FLOAT_FIELDS:
            row[f] = _decode_float(obj[f], f"{where}.{f}")
            if f in ERROR_FIELDS and row[f] < 0:
                raise _Malformed(f"{where}.{f} must be >= 0 (an error), got {row[f]!r}")
        for f in STR_FIELDS:
            if not isinstance(obj[f], str):
                raise _Malformed(f"{where}.{f} must be a string")
            row[f] = obj[f]
        for m, best in zip(GATED_METRICS, BEST_FIELDS, strict=True):
            row[best] = _decode_float(obj[best], f"{where}.{best}") if best in obj else row[m]
            if row[best] < 0:
                raise _Malformed(f"{where}.{best} must be >= 0 (an error), got {row[best]!r}")
        rows[key] = row
    # a baseline that can fail no run switches the gate off: refuse it
    if not rows:
        raise _Malformed("rows is empty: a baseline without rows gates nothing")
    if all(math.isnan(r[m]) for r in rows.values() for m in GATED_METRICS):
        raise _Malformed(f"every {' and '.join(GATED_METRICS)} is null: the baseline gates nothing")
    return Baseline(data["suite"], data["suite_sha256"], env, dict(sorted(rows.items())))


def load_baseline(path: Path | str, suite_name: str | None = None) -> Baseline:
    """Read and validate the baseline at ``path``.

    Raises :class:`UserError` (one line, naming the file) when the file is missing,
    unreadable or malformed, or when ``suite_name`` is given and the baseline belongs to
    another suite.
    """
    path = Path(path)
    if not path.exists():
        hint = "record one with `ztbench baseline SUITE.toml`"
        raise UserError(f"baseline {path} does not exist: {hint}")
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(f"baseline {path} is unreadable: {reason}") from None
    try:
        baseline = baseline_from_json(text)
    except ValueError as exc:
        raise UserError(f"baseline {path} is malformed: {exc}") from None
    if suite_name is not None and baseline.suite != suite_name:
        raise UserError(
            f"baseline {path} was recorded for suite {baseline.suite!r}, not {suite_name!r}"
        )
    return baseline


