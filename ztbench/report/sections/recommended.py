"""The report section "Recommended candidates": per family and dtype, the first row of the
matching leaderboard that a model can be trained with, and the rule that picks it."""

from __future__ import annotations

import math

import pandas as pd

from ztbench.report.model import ReportModel
from ztbench.report.tables import fmt, markdown_table

TITLE = "## Recommended candidates"


def render(model: ReportModel) -> str:
    recs = model.recommendations
    if recs.empty:
        return "No candidate was measured successfully, so there is no recommendation.\n"
    rows = []
    for r in recs.to_dict(orient="records"):
        grads = [c[: -len("_max_ulp")] for c in r if c.endswith("_max_ulp") and c != "grad_max_ulp"
                 and not (isinstance(r[c], float) and math.isnan(r[c]))]  # fmt: skip
        gtext = ", ".join(f"{g} {fmt(r[f'{g}_max_ulp'])}" for g in grads) or "no gradient"
        row = {"family": r["family"], "dtype": r["dtype"], "device": r["device"],
               "recommended": f"**`{r['candidate']}`**",
               "value max ulp": fmt(r["max_ulp"]) if not r["failures"]
               else f"inf ({r['failures']} fail)",
               "p99 ulp": fmt(r["p99_ulp"]), "gradient max ulp": gtext}  # fmt: skip
        if model.with_speed:
            row["fwd+bwd cost_vs_naive"] = fmt(r["cost_fb_vs_naive"], 2)
        rows.append(row)
    rule = ("Rule: among the candidates measured in eager mode that a model can be trained "
            "with (the loss form, gradients, and no failure, NaN/inf where the exact value is "
            "finite, in the value or a gradient), the lowest max ulp error of the value "
            "(compared at 1/8 ulp), then the lowest gradient max ulp, then the lowest "
            "forward+backward cost relative to naive (costs within 10% of the fastest of "
            "equal error count as equal: timing noise), then the id. It is the first such "
            "row of the matching leaderboard below.")  # fmt: skip
    return markdown_table(pd.DataFrame(rows)) + "\n\n" + rule + "\n"
