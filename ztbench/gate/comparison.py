"""Comparing a run's summary rows with a baseline, row by row and metric by metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ztbench.core.dtypes import get_format
from ztbench.core.schema import FAMILY_NAMES, KEY_COLUMNS
from ztbench.core.tolerance import GateTolerance, Tolerance
from ztbench.gate.baseline import (
    BEST_FIELDS,
    ENV_KEYS,
    GATED_METRICS,
    STATUS_OK,
    Baseline,
    Key,
    _env_strings,
    summary_rows,
)


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
    if family not in FAMILY_NAMES:
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
    failures_grew = tol.failures_regressed(bf, nf)
    if failures_grew:
        reg.append(Change(key, "failures", float(bf), float(nf), worst))
    elif tol.failures_regressed(nf, bf):  # symmetric: fewer beyond the same slack
        imp.append(Change(key, "failures", float(bf), float(nf), worst))
    # half the format's bits wrong: the baseline's error is the CPU's last bits amplified
    broken_from = 2.0 ** (get_format(key[KEY_COLUMNS.index("dtype")]).mant_bits / 2)
    for m, best in zip(GATED_METRICS, BEST_FIELDS, strict=True):
        b, n = float(base[m]), float(now[m])
        if tol.regressed(b, n, broken_from):
            if math.isinf(n) and failures_grew:
                continue  # already reported as the failures that made it infinite
            reg.append(Change(key, m, b, n, worst))
        elif tol.improved(float(base[best]), n):
            b = float(base[best])
            if math.isinf(b) and nf < bf:
                continue  # already reported as fewer failures
            imp.append(Change(key, m, b, n, worst))
    return reg, imp


