"""The report section "Error heatmaps": the exact NLL with the published rules' error in
nats on it (:mod:`ztbench.report.nll_maps`), then the log10 ulp error of the value and each
gradient of the main candidates over the domain (and, for ztnb, magnified around the
published switch curves). Needs points.parquet."""

from __future__ import annotations

from ztbench.core.families import get_family
from ztbench.core.textfmt import file_name
from ztbench.report import nll_maps, plots
from ztbench.report.data import Results
from ztbench.report.model import ReportModel
from ztbench.report.tables import figure_markdown

TITLE = "## Error heatmaps"
# (mu range, theta range) of the magnified ztnb heatmaps around the published switch curves
RULES_WINDOW: tuple[tuple[float, float], tuple[float, float]] = ((1e-4, 1e3), (1e-2, 1e4))
# the candidate drawn on the NLL maps, per family: the published rule
NLL_MAP_CANDIDATES: dict[str, str] = {"ztnb": "ztnb/published-code",
                                      "ztpoisson": "ztpoisson/published"}  # fmt: skip


def _nll_maps(results: Results, dtypes: list[str], device: str) -> str:
    """The original write-up's view: the exact NLL over (mu, theta) at fixed k (and over lam
    for ZTP), with the published rule's error in nats hatched on it; in float32 (the
    training dtype) when it was measured."""
    dtype = "float32" if "float32" in dtypes else (dtypes[0] if dtypes else "float32")
    md = []
    draw = {"ztnb": nll_maps.nll_map_ztnb, "ztpoisson": nll_maps.nll_map_ztpoisson}
    for fam, cand in NLL_MAP_CANDIDATES.items():
        name = file_name("nll-map", fam, cand, dtype, suffix=".png")
        md.append(figure_markdown(draw[fam](results, results.dir, name, cand, dtype, device)))
    if not any(md):
        return ""
    return ("### The NLL itself, and where the published rules are off\n\n"
            "The view of the original write-up: the exact NLL in nats, with the published "
            "rule's absolute error in nats marked on it.\n\n" + "".join(md))  # fmt: skip


def render(model: ReportModel) -> str:
    results, main, device = model.results, model.main_candidates, model.first_device
    if results.points_path is None:
        return (
            "No points.parquet in this directory (run accuracy without `--no-points`), "
            "so there are no heatmaps.\n"
        )
    s = results.summary
    dtypes = model.dtypes
    md = [_nll_maps(results, dtypes, device)]
    md.append("### Error over the domain\n")
    md.append("Each panel bins the plane in log-spaced cells and shows the largest log10 ulp "
              "error of the points in each cell (grid and random points alike), on one colour "
              "scale per figure. Panels: the main candidates (the recommended candidate is "
              "added when it is not among them):\n")  # fmt: skip
    md.append("".join(f"- {fam}: " + ", ".join(f"`{c}`" for c in cs) + "\n"
                      for fam, cs in main.items()))  # fmt: skip
    for fam, cands in main.items():
        quantities = ("value", *get_family(fam).gradients)
        md.append(f"#### {fam}\n")
        for q in quantities:
            qc = cands
            if q != "value":  # candidates without gradients (peers) have no panel
                g = s[(s["quantity"] == q) & (s["status"] == "ok")]
                qc = [c for c in cands if c in set(g["candidate"])]
            if not qc:
                continue
            if fam == "ztpoisson":
                name = file_name("heatmap", fam, q, suffix=".png")
                fig = plots.heatmap_ztpoisson(results, results.dir, name, qc, dtypes, device, q)
                md.append(figure_markdown(fig))
            elif fam == "ztnb":
                for d in dtypes:
                    name = file_name("heatmap", fam, q, d, suffix=".png")
                    fig = plots.heatmap_ztnb(results, results.dir, name, qc, d, device, q)
                    md.append(figure_markdown(fig))
                if q == "value":  # the published rules' neighbourhood, magnified
                    for d in dtypes:
                        name = file_name("heatmap", fam, q, d, "rules", suffix=".png")
                        fig = plots.heatmap_ztnb(results, results.dir, name, qc, d, device, q,
                                                 zoom=RULES_WINDOW)  # fmt: skip
                        md.append(figure_markdown(fig))
    return "\n".join(md)
