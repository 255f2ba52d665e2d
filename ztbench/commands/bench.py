"""``ztbench bench``: accuracy, throughput and the report on one suite (what `make bench` runs).

Stages: (1) :func:`ztbench.accuracy.run_accuracy` into DIR; (2) throughput into DIR
(``throughput.csv``/``.json``) through :mod:`ztbench.throughput` when that module is
installed (skipped with a note otherwise, or with ``--skip-throughput``); (3) the report
(DIR/REPORT.md). Prints each stage's wall time, the report's path and a short leaderboard
(top 3 per family for float32 and float64).
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from types import ModuleType

HELP = "run accuracy, throughput and the report on a suite; print the report path and leaders"
DEFAULT_SUITE = "suites/default.toml"
DEFAULT_OUT = "results/default"
# bench's throughput settings when ztbench.throughput offers no suite-level entry point:
# enough to rank candidates by speed, short enough for the `make bench` time target
BENCH_SIZES: dict[str, tuple[int, ...]] = {"cpu": (10**4, 10**6), "cuda": (10**4, 10**6, 10**7)}
BENCH_BUDGET_S = 0.25


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE.toml", nargs="?", default=DEFAULT_SUITE,
                   help=f"suite file (default {DEFAULT_SUITE})")  # fmt: skip
    p.add_argument("-o", "--out", metavar="DIR", default=DEFAULT_OUT,
                   help=f"results directory (default {DEFAULT_OUT})")  # fmt: skip
    p.add_argument("--cache-dir", help="reference cache directory (default $ZTBENCH_CACHE_DIR "
                   "or the user cache dir)")  # fmt: skip
    p.add_argument("--skip-throughput", action="store_true", help="do not measure throughput")
    p.add_argument(
        "--no-points",
        action="store_true",
        help="skip the per-point Parquet file (the report then has no heatmaps)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _throughput_module() -> ModuleType | None:
    try:
        return importlib.import_module("ztbench.throughput")
    except ImportError:
        return None


def run_throughput_stage(suite, out: Path, env: dict, progress: bool) -> str:
    """Measure throughput for ``suite`` into ``out``; return a one-line note of what ran.

    Uses ``ztbench.throughput.run_suite(suite, out, env=..., progress=...)`` when the module
    provides it, else builds the jobs with its ``plan`` / ``run_throughput`` /
    ``write_throughput`` at bench's sizes (:data:`BENCH_SIZES`).
    """
    tp = _throughput_module()
    if tp is None:
        return "throughput: skipped (ztbench.throughput is not installed)"
    if hasattr(tp, "run_suite"):
        tp.run_suite(suite, out, env=env, progress=progress)
        return f"throughput: wrote {out}/throughput.csv"
    if not all(hasattr(tp, n) for n in ("plan", "run_throughput", "write_throughput")):
        return "throughput: skipped (ztbench.throughput has no run function)"
    from ztbench.candidates import get_candidate

    cands = [get_candidate(c) for c in suite.candidates]
    if hasattr(tp, "with_naive"):
        cands = tp.with_naive(cands)
    jobs = tp.plan(cands, suite.dtypes, suite.devices, suite.modes, tp.PASSES, BENCH_SIZES,
                   modes_for=lambda c: suite.modes_for(c.id) or ("eager",))  # fmt: skip
    config = tp.TimingConfig(budget_s=BENCH_BUDGET_S) if hasattr(tp, "TimingConfig") else None
    result = tp.run_throughput(jobs, config=config, seed=suite.seed, progress=progress)
    tp.write_throughput(result, out, env)
    return f"throughput: wrote {out}/throughput.csv ({len(jobs)} rows)"


def run(args: argparse.Namespace) -> int:
    from ztbench.accuracy import run_accuracy
    from ztbench.report import build_report, terminal_leaderboard
    from ztbench.suite import load_suite

    suite = load_suite(args.suite)
    out = Path(args.out)
    progress = not args.no_progress
    times: dict[str, float] = {}

    t0 = time.perf_counter()
    result = run_accuracy(suite, out, cache_dir=args.cache_dir,
                          progress=None if progress else False,
                          write_points=not args.no_points)  # fmt: skip
    times["accuracy"] = time.perf_counter() - t0
    print(
        f"bench: accuracy {times['accuracy']:.1f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
        + ")",
        flush=True,
    )

    t0 = time.perf_counter()
    if args.skip_throughput:
        note = "throughput: skipped (--skip-throughput)"
        stale = out / "throughput.csv"
        if stale.exists():
            note += f"; the report uses the existing {stale}"
    else:
        note = run_throughput_stage(suite, out, result.env, progress)
    times["throughput"] = time.perf_counter() - t0
    print(f"bench: {note} ({times['throughput']:.1f} s)", flush=True)

    t0 = time.perf_counter()
    path = build_report(out)
    times["report"] = time.perf_counter() - t0
    print(f"bench: report {times['report']:.1f} s")
    total = sum(times.values())
    print(f"bench: {total:.1f} s in all (" + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                     times.items()) + ")")  # fmt: skip
    print()
    for line in terminal_leaderboard(out):
        print(line)
    print()
    print(f"Report: {path}")
    return 0
