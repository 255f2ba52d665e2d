"""The benchmark end to end (``ztbench bench``, ``make bench``), as four library calls:

- accuracy: every candidate of the suite against certified references (summary, points);
- throughput: how fast each candidate runs, at bench's sizes and thread count;
- impact: each candidate's loss refitted on the suite's datasets (and a synthetic grid);
- report: REPORT.md, tables and figures from the files the stages wrote.

Each stage writes into one results directory and the next reads only files; :func:`bench`
runs them in this order and returns where the report is.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ztbench.candidates import load_suite
from ztbench.fit.impact import (
    SYNTHETIC_GRID,
    SYNTHETIC_N,
    SYNTHETIC_SEED,
    impact_genes_frame,
    write_impact,
)
from ztbench.io.atomic import check_output_dir
from ztbench.io.executors import release_active
from ztbench.measure.accuracy import run_accuracy
from ztbench.report import build_report, terminal_leaderboard
from ztbench.suite import Suite
from ztbench.throughput.config import DEFAULT_SIZES, TimingConfig
from ztbench.throughput.stage import run_suite_throughput

DEFAULT_SUITE = "suites/default.toml"
DEFAULT_OUT = "results/default"
# bench's throughput settings: enough to rank candidates by speed, short enough for the
# `make bench` time target (the throughput verb's own defaults time more sizes, longer)
BENCH_SIZES = "1e6"
BENCH_BUDGET_S = 0.3
# one thread: on a shared or small machine, two threads made same-run ratios swing ~2x
# between runs of make bench (e.g. the naive formula against itself in float64)
BENCH_THREADS = 1
# Timed by the throughput verb, not by bench: the full forms (*-full), whose float64 rows
# refine a quarter of log-uniform points in double-double, and the threshold sweep
# families (*/threshold*: the shipped loss in its full form with a rule applied); either
# alone would take most of an hour. Their loss forms (*/ztbench) and the published
# candidates are timed.
BENCH_THROUGHPUT_EXCLUDE = ("*-full", "*/threshold*")

Say = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """What ``ztbench bench`` may change; the defaults are ``make bench``'s."""

    cache_dir: str | None = None
    throughput: bool = True
    impact: bool = True
    write_points: bool = True
    progress: bool = True
    throughput_sizes: tuple[int, ...] = (10**6,)
    throughput_threads: int = BENCH_THREADS
    throughput_budget_s: float = BENCH_BUDGET_S
    throughput_exclude: tuple[str, ...] = BENCH_THROUGHPUT_EXCLUDE


def bench(
    suite_path: str | Path,
    out: str | Path,
    options: BenchOptions = BenchOptions(),
    say: Say = print,
) -> Path:
    """Run accuracy, throughput, impact and the report on a suite into ``out``; print each
    stage's wall time, a short leaderboard, and return the report's path."""
    suite = load_suite(suite_path)
    out = Path(out)
    check_output_dir(out)
    times: dict[str, float] = {}
    with _timed("accuracy", times):
        result = run_accuracy(suite, out, cache_dir=options.cache_dir,
                              progress=None if options.progress else False,
                              write_points=options.write_points)  # fmt: skip
    release_active()  # a --scheduler local:N cluster idling here would disturb the timing
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    say(f"bench: accuracy {times['accuracy']:.1f} s ({parts})")
    with _timed("throughput", times):
        note = throughput_stage(suite, out, options)
    say(f"bench: {note} ({times['throughput']:.1f} s)")
    with _timed("impact", times):
        note = impact_stage(suite, out, options)
    say(f"bench: {note} ({times['impact']:.1f} s)")
    with _timed("report", times):
        path = build_report(out)
    say(f"bench: report {times['report']:.1f} s")
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
    say(f"bench: {sum(times.values()):.1f} s in all ({parts})")
    say("")
    for line in terminal_leaderboard(out):
        say(line)
    say("")
    say(f"Report: {path}")
    return path


@contextmanager
def _timed(stage: str, times: dict[str, float]) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    times[stage] = time.perf_counter() - t0


def throughput_stage(suite: Suite, out: Path, options: BenchOptions) -> str:
    """Time the suite's candidates (less ``options.throughput_exclude``) at bench's sizes,
    budget and thread count into ``out``; a one-line note."""
    if not options.throughput:
        stale = out / "throughput.csv"
        kept = f"; the report uses the existing {stale}" if stale.exists() else ""
        return f"throughput: skipped (--skip-throughput){kept}"
    timed = [c for c in suite.candidates
             if not any(fnmatch.fnmatchcase(c, p) for p in options.throughput_exclude)]  # fmt: skip
    config = TimingConfig(budget_s=options.throughput_budget_s)
    sizes = {dev: options.throughput_sizes for dev in DEFAULT_SIZES}
    lines = run_suite_throughput(
        suite, out, config, patterns=timed, sizes=sizes,
        threads=options.throughput_threads, progress=options.progress,
    )  # fmt: skip
    tail = [ln for ln in lines if ln.startswith(("rows:", "threads"))]
    return f"throughput: wrote {out}/throughput.csv" + (f" ({'; '.join(tail)})" if tail else "")


def impact_stage(suite: Suite, out: Path, options: BenchOptions) -> str:
    """Refit each dataset source's genes (per-gene model) with the suite's candidates of its
    family, in the suite's dtypes other than float64 (float32 when there are none), plus the
    synthetic-truth grid when the suite measures ztnb; a one-line note."""
    if not options.impact:
        return "impact: skipped (--skip-impact)"
    dtypes = [d for d in suite.dtypes if d != "float64"] or ["float32"]
    n_mu, n_theta = (int(x) for x in SYNTHETIC_GRID.split("x"))
    frames, digests = [], {}
    for fp in suite.families.values():
        if fp.dataset is not None:
            cands = list(suite.candidates_of(fp.family))
            frame, found = impact_genes_frame(fp.dataset.name, fp.family, "per-gene", cands,
                                              dtypes, options.cache_dir,
                                              progress=options.progress)  # fmt: skip
            frames.append(frame)
            digests.update(found)
    if "ztnb" in suite.families:
        synthetic = (SYNTHETIC_SEED, SYNTHETIC_N, n_mu, n_theta)
        cands = list(suite.candidates_of("ztnb"))
        frames.append(impact_genes_frame(None, "ztnb", "per-gene", cands, dtypes,
                                         options.cache_dir, synthetic,
                                         progress=options.progress)[0])  # fmt: skip
    if not frames:
        return "impact: skipped (the suite has no dataset source and no ztnb points)"
    paths = write_impact(pd.concat(frames, ignore_index=True), out, digests)
    return f"impact: wrote {paths[0]} and {paths[1]} ({', '.join(dtypes)})"
