"""The report's "Published rules" section: what each published rule costs, in tables.

Per family, one sentence per published rule (its text from
:data:`ztbench.core.rules.PUBLISHED_RULES`) and one table: rows are rule x dtype x where
(inside the published domain, elsewhere; the whole domain when the suite does not name the
published domain), columns the points, the largest absolute error (nats), the largest ulp
error of what the rule computes and of the full NLL, the input of the largest ulp error,
each gradient's largest relative error and the failures (eager mode, from summary.csv).

Rules whose rows are the same numbers in every column are one row group; a sentence says
so, "bit for bit" only when points.parquet shows equal values on every point
(:func:`same_points`), else "the same summary numbers".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ztbench.core import rules
from ztbench.core.families import get_family
from ztbench.core.schema import DEVICES, DTYPE_NAMES, FAMILY_NAMES
from ztbench.report.data import Results
from ztbench.report.tables import (
    RANK_MODE,
    fmt,
    fmt_input,
    gradient_rows,
    inputs_text,
    markdown_table,
    ordered,
)

TITLE = "## Published rules"
WHERE: tuple[tuple[str, str], ...] = (
    (rules.PUBLISHED_DOMAIN_REGION, "published domain"),
    (rules.OUTSIDE_PUBLISHED_DOMAIN_REGION, "elsewhere"),
)
WHOLE: tuple[tuple[str, str], ...] = (("all", "whole domain"),)
WORST: tuple[str, ...] = ("k", "lam", "mu", "theta")
# the per-point columns that identify a point and the value computed there
_POINT_KEYS = ["dtype", "device", "quantity", "k", "lam", "mu", "theta"]


def domain_text(family: str) -> str:
    """``1 <= lam <= 1.00e+7`` from :data:`ztbench.core.rules.PUBLISHED_DOMAIN`."""
    return ", ".join(f"{fmt_input(lo)} <= {p} <= {fmt(hi)}"
                     for p, (lo, hi) in rules.PUBLISHED_DOMAIN[family].items())  # fmt: skip


def rule_text(candidate: str) -> str | None:
    """The plain-words sentence of a published rule's candidate (None for another one)."""
    for rule in rules.PUBLISHED_RULES:
        if rule.candidate == candidate:
            return f"**`{candidate}`** {rule.text}."
    return None


def same_points(results: Results, a: str, b: str) -> bool | None:
    """True when candidates ``a`` and ``b`` computed the same float64 bits (value and
    gradients, eager) on every point, False when they differ anywhere (or not on the same
    points), None when points.parquet cannot tell (absent, or without their points)."""
    if results.points_path is None:
        return None
    cols = [*_POINT_KEYS, "computed"]
    fa, fb = (results.read_points(cols, candidate=c, mode=RANK_MODE) for c in (a, b))
    if fa.empty or fb.empty:
        return None
    if len(fa) != len(fb):
        return False
    fa, fb = (f.sort_values(cols, kind="stable").reset_index(drop=True) for f in (fa, fb))
    if not fa[_POINT_KEYS].equals(fb[_POINT_KEYS]):
        return False
    bits = [f["computed"].to_numpy(dtype=np.float64).view(np.int64) for f in (fa, fb)]
    return bool(np.array_equal(*bits))


def _regions(value: pd.DataFrame) -> tuple[tuple[str, str], ...]:
    return WHERE if (value["region"] == rules.PUBLISHED_DOMAIN_REGION).any() else WHOLE


def rule_rows(results: Results, candidate: str) -> pd.DataFrame:
    """The numbers of one rule's table rows: per dtype x device x where, ``n``,
    ``max_abs_err``, ``max_ulp``, ``max_ulp_full``, ``worst_*``, ``failures`` and per
    gradient ``<g>_quantity``, ``<g>_max_rel_err``, ``<g>_failures`` (empty frame when it
    was not measured)."""
    s = results.summary
    cs = s[(s["candidate"] == candidate) & (s["mode"] == RANK_MODE) & (s["status"] == "ok")]
    value = cs[cs["quantity"] == "value"]
    if value.empty:
        return pd.DataFrame()
    fam = get_family(value["family"].iloc[0])
    rows = []
    for dtype in ordered(value["dtype"], DTYPE_NAMES):
        for device in ordered(value[value["dtype"] == dtype]["device"], DEVICES):
            at = cs[(cs["dtype"] == dtype) & (cs["device"] == device)]
            for region, label in _regions(value):
                v = at[(at["quantity"] == "value") & (at["region"] == region) & (at["n"] > 0)]
                if v.empty:
                    continue
                r = v.iloc[0]
                row = {"dtype": dtype, "device": device, "where": label, "n": int(r["n"]),
                       "max_abs_err": float(r["max_abs_err"]), "max_ulp": float(r["max_ulp"]),
                       "max_ulp_full": float(r["max_ulp_full"]),
                       **{f"worst_{c}": float(r[f"worst_{c}"]) for c in WORST},
                       "failures": int(r["failures"])}  # fmt: skip
                for g in fam.gradients:
                    gr = gradient_rows(at[at["region"] == region], g)
                    row[f"{g}_quantity"] = gr["quantity"].iloc[0] if not gr.empty else None
                    row[f"{g}_max_rel_err"] = (float(gr["max_rel_err"].iloc[0]) if not gr.empty
                                               else math.nan)  # fmt: skip
                    row[f"{g}_failures"] = int(gr["failures"].iloc[0]) if not gr.empty else 0
                rows.append(row)
    return pd.DataFrame(rows)


def _groups(results: Results, family: str) -> list[tuple[list[str], pd.DataFrame]]:
    """The family's measured rules, those with equal rows grouped (first one's order)."""
    groups: list[tuple[list[str], pd.DataFrame]] = []
    for rule in rules.PUBLISHED_RULES:
        if rule.family != family:
            continue
        rows = rule_rows(results, rule.candidate)
        if rows.empty:
            continue
        for members, first in groups:
            if first.equals(rows):
                members.append(rule.candidate)
                break
        else:
            groups.append(([rule.candidate], rows))
    return groups


def _grad_cell(row: dict, g: str) -> str:
    if row[f"{g}_quantity"] is None:
        return "no gradient"
    text = fmt(row[f"{g}_max_rel_err"])
    if row[f"{g}_failures"]:
        text += f" ({row[f'{g}_failures']} fail)"
    if row[f"{g}_quantity"] != g:
        text += f" (of {row[f'{g}_quantity']})"
    return text


def _table(family: str, groups: list[tuple[list[str], pd.DataFrame]], devices: int) -> str:
    grads = get_family(family).gradients
    out = []
    for members, frame in groups:
        last_dtype = None
        for i, r in enumerate(frame.to_dict(orient="records")):
            dtype = r["dtype"] if devices == 1 else f"{r['dtype']} ({r['device']})"
            out.append({"rule": ", ".join(f"`{m}`" for m in members) if i == 0 else "",
                        "dtype": dtype if dtype != last_dtype else "", "where": r["where"],
                        "points": str(r["n"]), "max error (nats)": fmt(r["max_abs_err"]),
                        "max ulp": fmt(r["max_ulp"]), "max ulp, full NLL": fmt(r["max_ulp_full"]),
                        "worst input (max ulp)": inputs_text(family, r["worst_k"], r["worst_lam"],
                                                             r["worst_mu"], r["worst_theta"]),
                        **{f"{g} max rel err": _grad_cell(r, g) for g in grads},
                        "failures": str(r["failures"])})  # fmt: skip
            last_dtype = dtype
    return markdown_table(pd.DataFrame(out))


def _same_sentence(results: Results, first: str, other: str) -> str:
    same = same_points(results, first, other)
    if same:
        return (f"`{other}` gives the same numbers as `{first}` (bit for bit on every point): "
                "the table shows them once.")
    why = ("though not the same values at every point" if same is False
           else "no points.parquet to compare their values" if results.points_path is None
           else "points.parquet holds none of their points to compare")  # fmt: skip
    return (f"`{other}` gives the same summary numbers as `{first}` ({why}): the table shows "
            "them once.")


def _sweeps_sentence(results: Results, family: str) -> str:
    swept = set(results.thresholds["candidate"]) if not results.thresholds.empty else set()
    sweeps = [sw for rule in rules.PUBLISHED_RULES if rule.family == family
              for sw in rule.sweeps if sw in swept]  # fmt: skip
    if not sweeps:
        return ""
    return ("The rules' switch variables are swept in " + ", ".join(f"`{sw}`" for sw in
            dict.fromkeys(sweeps)) + " ([threshold sweeps](#threshold-sweeps)).")  # fmt: skip


INTRO = (
    "Each published rule measured as a candidate (eager), inside the published domain (what "
    "the published model head produces) and elsewhere. *max error (nats)*: the largest "
    "absolute error of the value; *max ulp*: the largest ulp error of what the rule computes, "
    "at the *worst input*; *max ulp, full NLL*: its errors in ulp of the full NLL "
    "(-log P >= 0), the measure that suits a loss form; gradient columns: the largest "
    "relative error of each gradient; *failures*: NaN/inf where the exact value is finite."
)


def published_section(results: Results) -> str:
    """The Markdown of the Published rules section (without its title)."""
    s = results.summary
    devices = len(ordered(s["device"], DEVICES))
    parts = []
    for family in ordered(s["family"], FAMILY_NAMES):
        groups = _groups(results, family)
        if not groups:
            continue
        lines = [f"### {family}\n", f"Published domain: {domain_text(family)}.\n"]
        lines += [f"- {rule_text(m)}" for members, _ in groups for m in members]
        same = [_same_sentence(results, members[0], m) for members, _ in groups
                for m in members[1:]]  # fmt: skip
        notes = " ".join(filter(None, [*same, _sweeps_sentence(results, family)]))
        lines.append(("\n" + notes + "\n") if notes else "")
        lines.append(_table(family, groups, devices) + "\n")
        parts.append("\n".join(lines))
    if not parts:
        return "No published rule was measured.\n"
    return INTRO + "\n\n" + "\n".join(parts)


__all__ = ["TITLE", "domain_text", "published_section", "rule_rows", "rule_text",
           "same_points"]  # fmt: skip
