"""``ztbench bench``: accuracy, throughput, impact and the report on one suite (`make bench`).

Stages: (1) :func:`ztbench.accuracy.run_accuracy` into DIR; (2) throughput into DIR
(``throughput.csv``/``.json``) through the ``throughput`` verb, at bench's sizes, budget
and thread count (one thread by default; skipped with a note when that verb is not
installed, or with ``--skip-throughput``); (3) impact (``impact_genes.csv``,
``impact_summary.csv``, :func:`run_impact_stage`): for each family with a dataset source,
the suite's torch candidates of that family refitted on that dataset with the per-gene
model (the size-factor model costs minutes per candidate), in the suite's dtypes other than
float64 (float32 when there are none), plus the synthetic-truth grid when the suite
measures ztnb (skipped with ``--skip-impact``); (4) the report (DIR/REPORT.md). Prints each
stage's wall time, the report's path and a short leaderboard (top 3 per family for
float32 and float64).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import importlib
import io
import json
import time
from pathlib import Path

from ztbench import budget, jsonfloat
from ztbench.atomic import atomic_write_text, check_output_dir
from ztbench.errors import UserError, positive_float, positive_int
from ztbench.executor import add_scheduler_option, release_active
from ztbench.suite import Suite

HELP = "run accuracy, throughput and the report on a suite; print the report path and leaders"
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
BENCH_THROUGHPUT_EXCLUDE = "*-full,*/threshold*"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE.toml", nargs="?", default=DEFAULT_SUITE,
                   help=f"suite file (default {DEFAULT_SUITE})")  # fmt: skip
    p.add_argument("-o", "--out", metavar="DIR", default=DEFAULT_OUT,
                   help=f"results directory (default {DEFAULT_OUT})")  # fmt: skip
    p.add_argument("--cache-dir", help="reference cache directory (default $ZTBENCH_CACHE_DIR "
                   "or the user cache dir)")  # fmt: skip
    p.add_argument("--skip-throughput", action="store_true", help="do not measure throughput")
    p.add_argument("--skip-impact", action="store_true", help="do not refit the datasets")
    p.add_argument(
        "--no-points",
        action="store_true",
        help="skip the per-point Parquet file (the report then has no heatmaps)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    budget.add_argument(p)
    p.add_argument(
        "--throughput-sizes",
        default=BENCH_SIZES,
        metavar="LIST",
        help=f"sizes timed by the throughput stage (default {BENCH_SIZES})",
    )
    p.add_argument(
        "--throughput-threads",
        type=positive_int,
        default=BENCH_THREADS,
        metavar="N",
        help=f"torch threads for the throughput stage (default {BENCH_THREADS})",
    )
    p.add_argument(
        "--throughput-budget",
        type=positive_float,
        default=BENCH_BUDGET_S,
        metavar="S",
        help=f"seconds of timing per throughput row (default {BENCH_BUDGET_S})",
    )
    p.add_argument(
        "--throughput-exclude",
        default=BENCH_THROUGHPUT_EXCLUDE,
        metavar="PATTERNS",
        help="comma list of candidate ids or globs the throughput stage leaves out "
        f"(default {BENCH_THROUGHPUT_EXCLUDE!r}; '' times every candidate)",
    )
    add_scheduler_option(p)


def _timed_candidates(suite: Suite, exclude: str) -> str | None:
    """The suite's candidates less those matching ``exclude``, as a --candidates list
    (None when nothing is left out)."""
    patterns = [x.strip() for x in exclude.split(",") if x.strip()]
    ids = [c for c in suite.candidates if not any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    return None if len(ids) == len(suite.candidates) else ",".join(ids)


def run_throughput_stage(
    suite_path: str,
    out: Path,
    acc_env: dict,
    sizes: str,
    budget: float,
    progress: bool,
    threads: int = BENCH_THREADS,
    max_elements: int = budget.DEFAULT_MAX_ELEMENTS,
    candidates: str | None = None,
) -> str:
    """Run the ``throughput`` verb on the suite into ``out``; return a one-line note.

    Goes through the verb (:mod:`ztbench.commands.throughput`: its argument checks and its
    reading of the suite's candidates, dtypes, devices and modes) with bench's ``--sizes``,
    ``--budget`` and ``--threads``; its per-row lines are not echoed. The verb rewrites
    env.json: the accuracy run's ``suite_sha256`` (which covers a ``base`` suite) is kept in it.
    """
    try:
        verb = importlib.import_module("ztbench.commands.throughput")
    except ImportError:
        return "throughput: skipped (the throughput verb is not installed)"
    parser = argparse.ArgumentParser(prog="ztbench throughput")
    verb.add_arguments(parser)
    argv = [suite_path, "-o", str(out), "--sizes", sizes, "--budget", repr(budget),
            "--threads", str(threads), "--max-points", str(max_elements)]  # fmt: skip
    if candidates:
        argv += ["--candidates", candidates]
    args = parser.parse_args(argv + ([] if progress else ["--no-progress"]))
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        verb.run(args)
    env_path = out / "env.json"
    if "suite_sha256" in acc_env and env_path.is_file():
        try:
            env = jsonfloat.loads(env_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise UserError(f"{env_path}: cannot read ({exc})") from None
        env["suite_sha256"] = acc_env["suite_sha256"]
        atomic_write_text(env_path, json.dumps(env, indent=2, sort_keys=True) + "\n")
    lines = [ln for ln in captured.getvalue().splitlines() if ln.strip()]
    tail = [ln for ln in lines if ln.startswith(("rows:", "threads"))]
    return (
        "throughput: wrote " + f"{out}/throughput.csv" + (f" ({'; '.join(tail)})" if tail else "")
    )


def _max_elements(args: argparse.Namespace) -> int:
    """The throughput stage's element budget: bench's --max-points when it is larger."""
    return max(args.max_points, budget.DEFAULT_MAX_ELEMENTS)


def run_impact_stage(suite: Suite, out: Path, cache_dir: str | None, progress: bool) -> str:
    """Run the impact stage for ``suite`` into ``out`` (see the module docstring)."""
    import pandas as pd

    from ztbench.commands.impact import (
        SYNTHETIC_GRID,
        SYNTHETIC_N,
        SYNTHETIC_SEED,
        impact_genes_frame,
        write_impact,
    )

    dtypes = [d for d in suite.dtypes if d != "float64"] or ["float32"]
    n_mu, n_theta = (int(x) for x in SYNTHETIC_GRID.split("x"))
    frames = []
    for fp in suite.families.values():
        if fp.dataset is not None:
            cands = list(suite.candidates_of(fp.family))
            frames.append(
                impact_genes_frame(
                    fp.dataset.name, fp.family, "per-gene", cands, dtypes, cache_dir,
                    progress=progress,
                )
            )  # fmt: skip
    if "ztnb" in suite.families:
        synthetic = (SYNTHETIC_SEED, SYNTHETIC_N, n_mu, n_theta)
        cands = list(suite.candidates_of("ztnb"))
        frames.append(
            impact_genes_frame(
                None, "ztnb", "per-gene", cands, dtypes, cache_dir, synthetic, progress=progress
            )
        )
    if not frames:
        return "impact: skipped (the suite has no dataset source and no ztnb points)"
    paths = write_impact(pd.concat(frames, ignore_index=True), out)
    return f"impact: wrote {paths[0]} and {paths[1]} ({', '.join(dtypes)})"


def run(args: argparse.Namespace) -> int:
    from ztbench.accuracy import run_accuracy
    from ztbench.report import build_report, terminal_leaderboard
    from ztbench.suite import load_suite

    if not args.skip_throughput:  # checked before the accuracy stage spends minutes
        from ztbench.commands.throughput import parse_sizes

        parse_sizes(args.throughput_sizes, _max_elements(args), "--throughput-sizes")
    suite = load_suite(args.suite)
    out = Path(args.out)
    check_output_dir(out)
    progress = not args.no_progress
    times: dict[str, float] = {}

    t0 = time.perf_counter()
    result = run_accuracy(suite, out, cache_dir=args.cache_dir,
                          progress=None if progress else False,
                          write_points=not args.no_points)  # fmt: skip
    times["accuracy"] = time.perf_counter() - t0
    release_active()  # a --scheduler local:N cluster idling here would disturb the timing
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
        note = run_throughput_stage(args.suite, out, result.env, args.throughput_sizes,
                                    args.throughput_budget, progress,
                                    args.throughput_threads, _max_elements(args),
                                    _timed_candidates(suite, args.throughput_exclude))  # fmt: skip
    times["throughput"] = time.perf_counter() - t0
    print(f"bench: {note} ({times['throughput']:.1f} s)", flush=True)

    t0 = time.perf_counter()
    if args.skip_impact:
        note = "impact: skipped (--skip-impact)"
    else:
        note = run_impact_stage(suite, out, args.cache_dir, progress)
    times["impact"] = time.perf_counter() - t0
    print(f"bench: {note} ({times['impact']:.1f} s)", flush=True)

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
