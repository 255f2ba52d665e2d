"""Build ``DIR/REPORT.md`` (and its figures) from a results directory.

The results are loaded once (:func:`~ztbench.report.data.load_results`), turned into a
:class:`~ztbench.report.model.ReportModel`, and each section in :data:`RENDERERS` renders
its Markdown from the model under its heading, between a header (what was measured, and
which optional inputs are missing) and a footer (the build time).

Sections (in order, see :data:`SECTIONS`): the findings on one screen
(:mod:`ztbench.report.findings`), the recommendation per family and dtype, the shipped loss
against its goals (:mod:`ztbench.report.goals`), the published rules' errors in tables
(:mod:`ztbench.report.published`), a diagnosis of each candidate the user named
(:mod:`ztbench.report.diagnosis`), what each loss does to a trained model
(:mod:`ztbench.report.training`) and to per-gene fits of real and synthetic counts
(:mod:`ztbench.report.impact`; both from their files when present), the leaderboards,
torch.compile against eager, the error heatmaps (value and gradients), the threshold
sweeps, accuracy against throughput, the worst cases (with the ``ztbench eval`` command
and input file that reproduce each) and the environment block (those from the leaderboards
on, and the recommendation, in :mod:`ztbench.report.sections`). Optional inputs that are
missing (throughput.csv, points.parquet) are named in the report, and the parts that need
them are left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ztbench.core.schema import DTYPE_NAMES
from ztbench.io.atomic import atomic_write_text
from ztbench.report import diagnosis, findings, goals, impact, published, training
from ztbench.report.data import Results, load_results
from ztbench.report.model import MAIN_CANDIDATES, ReportModel, build_model
from ztbench.report.sections import (
    compiled,
    environment,
    heatmaps,
    leaderboards,
    pareto,
    recommended,
    sweeps,
    worst_cases,
)
from ztbench.report.sections.environment import bench_line
from ztbench.report.sections.heatmaps import NLL_MAP_CANDIDATES, RULES_WINDOW
from ztbench.report.sections.leaderboards import terminal_leaderboard
from ztbench.report.tables import inputs_text, ordered

Renderer = Callable[[ReportModel], str]
REPORT_NAME = "REPORT.md"


def _of_results(render: Callable[[Results], str]) -> Renderer:
    """A section renderer that takes the loaded results, as a renderer of the model."""
    return lambda model: render(model.results)


def _of_dir(render: Callable[[Path], str]) -> Renderer:
    """A section renderer that reads its own files from the results directory."""
    return lambda model: render(model.results.dir)


# every section of the report, in order: (heading, renderer)
RENDERERS: tuple[tuple[str, Renderer], ...] = (
    (findings.TITLE, _of_results(findings.findings_section)),
    (recommended.TITLE, recommended.render),
    (goals.TITLE, _of_results(goals.goals_markdown)),
    (published.TITLE, _of_results(published.published_section)),
    (diagnosis.TITLE, _of_results(diagnosis.diagnosis_section)),
    (training.TITLE, _of_dir(training.training_section)),
    (impact.TITLE, _of_dir(impact.impact_section)),
    (leaderboards.TITLE, leaderboards.render),
    (compiled.TITLE, compiled.render),
    (heatmaps.TITLE, heatmaps.render),
    (sweeps.TITLE, sweeps.render),
    (pareto.TITLE, pareto.render),
    (worst_cases.TITLE, worst_cases.render),
    (environment.TITLE, environment.render),
)
SECTIONS: tuple[str, ...] = tuple(title for title, _ in RENDERERS)


def _header(model: ReportModel) -> list[str]:
    """The title, what the directory holds and how errors are measured, and the missing
    optional inputs (one Markdown block each)."""
    results = model.results
    s = results.summary
    md = [f"# ztbench report: {results.env.get('suite_path', results.dir)}\n",
          f"Results in `{results.dir}`: {int((s['status'] == 'ok').sum())} measured summary "
          f"rows over {s['candidate'].nunique()} candidates, dtypes "
          f"{', '.join(ordered(s['dtype'], DTYPE_NAMES))}, devices {', '.join(model.devices)}, "
          f"modes {', '.join(ordered(s['mode'], ('eager', 'compile')))}. Errors are in ulp of the "
          "dtype (units in the last place of the exact value rounded to that dtype) against "
          "certified references at the dtype-rounded inputs; a failure is NaN/inf where the "
          "exact value is finite. Absolute errors are in nats.\n"]  # fmt: skip
    if model.missing:
        md.append("**Not in this directory:** " + "; ".join(model.missing) + ".\n")
    return md


def _footer(t0: float) -> str:
    return f"\n*Report built by `ztbench report` in {time.perf_counter() - t0:.1f} s.*\n"


def build_report(directory: Path | str) -> Path:
    """Write ``DIR/REPORT.md`` and its PNGs; return the report's path.

    Raises :class:`~ztbench.io.errors.UserError` when a required file is missing or unreadable.
    """
    t0 = time.perf_counter()
    model = build_model(load_results(directory))
    md = _header(model)
    for title, render in RENDERERS:
        md.append(title + "\n")
        md.append(render(model))
    md.append(_footer(t0))
    path = model.results.dir / REPORT_NAME
    atomic_write_text(path, "\n".join(md))
    return path


__all__ = [
    "MAIN_CANDIDATES",
    "NLL_MAP_CANDIDATES",
    "RENDERERS",
    "REPORT_NAME",
    "RULES_WINDOW",
    "SECTIONS",
    "bench_line",
    "build_report",
    "inputs_text",
    "terminal_leaderboard",
]
