"""The CI gate: compare a fresh accuracy summary with a committed baseline; ratchet.

Pure part (no I/O): :func:`compare` takes a :class:`Baseline`, a summary DataFrame (the
format of :func:`ztbench.accuracy.run_accuracy`'s ``result.summary``), the run's
environment and a :class:`GateTolerance`, and returns a :class:`GateResult`: regressions,
improvements, baseline rows that disappeared, rows that are new, and the environment keys
that differ. :func:`format_report` turns it into fixed-width text.

File part: :func:`load_baseline` (strict: anything missing, unreadable or malformed is a
one-line :class:`~ztbench.errors.UserError`) and :func:`save_baseline` (atomic write).

Rules. A row is identified by :data:`KEY_COLUMNS`. For a candidate with
tolerance (max_ratio r, min_ulp m), a gated metric (:data:`GATED_METRICS`: ``max_ulp``,
``p99_ulp``) regresses when ``now > r * base`` **and** ``now - base > m``; it improves
when ``base > r * now`` and ``base - now > m`` (symmetric, so an improvement is a move the
gate would have called a regression the other way). Infinities compare naturally
(``inf`` vs ``inf`` is neither), a NaN (region with no measured point) only equals a NaN.
``failures`` (non-finite results where the reference is finite) regress as soon as they
grow and improve as soon as they shrink. A row whose status goes from ``ok`` to anything
else regresses; the reverse improves. Rows whose status is not ``ok`` in both runs are
not compared. A baseline row absent from the summary fails the gate; a summary row absent
from the baseline is reported as new and does not. The environment keys that change
numerics (:data:`ENV_KEYS`: torch version, device kind) must be equal, or the gate fails
with a request to record a baseline for this environment (the rows are then not compared:
the numbers are not comparable).

Baseline file (format 1), JSON, UTF-8, diff-friendly::

    {
    "env": {"device_kind": "cpu", "torch": "2.13.0", ...},
    "format": 1,
    "rows": [
    {"family": "ztpoisson", "candidate": "ztpoisson/stable", ..., "max_ulp": 1.5, ...},
    ...
    ],
    "suite": "quick",
    "suite_sha256": "..."
    }

Top-level and ``env`` keys are sorted; ``rows`` holds one row per line, in the order of
:data:`KEY_COLUMNS` (sorted), each row's fields in the fixed order
:data:`KEY_COLUMNS` + :data:`ROW_FIELDS` (so a reviewer reads the key first). Floats are
written with Python's shortest round-trip repr, so they read back bit for bit. JSON has no
infinity or NaN: ``+inf`` and ``-inf`` are written as the strings ``"inf"`` and
``"-inf"``, NaN as ``null`` (so ``max_ulp: "inf"`` together with ``failures > 0`` is a row
where some point failed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ztbench import jsonfloat
from ztbench.atomic import atomic_write_text
from ztbench.errors import UserError
from ztbench.jsonfloat import decode_float, encode
from ztbench.schema import KEY_COLUMNS, SUMMARY_COLUMNS
from ztbench.textfmt import format_table, gate_number, ratio
from ztbench.tolerance import GateTolerance, Tolerance

FORMAT_VERSION = 1
INT_FIELDS: tuple[str, ...] = ("n", "failures", "out_of_range", "uncertified")
FLOAT_FIELDS: tuple[str, ...] = (
    "max_ulp",
    "p99_ulp",
    "median_ulp",
    "mean_ulp",
    "max_abs_err",
    "worst_k",
    "worst_lam",
    "worst_mu",
    "worst_theta",
)
STR_FIELDS: tuple[str, ...] = ("status",)
# every gated field, in summary.csv's column order
ROW_FIELDS: tuple[str, ...] = tuple(
    c for c in SUMMARY_COLUMNS if c in (*INT_FIELDS, *FLOAT_FIELDS, *STR_FIELDS)
)
GATED_METRICS: tuple[str, ...] = ("max_ulp", "p99_ulp")
ENV_KEYS: tuple[str, ...] = ("torch", "device_kind")
# What a baseline records of the environment: the gated keys plus a few informative ones
# (never timestamps or host names, which would make every re-recording a diff).
BASELINE_ENV_KEYS: tuple[str, ...] = (*ENV_KEYS, "python", "numpy")
STATUS_OK = "ok"

Key = tuple[str, ...]


# --------------------------------------------------------------------------- baseline


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


def baseline_env(env: Mapping[str, Any]) -> dict[str, str]:
    """The part of a run's environment a baseline records: :data:`BASELINE_ENV_KEYS`.

    A key missing at the top level is looked up in ``env["packages"]`` (package name ->
    version, as :func:`ztbench.environment.environment_info` reports numpy); keys found
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
        out[key] = row
    return dict(sorted(out.items()))


def _key_text(key: Key) -> str:
    return " ".join(f"{c}={v}" for c, v in zip(KEY_COLUMNS, key, strict=True))


def baseline_to_json(baseline: Baseline) -> str:
    """Serialise a baseline (format 1, see the module docstring); ends with a newline."""
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
            obj[f] = encode(v) if f in FLOAT_FIELDS else v
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
    if data["format"] != FORMAT_VERSION or isinstance(data["format"], bool):
        raise _Malformed(f"format must be {FORMAT_VERSION}, got {data['format']!r}")
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
        fields = set(KEY_COLUMNS) | set(ROW_FIELDS)
        lacking = [f for f in (*KEY_COLUMNS, *ROW_FIELDS) if f not in obj]
        if lacking:
            raise _Malformed(f"{where} lacks {', '.join(lacking)}")
        extra = sorted(set(obj) - fields)
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
        for f in STR_FIELDS:
            if not isinstance(obj[f], str):
                raise _Malformed(f"{where}.{f} must be a string")
            row[f] = obj[f]
        rows[key] = row
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


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Change:
    """One metric of one row that moved beyond the tolerance (or a status change)."""

    key: Key
    metric: str
    baseline: float | str
    now: float | str
    worst: str

    @property
    def candidate(self) -> str:
        return self.key[KEY_COLUMNS.index("candidate")]

    @property
    def ratio(self) -> float:
        """now / baseline for numeric metrics (inf when the baseline is 0), NaN otherwise."""
        if isinstance(self.baseline, str) or isinstance(self.now, str):
            return math.nan
        b, n = float(self.baseline), float(self.now)
        if math.isnan(b) or math.isnan(n) or (math.isinf(b) and math.isinf(n)):
            return math.nan
        if b == 0.0:
            return math.inf if n > 0 else math.nan
        return n / b


@dataclass(frozen=True)
class EnvMismatch:
    """An environment key that changes numerics and differs from the baseline's."""

    key: str
    baseline: str
    now: str


@dataclass(frozen=True)
class GateResult:
    """The outcome of :func:`compare`. ``passed`` iff no regression, no missing row and no
    environment mismatch; improvements and new rows never fail."""

    regressions: tuple[Change, ...]
    improvements: tuple[Change, ...]
    missing: tuple[Key, ...]
    new: tuple[Key, ...]
    env_mismatch: tuple[EnvMismatch, ...]
    suite_changed: bool
    compared: int

    @property
    def passed(self) -> bool:
        return not (self.regressions or self.missing or self.env_mismatch)

    @property
    def exit_code(self) -> int:
        """0 when the gate passes, 1 when it fails."""
        return 0 if self.passed else 1

    @property
    def regressed_candidates(self) -> tuple[str, ...]:
        """Candidate ids with a regression or a missing row, sorted, without duplicates."""
        ids = {c.candidate for c in self.regressions}
        ids |= {k[KEY_COLUMNS.index("candidate")] for k in self.missing}
        return tuple(sorted(ids))


def worst_input(family: str, row: Mapping[str, Any]) -> str:
    """The row's worst input as ``k=... lam=...`` (or ``k=... mu=... theta=...``)."""
    params = ("k", "lam") if family == "ztpoisson" else ("k", "mu", "theta")
    if family not in ("ztpoisson", "ztnb"):
        params = ("k", "lam", "mu", "theta")
    parts = []
    for p in params:
        v = row.get(f"worst_{p}", math.nan)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        parts.append(f"{p}={float(v):.6g}")
    return " ".join(parts) if parts else "-"


def compare(
    baseline: Baseline,
    summary: pd.DataFrame,
    env: Mapping[str, Any],
    tolerance: GateTolerance | Tolerance | None = None,
    suite_sha256: str | None = None,
) -> GateResult:
    """Compare a fresh ``summary`` (and its run's ``env``) with ``baseline``.

    ``tolerance`` defaults to 2x and 1 ulp for every candidate. ``suite_sha256`` (the
    fresh suite file's hash) only sets :attr:`GateResult.suite_changed`, a note: the rows
    decide. Pure: no I/O. ValueError when the summary is malformed.
    """
    if tolerance is None:
        tolerance = GateTolerance()
    elif isinstance(tolerance, Tolerance):
        tolerance = GateTolerance(tolerance)
    now_rows = summary_rows(summary)
    env_now = _env_strings(env)
    mismatch = tuple(
        EnvMismatch(k, baseline.env.get(k, "?"), env_now.get(k, "?"))
        for k in ENV_KEYS
        if baseline.env.get(k) != env_now.get(k)
    )
    suite_changed = suite_sha256 is not None and suite_sha256 != baseline.suite_sha256
    missing = tuple(k for k in baseline.rows if k not in now_rows)
    new = tuple(k for k in now_rows if k not in baseline.rows)
    if mismatch:
        return GateResult((), (), missing, new, mismatch, suite_changed, 0)

    regressions: list[Change] = []
    improvements: list[Change] = []
    compared = 0
    for key, base in baseline.rows.items():
        now = now_rows.get(key)
        if now is None:
            continue
        compared += 1
        tol = tolerance.for_candidate(key[KEY_COLUMNS.index("candidate")])
        worst = worst_input(key[0], now)
        reg, imp = _compare_row(key, base, now, tol, worst)
        regressions.extend(reg)
        improvements.extend(imp)
    return GateResult(
        tuple(regressions), tuple(improvements), missing, new, (), suite_changed, compared
    )


def _compare_row(
    key: Key, base: Mapping[str, Any], now: Mapping[str, Any], tol: Tolerance, worst: str
) -> tuple[list[Change], list[Change]]:
    reg: list[Change] = []
    imp: list[Change] = []
    b_ok, n_ok = base["status"] == STATUS_OK, now["status"] == STATUS_OK
    if b_ok and not n_ok:
        return [Change(key, "status", base["status"], now["status"], "-")], []
    if n_ok and not b_ok:
        return [], [Change(key, "status", base["status"], now["status"], worst)]
    if not (b_ok and n_ok):
        return [], []
    bf, nf = base["failures"], now["failures"]
    failures_grew = nf > bf
    if failures_grew:
        reg.append(Change(key, "failures", float(bf), float(nf), worst))
    elif nf < bf:
        imp.append(Change(key, "failures", float(bf), float(nf), worst))
    for m in GATED_METRICS:
        b, n = float(base[m]), float(now[m])
        if tol.regressed(b, n):
            if math.isinf(n) and failures_grew:
                continue  # already reported as the failures that made it infinite
            reg.append(Change(key, m, b, n, worst))
        elif tol.improved(b, n):
            if math.isinf(b) and nf < bf:
                continue  # already reported as fewer failures
            imp.append(Change(key, m, b, n, worst))
    return reg, imp


# --------------------------------------------------------------------------- formatting


CHANGE_HEADERS = (
    "candidate",
    "dtype",
    "device",
    "mode",
    "quantity",
    "region",
    "metric",
    "baseline",
    "now",
    "ratio",
    "worst input",
)


def format_changes(changes: Sequence[Change]) -> list[str]:
    """The fixed-width table of ``changes`` (regressions or improvements)."""
    ix = {c: KEY_COLUMNS.index(c) for c in KEY_COLUMNS}
    rows = [
        (
            ch.key[ix["candidate"]],
            ch.key[ix["dtype"]],
            ch.key[ix["device"]],
            ch.key[ix["mode"]],
            ch.key[ix["quantity"]],
            ch.key[ix["region"]],
            ch.metric,
            gate_number(ch.baseline),
            gate_number(ch.now),
            ratio(ch.ratio),
            ch.worst,
        )
        for ch in changes
    ]
    return format_table(CHANGE_HEADERS, rows, right=(7, 8, 9))


def format_keys(keys: Sequence[Key]) -> list[str]:
    """The fixed-width table of row keys (missing or new rows)."""
    return format_table(KEY_COLUMNS, keys)


def format_report(
    result: GateResult,
    *,
    verb: str = "check",
    env_hint: str = "",
    max_new: int = 20,
    regressions_title: str = "REGRESSIONS",
    improvements_title: str = "IMPROVEMENTS",
    improvements_note: str = "never fail; ratchet them into the baseline with `ztbench baseline`",
) -> list[str]:
    """Plain-text report of ``result``: environment, regressions, missing rows,
    improvements, new rows, then a one-line verdict. Returns the lines."""
    out: list[str] = []
    if result.env_mismatch:
        diffs = ", ".join(f"{m.key} {m.baseline} -> {m.now}" for m in result.env_mismatch)
        out.append(f"ENVIRONMENT DIFFERS from the baseline's ({diffs}).")
        out.append(
            "The numbers are not comparable: record a baseline for this environment"
            + (f" ({env_hint})" if env_hint else "")
            + "."
        )
        out.append("")
    if result.suite_changed:
        out.append("note: the suite file changed since the baseline was recorded.")
        out.append("")
    if result.regressions:
        out.append(f"{regressions_title} ({len(result.regressions)})")
        out.extend(format_changes(result.regressions))
        out.append("")
    if result.missing:
        out.append(f"MISSING: {len(result.missing)} baseline row(s) are not in this run")
        out.extend(format_keys(result.missing))
        out.append("")
    if result.improvements:
        note = f": {improvements_note}" if improvements_note else ""
        out.append(f"{improvements_title} ({len(result.improvements)}){note}")
        out.extend(format_changes(result.improvements))
        out.append("")
    if result.new:
        out.append(f"NEW: {len(result.new)} row(s) not in the baseline (not gated until recorded)")
        out.extend(format_keys(result.new[:max_new]))
        if len(result.new) > max_new:
            out.append(f"... and {len(result.new) - max_new} more")
        out.append("")
    if verb == "check":
        out.append(verdict(result))
    return out


def verdict(result: GateResult) -> str:
    """One line: PASS, or FAIL with the counts and the candidates named."""
    if result.passed:
        return (
            f"PASS: {result.compared} rows compared, no regression"
            f" ({len(result.improvements)} improvement(s), {len(result.new)} new row(s))"
        )
    parts = []
    if result.env_mismatch:
        parts.append("environment differs")
    if result.regressions:
        parts.append(f"{len(result.regressions)} regression(s)")
    if result.missing:
        parts.append(f"{len(result.missing)} missing row(s)")
    names = ", ".join(result.regressed_candidates)
    return "FAIL: " + ", ".join(parts) + (f" in {names}" if names else "")
