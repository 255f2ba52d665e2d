"""``ztbench report``: turn a results directory into DIR/REPORT.md and its figures."""

from __future__ import annotations

import argparse
import time

from ztbench.report import build_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="results directory (summary.csv, thresholds.csv, "
                   "env.json; optional points.parquet, throughput.csv)")  # fmt: skip


def run(args: argparse.Namespace) -> int:

    t0 = time.perf_counter()
    path = build_report(args.dir)
    print(f"report: wrote {path} in {time.perf_counter() - t0:.1f} s")
    return 0
