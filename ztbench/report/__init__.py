"""The report: ``DIR/REPORT.md`` with tables and figures from a results directory.

:mod:`.data` reads the directory, :mod:`.tables` ranks and formats, :mod:`.plots` draws
(matplotlib, Agg), :mod:`.build` assembles the Markdown.
"""

from __future__ import annotations

from ztbench.report.build import SECTIONS, bench_line, build_report, terminal_leaderboard

__all__ = ["SECTIONS", "bench_line", "build_report", "terminal_leaderboard"]
