"""The report section "Threshold sweeps": per threshold family, the best and the published
thresholds and the smallest harmless one, with the sweep plot."""

from __future__ import annotations

import pandas as pd

from ztbench.core.rules import PUBLISHED_DOMAIN_REGION
from ztbench.report import plots
from ztbench.report.model import ReportModel
from ztbench.report.tables import figure_markdown, fmt, markdown_table, sweep_best

TITLE = "## Threshold sweeps"


def render(model: ReportModel) -> str:
    results = model.results
    t = results.thresholds
    if t.empty:
        return "This run swept no thresholds.\n"
    rows = []
    for (cand, dtype, device), g in t.groupby(["candidate", "dtype", "device"], sort=False):
        info = sweep_best(results, cand, dtype, device) or {"harmless": {}}
        g = g[g["region"] == "all"]
        best = g[g["best"]]
        pub = g[g["published"]]
        row = {"candidate": f"`{cand}`", "dtype": dtype, "device": device,
               "best t": fmt(best["t"].iloc[0]) if not best.empty else "—",
               "best max ulp": fmt(best["max_ulp"].iloc[0]) if not best.empty else "—",
               "published t": ", ".join(fmt(x) for x in pub["t"]) or "—",
               "published max ulp": ", ".join(fmt(x) for x in pub["max_ulp"]) or "—",
               "published max nats": ", ".join(fmt(x) for x in pub["max_abs_err"])
               or "—"}  # fmt: skip
        for region, label in (("all", "whole"), (PUBLISHED_DOMAIN_REGION, "published domain")):
            h = info["harmless"].get(region)
            if h is None:
                continue
            row[f"harmless t, {label} (0.5 / 1 ulp)"] = " / ".join(
                fmt(h[c]) if h[c] is not None else "none"
                for c in ("harmless_half_ulp", "harmless_one_ulp")
            )
        rows.append(row)
    fig = plots.sweep_plot(results, results.dir, "threshold-sweeps.png")
    note = (
        "Each threshold family is the shipped loss (`*/ztbench`, full NLL) with the "
        "published replacement log(e^w - 1) -> w applied past t, so that its error beyond "
        "the shipped loss's own is the rule's alone. *Harmless t*: the smallest swept t from "
        "which the rule never costs more than 0.5 (resp. 1) ulp of the full NLL; *none*: "
        "no such t in the swept range.\n\n"
    )
    return note + figure_markdown(fig) + markdown_table(pd.DataFrame(rows).fillna("—")) + "\n"
