"""The gate's verdict as plain text: tables of changes and of keys, the report.
"""

from __future__ import annotations

from collections.abc import Sequence

from ztbench.core.schema import KEY_COLUMNS
from ztbench.core.textfmt import format_table, gate_number, ratio
from ztbench.gate.baseline import (
    Key,
)
from ztbench.gate.comparison import (
    Change,
    GateResult,
)

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
