"""Build ``DIR/REPORT.md`` (and its figures) from a results directory.

Sections (in order, see :data:`SECTIONS`): the findings on one screen
(:mod:`ztbench.report.findings`), the recommendation per family and dtype, the shipped loss
against its goals, the published rules' errors in tables
(:mod:`ztbench.report.published`), a diagnosis of each candidate the user named
(:mod:`ztbench.report.diagnosis`), what each loss does to a trained model
(:mod:`ztbench.report.training`) and to per-gene fits of real and synthetic counts
(:mod:`ztbench.report.impact`; both from their files when present), the leaderboards,
torch.compile against eager, the error heatmaps (value and gradients), the threshold
sweeps, accuracy against throughput, the worst cases (with the ``ztbench eval`` command
and input file that reproduce each) and the environment block. Optional inputs that are
missing (throughput.csv, points.parquet) are named in the report, and the parts that need
them are left out.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd

from ztbench.core.families import get_family
from ztbench.core.rules import PUBLISHED_DOMAIN_REGION
from ztbench.core.schema import DEVICES, DTYPE_NAMES, FAMILY_NAMES
from ztbench.core.textfmt import file_name
from ztbench.io.atomic import atomic_write_text
from ztbench.report import nll_maps, plots
from ztbench.report.data import Results, load_results
from ztbench.report.diagnosis import TITLE as DIAGNOSIS_TITLE
from ztbench.report.diagnosis import diagnosis_section
from ztbench.report.findings import TITLE as FINDINGS_TITLE
from ztbench.report.findings import findings_section
from ztbench.report.goals import goals_markdown
from ztbench.report.impact import impact_section
from ztbench.report.published import TITLE as PUBLISHED_TITLE
from ztbench.report.published import published_section
from ztbench.report.tables import (
    RANK_MODE,
    board_keys,
    board_markdown,
    figure_markdown,
    fmt,
    inputs_text,
    leaderboard,
    markdown_table,
    ordered,
    recommendations,
    sweep_best,
    worst_cases,
    worst_cases_markdown,
)
from ztbench.report.training import TITLE as TRAINING_TITLE
from ztbench.report.training import training_section

SECTIONS: tuple[str, ...] = (
    FINDINGS_TITLE,
    "## Recommended candidates",
    "## The shipped loss against its goals",
    PUBLISHED_TITLE,
    DIAGNOSIS_TITLE,
    TRAINING_TITLE,
    "## What it does to a fit",
    "## Leaderboards",
    "## torch.compile against eager",
    "## Error heatmaps",
    "## Threshold sweeps",
    "## Accuracy against throughput",
    "## Worst cases",
    "## Environment",
)
# the main candidates drawn in the heatmaps and listed in the worst cases (plus the
# recommended one of each family, when it is not among them)
MAIN_CANDIDATES: dict[str, tuple[str, ...]] = {
    "ztpoisson": ("ztpoisson/naive", "ztpoisson/published", "ztpoisson/stable",
                  "ztpoisson/torch-distributions"),
    "ztnb": ("ztnb/naive", "ztnb/published-code", "ztnb/published-text", "ztnb/softplus",
             "ztnb/stable"),
}  # fmt: skip
REPORT_NAME = "REPORT.md"
# (mu range, theta range) of the magnified ztnb heatmaps around the published switch curves
RULES_WINDOW: tuple[tuple[float, float], tuple[float, float]] = ((1e-4, 1e3), (1e-2, 1e4))


def _main_candidates(results: Results, recs: pd.DataFrame) -> dict[str, list[str]]:
    s = results.summary
    ok = s[(s["status"] == "ok") & (s["mode"] == RANK_MODE)]
    present = set(ok["candidate"])
    out: dict[str, list[str]] = {}
    for fam in ordered(s["family"], FAMILY_NAMES):
        main = [c for c in MAIN_CANDIDATES.get(fam, ()) if c in present]
        if not recs.empty:
            for c in recs[recs["family"] == fam]["candidate"]:
                if c not in main and c in present:
                    main.append(c)
        if not main:  # unknown family set (e.g. a custom suite): the first few present
            main = [c for c in dict.fromkeys(ok[ok["family"] == fam]["candidate"])][:4]
        out[fam] = main
    return out


def _recommended_section(recs: pd.DataFrame, with_speed: bool) -> str:
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
        if with_speed:
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


def _compile_section(results: Results) -> str:
    s = results.summary
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


def _heatmaps(results: Results, main: dict[str, list[str]], device: str) -> str:
    if results.points_path is None:
        return (
            "No points.parquet in this directory (run accuracy without `--no-points`), "
            "so there are no heatmaps.\n"
        )
    s = results.summary
    dtypes = ordered(s["dtype"], DTYPE_NAMES)
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


def _sweeps(results: Results) -> str:
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


def _pareto(results: Results) -> str:
    if results.throughput is None:
        return (
            "No throughput.csv in this directory: throughput was not measured, so the "
            "leaderboards have no speed columns and there is no Pareto plot. Run "
            "`ztbench bench` (or the throughput verb) to add it.\n"
        )
    devices = ordered(results.summary["device"], DEVICES)
    md = []
    for device in devices:
        name = file_name("pareto", device, suffix=".png")
        md.append(figure_markdown(plots.pareto_plot(results, results.dir, name, device)))
    text = "".join(md) or "The throughput rows do not match any measured candidate.\n"
    return (text + "Throughput: eager mode, forward+backward, at the largest size measured for "
            "the family's naive candidate; peers (float64, CPU, forward only, small sizes) have "
            "no point here.\n")  # fmt: skip


def bench_line(record: dict) -> str:
    """``bench.json`` in one line: the total, each stage's time and peak memory."""

    def gb(b: int | None) -> str:
        return "?" if b is None else f"{b / 1e9:.2f} GB"

    parts = ", ".join(f"{k} {r['wall_s']:.1f} s, {gb(r['peak_rss_bytes'])}"
                      for k, r in record["stages"].items())  # fmt: skip
    return (f"{record['total_s']:.1f} s in all ({parts}); peak resident memory "
            f"{gb(record['peak_rss_bytes'])}, largest child process "
            f"{gb(record['children_peak_rss_bytes'])}")  # fmt: skip


def _environment(results: Results) -> str:
    env = results.env
    pk = env.get("packages", {}) or {}
    lines = [
        f"ztbench {env.get('ztbench', '?')}, Python {env.get('python', '?')}, "
        f"torch {env.get('torch', '?')}",
        "packages: " + ", ".join(f"{k} {v}" for k, v in sorted(pk.items()) if v),
        f"platform: {env.get('platform', '?')}",
        f"cpu: {env.get('cpu', '?')} ({env.get('cpu_count', '?')} cores), torch threads "
        f"{env.get('torch_threads', '?')}",
        f"devices: {', '.join(env.get('devices', []) or ['?'])}; CUDA "
        + (", ".join(env.get("cuda_devices") or []) or "not available"),
        f"suite: {env.get('suite_path', '?')} (sha256 {env.get('suite_sha256', '?')})",
    ]
    if results.bench:
        lines.append("ztbench bench: " + bench_line(results.bench))
    if results.throughput_settings:
        st = results.throughput_settings
        lines.append("throughput: " + ", ".join(f"{k} {v}" for k, v in st.items()
                                                 if not isinstance(v, dict | list)))  # fmt: skip
    return (
        "```\n" + "\n".join(lines) + "\n```\n\n<details><summary>env.json</summary>\n\n"
        "```json\n" + json.dumps(env, indent=2, sort_keys=True) + "\n```\n\n</details>\n"
    )


def build_report(directory: Path | str) -> Path:
    """Write ``DIR/REPORT.md`` and its PNGs; return the report's path.

    Raises :class:`~ztbench.io.errors.UserError` when a required file is missing or unreadable.
    """
    t0 = time.perf_counter()
    results = load_results(directory)
    s = results.summary
    with_speed = results.throughput is not None
    recs = recommendations(results)
    main = _main_candidates(results, recs)
    devices = ordered(s["device"], DEVICES)
    first_device = devices[0] if devices else "cpu"
    missing = []
    if results.throughput is None:
        missing.append("throughput.csv (no speed columns, no Pareto plot)")
    if results.points_path is None:
        missing.append("points.parquet (no heatmaps; worst cases without computed values)")

    md = [f"# ztbench report: {results.env.get('suite_path', results.dir)}\n",
          f"Results in `{results.dir}`: {int((s['status'] == 'ok').sum())} measured summary "
          f"rows over {s['candidate'].nunique()} candidates, dtypes "
          f"{', '.join(ordered(s['dtype'], DTYPE_NAMES))}, devices {', '.join(devices)}, "
          f"modes {', '.join(ordered(s['mode'], ('eager', 'compile')))}. Errors are in ulp of the "
          "dtype (units in the last place of the exact value rounded to that dtype) against "
          "certified references at the dtype-rounded inputs; a failure is NaN/inf where the "
          "exact value is finite. Absolute errors are in nats.\n"]  # fmt: skip
    if missing:
        md.append("**Not in this directory:** " + "; ".join(missing) + ".\n")
    md.append(SECTIONS[0] + "\n")
    md.append(findings_section(results))
    md.append(SECTIONS[1] + "\n")
    md.append(_recommended_section(recs, with_speed))
    md.append(SECTIONS[2] + "\n")
    md.append(goals_markdown(results))
    md.append(SECTIONS[3] + "\n")
    md.append(published_section(results))
    md.append(SECTIONS[4] + "\n")
    md.append(diagnosis_section(results))
    md.append(SECTIONS[5] + "\n")
    md.append(training_section(results.dir))
    md.append(SECTIONS[6] + "\n")
    md.append(impact_section(results.dir))
    md.append(SECTIONS[7] + "\n")
    md.append("Ranked by the max ulp error of the value (failures last), eager mode, region "
              "`all`. `max abs err (nats)`: the largest absolute error of the value, beside "
              "its ulp: near a zero of the NLL a tiny error in nats is many ulp. "
              "Gradient columns: max ulp of each autograd gradient; peers have no "
              "gradient. cost_vs_naive: time per element relative to the family's naive formula "
              "(above 1 is slower)"
              + (" at the largest size measured." if with_speed else
                 "; not measured in this run.") + "\n")  # fmt: skip
    for key in board_keys(results):
        board = leaderboard(results, key)
        if board.empty:
            continue
        md.append(f"### {key.family} · {key.dtype} · {key.device}\n")
        md.append(board_markdown(board, key.family, with_speed) + "\n")
    md.append(SECTIONS[8] + "\n")
    md.append(_compile_section(results))
    md.append(SECTIONS[9] + "\n")
    md.append(_heatmaps(results, main, first_device))
    md.append(SECTIONS[10] + "\n")
    md.append(_sweeps(results))
    md.append(SECTIONS[11] + "\n")
    md.append(_pareto(results))
    md.append(SECTIONS[12] + "\n")
    dtypes = ordered(s["dtype"], DTYPE_NAMES)
    cases = worst_cases(results, main, dtypes)
    if cases.empty:
        md.append("No worst cases (nothing was measured).\n")
    else:
        md.append("The input with the largest value error of each main candidate per dtype "
                  "(eager). The input files are in `worst_cases/` (inputs already rounded to "
                  "the dtype); `ztbench eval` prints the value it computes."
                  + ("" if results.points_path else " Computed and exact values need "
                     "points.parquet, absent here.") + "\n")  # fmt: skip
        md.append(worst_cases_markdown(cases) + "\n")
    md.append(SECTIONS[13] + "\n")
    md.append(_environment(results))
    md.append(f"\n*Report built by `ztbench report` in {time.perf_counter() - t0:.1f} s.*\n")
    path = results.dir / REPORT_NAME
    atomic_write_text(path, "\n".join(md))
    return path


def terminal_leaderboard(directory: Path | str, dtypes: tuple[str, ...] = ("float32", "float64"),
                         top: int = 3) -> list[str]:  # fmt: skip
    """Short text leaderboard: the top ``top`` candidates per family for ``dtypes``."""
    results = load_results(directory)
    lines = []
    for key in board_keys(results):
        if key.dtype not in dtypes:
            continue
        board = leaderboard(results, key)
        ranked = board[board["rank"].notna()].head(top) if not board.empty else board
        if ranked.empty:
            continue
        lines.append(f"{key.family} {key.dtype} {key.device}:")
        for r in ranked.to_dict(orient="records"):
            val = fmt(r["max_ulp"]) if not r["failures"] else f"inf ({r['failures']} fail)"
            cost = r["cost_fb_vs_naive"]
            speed = "" if math.isnan(cost) else f"  cost_vs_naive {cost:.2f}"
            lines.append(f"  {int(r['rank'])}. {r['candidate']:<30} max {val:>10} ulp  "
                         f"p99 {fmt(r['p99_ulp']):>8} ulp{speed}")  # fmt: skip
    return lines


__all__ = ["SECTIONS", "bench_line", "build_report", "inputs_text", "terminal_leaderboard"]
