"""The report section "Worst cases": the input with the largest value error of each main
candidate per dtype, with its input file and the ``ztbench eval`` command that reproduces
it."""

from __future__ import annotations

from ztbench.report.model import ReportModel
from ztbench.report.tables import worst_cases, worst_cases_markdown

TITLE = "## Worst cases"


def render(model: ReportModel) -> str:
    results = model.results
    cases = worst_cases(results, model.main_candidates, model.dtypes)
    if cases.empty:
        return "No worst cases (nothing was measured).\n"
    md = ["The input with the largest value error of each main candidate per dtype "
          "(eager). The input files are in `worst_cases/` (inputs already rounded to "
          "the dtype); `ztbench eval` prints the value it computes."
          + ("" if results.points_path else " Computed and exact values need "
             "points.parquet, absent here.") + "\n"]  # fmt: skip
    md.append(worst_cases_markdown(cases) + "\n")
    return "\n".join(md)
