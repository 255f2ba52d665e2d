"""The report section "torch.compile against eager": the value errors of each compiled
candidate next to its eager ones."""

from __future__ import annotations

import pandas as pd

from ztbench.report.model import ReportModel
from ztbench.report.tables import RANK_MODE, fmt, markdown_table

TITLE = "## torch.compile against eager"


def render(model: ReportModel) -> str:
    s = model.results.summary
    s = s[(s["region"] == "all") & (s["quantity"] == "value") & (s["status"] == "ok")]
    comp = s[s["mode"] == "compile"]
    if comp.empty:
        return "No candidate was measured under torch.compile in this run.\n"
    eager = s[s["mode"] == RANK_MODE].set_index(["candidate", "dtype", "device"])
    rows = []
    for r in comp.to_dict(orient="records"):
        key = (r["candidate"], r["dtype"], r["device"])
        e = eager.loc[key] if key in eager.index else None
        rows.append({"candidate": f"`{r['candidate']}`", "dtype": r["dtype"],
                     "device": r["device"],
                     "eager max ulp": "—" if e is None else
                     (fmt(e["max_ulp"]) if not e["failures"] else f"inf ({e['failures']} fail)"),
                     "compile max ulp": fmt(r["max_ulp"]) if not r["failures"]
                     else f"inf ({r['failures']} fail)",
                     "eager p99": "—" if e is None else fmt(e["p99_ulp"]),
                     "compile p99": fmt(r["p99_ulp"])})  # fmt: skip
    return (
        "Value errors of the compiled candidates next to eager (compiled code is not "
        "bit-identical to eager, so it is measured as a separate target):\n\n"
        + markdown_table(pd.DataFrame(rows))
        + "\n"
    )
