"""The report: ``DIR/REPORT.md`` with tables and figures from a results directory.

:mod:`.data` reads the directory, :mod:`.model` derives what the sections share,
:mod:`.tables` ranks and formats, :mod:`.plots` draws (matplotlib, Agg), each section renders
its Markdown (:mod:`.sections` and the section modules here), :mod:`.build` assembles them.
"""

from __future__ import annotations

from ztbench.report.build import SECTIONS, bench_line, build_report, terminal_leaderboard

__all__ = ["SECTIONS", "bench_line", "build_report", "terminal_leaderboard"]
