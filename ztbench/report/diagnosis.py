"""The report's "Diagnosis" section: one subsection per candidate the user named.

The candidates the user named are the external ones (env.json's ``external_candidates``)
and the published ones (ids matching :data:`NAMED`). Per candidate and dtype (eager mode):

- the headline in nats (absolute error, which stays meaningful where the exact NLL is near
  zero) beside ulp;
- a table of the suite's regions: points, max ulp, max absolute error (nats), failures, and
  the failures by kind (NaN, +inf, -inf; and a finite value where the exact one is
  infinite) where points.parquet lets them be told apart;
- its :data:`WORST_N` worst inputs by absolute error and by ulp (and a failing input),
  each with the ``ztbench eval`` command and input file that reproduce it
  (:func:`ztbench.report.tables.reproduce_command`);
- a heatmap of its value error over the published domain (log10 ulp, as the other
  heatmaps).

A candidate that computes the same bits as one listed before it on every point gets one
sentence that says so. Without points.parquet the section keeps the region tables
(summary.csv) and says what it leaves out.
"""

from __future__ import annotations

import math
from fnmatch import fnmatch

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ztbench.core import rules
from ztbench.core.schema import DEVICES, DTYPE_NAMES
from ztbench.core.textfmt import file_name
from ztbench.report import plots
from ztbench.report.data import Results
from ztbench.report.published import domain_text, rule_rows, rule_text, same_points
from ztbench.report.tables import (
    RANK_MODE,
    figure_markdown,
    fmt,
    inputs_text,
    markdown_table,
    ordered,
    own_inputs,
    reproduce_command,
    worst_cases_markdown,
)

TITLE = "## Diagnosis"
NAMED: tuple[str, ...] = ("*/published*", "*/bento-sc")
"""The published candidates' ids (beside the external candidates, which env.json lists)."""
WORST_N = 3
KINDS: tuple[str, ...] = ("NaN", "+inf", "-inf", "finite, exact inf")
"""Failure kinds: the computed value NaN, +inf or -inf where the exact one is finite (a
failure), and a finite value where the exact one (float64, as recorded) is infinite."""
_INPUTS = ("k", "lam", "mu", "theta", "log_lam", "log_mu", "log_theta")
_ERRORS = ["computed", "reference", "abs_err", "ulp_err", "failure"]

MEASURES = (
    "Absolute error in nats, |computed - exact|, is the headline here: it stays small where "
    "the exact NLL is near zero, where the ulp error (the same difference in units of the "
    "spacing of the dtype's floats at the exact value) explodes although the loss is off by "
    "a negligible amount."
)


def named_candidates(results: Results) -> list[str]:
    """The external candidates (env.json's order) then the published ones (:data:`NAMED`)
    measured in eager mode."""
    s = results.summary
    ok = s[(s["quantity"] == "value") & (s["mode"] == RANK_MODE) & (s["status"] == "ok")]
    present = list(dict.fromkeys(ok["candidate"]))
    external = [e.get("id") for e in results.env.get("external_candidates", [])]
    out = [c for c in external if c in present]
    return out + [c for c in present if c not in out and any(fnmatch(c, p) for p in NAMED)]


def failure_kinds(points: pd.DataFrame) -> dict[str, int]:
    """Counts of :data:`KINDS` among per-point value rows (``computed``, ``reference``,
    ``failure``)."""
    c = points["computed"].to_numpy(dtype=np.float64)
    fail = points["failure"].to_numpy(dtype=bool)
    exact_inf = np.isinf(points["reference"].to_numpy(dtype=np.float64))
    return {"NaN": int((fail & np.isnan(c)).sum()), "+inf": int((fail & (c == np.inf)).sum()),
            "-inf": int((fail & (c == -np.inf)).sum()),
            "finite, exact inf": int((np.isfinite(c) & exact_inf).sum())}  # fmt: skip


def region_kinds(whole: dict[str, int], failures: int) -> dict[str, str]:
    """A region's failure kinds as far as they follow from its failure count and the whole
    domain's kinds (points.parquet records no region): none where it has no failure, all
    of one kind where the whole domain has only that kind; ``—`` where they cannot be told."""
    seen = [k for k in KINDS[:3] if whole[k]]
    out = {}
    for k in KINDS[:3]:
        if not failures:
            out[k] = "0"
        elif len(seen) == 1:
            out[k] = str(failures) if k == seen[0] else "0"
        else:
            out[k] = "—"
    out[KINDS[3]] = "0" if not whole[KINDS[3]] else "—"
    return out


def _read(results: Results, cand: str, dtype: str, device: str) -> pd.DataFrame:
    names = set(pq.read_schema(results.points_path).names) if results.points_path else set()
    cols = [c for c in _INPUTS if c in names] + _ERRORS
    return results.read_points(cols, candidate=cand, dtype=dtype, device=device,
                               mode=RANK_MODE, quantity="value")  # fmt: skip


def _region_table(value: pd.DataFrame, pts: pd.DataFrame) -> str:
    """One row per region with points (summary.csv), failure kinds from ``pts``."""
    whole = failure_kinds(pts) if not pts.empty else None
    rows = []
    for r in value[value["n"] > 0].to_dict(orient="records"):
        row = {"region": f"`{r['region']}`", "points": str(int(r["n"])),
               "max ulp": fmt(r["max_ulp"]), "max abs error (nats)": fmt(r["max_abs_err"]),
               "failures": str(int(r["failures"]))}  # fmt: skip
        if whole is not None:
            exact = r["region"] == "all"
            kinds = ({k: str(v) for k, v in whole.items()} if exact
                     else region_kinds(whole, int(r["failures"])))  # fmt: skip
            row |= kinds
        rows.append(row)
    inferred = whole is not None and ((value["region"] != "all") & (value["failures"] > 0)).any()
    note = ("" if not inferred else
            "\n\nFailure kinds in a region: points.parquet records no region, so they are "
            "given where they follow from the counts (no failure there, or a single kind "
            "over the whole domain), else `—`.")  # fmt: skip
    return markdown_table(pd.DataFrame(rows)) + note + "\n"


def _worst(results: Results, family: str, cand: str, dtype: str, device: str,
           threshold: float, pts: pd.DataFrame) -> pd.DataFrame:  # fmt: skip
    """The worst inputs by nats and by ulp among the points where it returns a number,
    then its first failing input; each written for ``ztbench eval``."""
    fail = pts["failure"].to_numpy(dtype=bool)
    finite = ~fail & np.isfinite(pts["abs_err"].to_numpy()) & np.isfinite(pts["ulp_err"].to_numpy())
    labels: dict[int, list[str]] = {}
    for col, what in (("abs_err", "nats"), ("ulp_err", "ulp")):
        top = pts[finite].sort_values(col, ascending=False, kind="stable").head(WORST_N)
        for rank, i in enumerate(top.index, 1):
            labels.setdefault(int(i), []).append(f"{what} #{rank}")
    if fail.any():
        labels.setdefault(int(np.flatnonzero(fail)[0]), []).append("failure")
    rows = []
    for n, (i, by) in enumerate(labels.items(), 1):
        p = pts.loc[i].to_dict()
        cmd, path = reproduce_command(results, cand, own_inputs(family, p), dtype, device,
                                      threshold, f"{cand}-{dtype}-diagnosis-{n}")  # fmt: skip
        rows.append({"by": ", ".join(by), "input": inputs_text(family, p["k"], p["lam"],
                                                               p["mu"], p["theta"]),
                     "reference": p["reference"], "computed": p["computed"],
                     "max_ulp": p["ulp_err"], "abs_err": p["abs_err"], "command": cmd,
                     "csv": path})  # fmt: skip
    return pd.DataFrame(rows)


def _headline(value: pd.DataFrame, pts: pd.DataFrame) -> str:
    """At most a few numbers: the whole domain's error in nats (ulp beside), the published
    domain's, the failures."""

    def part(r: pd.Series, where: str) -> str:
        if r["failures"]:
            return f"NaN/inf at {int(r['failures'])} of {int(r['n'])} points {where}"
        return f"at most {fmt(r['max_abs_err'])} nats ({fmt(r['max_ulp'])} ulp) {where}"

    by = value.set_index("region")
    parts = [part(by.loc["all"], "over the suite")]
    if not pts.empty and by.loc["all", "failures"]:
        ok = pts[~pts["failure"].to_numpy(dtype=bool)]["abs_err"]
        ok = ok[np.isfinite(ok)]
        if not ok.empty:
            parts.append(f"at most {fmt(ok.max())} nats where it returns a number")
    if rules.PUBLISHED_DOMAIN_REGION in by.index and by.loc[rules.PUBLISHED_DOMAIN_REGION, "n"]:
        parts.append(part(by.loc[rules.PUBLISHED_DOMAIN_REGION], "in the published domain"))
    return "**Headline:** " + "; ".join(parts) + ".\n"


def _heatmap(results: Results, family: str, cand: str, dtypes: list[str],
             device: str) -> str:  # fmt: skip
    """The value's log10 ulp error over the published domain (ztnb: one figure per dtype
    in ``dtypes``; ztpoisson: one figure, a column per dtype, the whole lam range)."""
    domain = domain_text(family)
    if family == "ztpoisson":
        name = file_name("diagnosis", cand, "value", suffix=".png")
        fig = plots.heatmap_ztpoisson(results, results.dir, name, [cand], dtypes, device,
                                      "value")  # fmt: skip
        return figure_markdown(fig, f"`{cand}`: log10 ulp error of the value over (lam, k), "
                               f"the whole lam range (the published domain is {domain}); "
                               "white line: the published switch.")  # fmt: skip
    bounds = rules.PUBLISHED_DOMAIN[family]
    zoom = (bounds["mu"], bounds.get("theta", (0.0, math.inf)))
    out = []
    for dtype in dtypes:
        name = file_name("diagnosis", cand, "value", dtype, suffix=".png")
        fig = plots.heatmap_ztnb(results, results.dir, name, [cand], dtype, device, "value",
                                 zoom=zoom, window=f"the published domain, {domain}")  # fmt: skip
        out.append(figure_markdown(fig, f"`{cand}`, {dtype}: log10 ulp error of the value "
                                   f"over the published domain ({domain}) by band of k; "
                                   "lines: the published switch curves."))  # fmt: skip
    return "".join(out)


def _describe(results: Results, cand: str) -> str:
    ext = {e.get("id"): e for e in results.env.get("external_candidates", [])}
    if cand in ext:
        e = ext[cand]
        desc = f": {e['description']}" if e.get("description") else ""
        return (f"External candidate `{cand}`, `{e.get('target', '?')}` "
                f"({e.get('form', '?')} form){desc}.")
    return rule_text(cand) or f"`{cand}`."


def _twin(results: Results, cand: str, before: list[str]) -> str | None:
    """An earlier candidate with the same summary numbers that computed the same bits on
    every point."""
    mine = rule_rows(results, cand)
    for other in before:
        if rule_rows(results, other).equals(mine) and same_points(results, other, cand) is True:
            return other
    return None


def _candidate(results: Results, cand: str, before: list[str]) -> str:
    md = [f"### `{cand}`\n", _describe(results, cand) + "\n"]
    twin = _twin(results, cand, before)
    if twin is not None:
        md.append(f"It gives the same numbers as `{twin}` (bit for bit on every point): see "
                  f"`{twin}` above.\n")  # fmt: skip
        return "\n".join(md)
    s = results.summary
    cs = s[(s["candidate"] == cand) & (s["quantity"] == "value") & (s["mode"] == RANK_MODE)
           & (s["status"] == "ok")]  # fmt: skip
    family = cs["family"].iloc[0]
    dtypes = ordered(cs["dtype"], DTYPE_NAMES)
    devices = ordered(cs["device"], DEVICES)
    for dtype in dtypes:
        for device in ordered(cs[cs["dtype"] == dtype]["device"], DEVICES):
            value = cs[(cs["dtype"] == dtype) & (cs["device"] == device)]
            pts = _read(results, cand, dtype, device)
            md.append(f"#### {dtype}" + (f" · {device}" if len(devices) > 1 else "") + "\n")
            md.append(_headline(value, pts))
            md.append(_region_table(value, pts))
            if not pts.empty:
                thr = value["threshold"].iloc[0]
                cases = _worst(results, family, cand, dtype, device, thr, pts)
                if not cases.empty:
                    md.append(f"Worst inputs where it returns a number (by nats and by ulp, "
                              f"{WORST_N} each)" + (", and its first failing input"
                              if value["failures"].any() else "") + ":\n")  # fmt: skip
                    md.append(worst_cases_markdown(cases, labels=("by",)) + "\n")
            if family != "ztpoisson" and results.points_path is not None:
                md.append(_heatmap(results, family, cand, [dtype], device))
    if family == "ztpoisson" and results.points_path is not None:
        md.append(_heatmap(results, family, cand, dtypes, devices[0]))
    return "\n".join(md)


def diagnosis_section(results: Results) -> str:
    """The Markdown of the Diagnosis section (without its title)."""
    cands = named_candidates(results)
    if not cands:
        return ("No candidate the user named (external or published) was measured in this "
                "run.\n")  # fmt: skip
    md = [MEASURES + " One subsection per external and published candidate (eager).\n"]
    if results.points_path is None:
        md.append("No points.parquet in this directory: the failure kinds, the worst inputs "
                  "and the heatmaps are left out; the region tables come from "
                  "summary.csv.\n")  # fmt: skip
    for i, cand in enumerate(cands):
        md.append(_candidate(results, cand, cands[:i]))
    return "\n".join(md)


__all__ = ["KINDS", "NAMED", "TITLE", "WORST_N", "diagnosis_section", "failure_kinds",
           "named_candidates", "region_kinds"]  # fmt: skip
