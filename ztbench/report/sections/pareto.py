"""The report section "Accuracy against throughput": one Pareto plot per device. Needs
throughput.csv."""

from __future__ import annotations

from ztbench.core.textfmt import file_name
from ztbench.report import plots
from ztbench.report.model import ReportModel
from ztbench.report.tables import figure_markdown

TITLE = "## Accuracy against throughput"


def render(model: ReportModel) -> str:
    results = model.results
    if results.throughput is None:
        return (
            "No throughput.csv in this directory: throughput was not measured, so the "
            "leaderboards have no speed columns and there is no Pareto plot. Run "
            "`ztbench bench` (or the throughput verb) to add it.\n"
        )
    md = []
    for device in model.devices:
        name = file_name("pareto", device, suffix=".png")
        md.append(figure_markdown(plots.pareto_plot(results, results.dir, name, device)))
    text = "".join(md) or "The throughput rows do not match any measured candidate.\n"
    return (text + "Throughput: eager mode, forward+backward, at the largest size measured for "
            "the family's naive candidate; peers (float64, CPU, forward only, small sizes) have "
            "no point here.\n")  # fmt: skip
