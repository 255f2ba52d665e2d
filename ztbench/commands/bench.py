"""``ztbench bench``: accuracy, throughput, impact and the report on one suite (`make bench`).

The stages are :func:`ztbench.pipeline.bench`'s; this verb reads their options.
"""

from __future__ import annotations

import argparse

from ztbench import pipeline
from ztbench.commands._options import (
    add_budget_option,
    add_cache_options,
    add_progress_option,
    add_scheduler_option,
)
from ztbench.core.schema import INPUT_KINDS, PASSES
from ztbench.io import budget
from ztbench.io.errors import UserError, positive_float, positive_int, split_list
from ztbench.throughput.stage import check_choices, parse_sizes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE.toml", nargs="?", default=pipeline.DEFAULT_SUITE,
                   help=f"suite file (default {pipeline.DEFAULT_SUITE})")  # fmt: skip
    p.add_argument("-o", "--out", metavar="DIR", default=pipeline.DEFAULT_OUT,
                   help=f"results directory (default {pipeline.DEFAULT_OUT})")  # fmt: skip
    add_cache_options(p, no_cache=False)
    p.add_argument("--skip-throughput", action="store_true", help="do not measure throughput")
    p.add_argument("--skip-impact", action="store_true", help="do not refit the datasets")
    p.add_argument(
        "--no-points",
        action="store_true",
        help="skip the per-point Parquet file (the report then has no heatmaps)",
    )
    add_progress_option(p)
    add_budget_option(p)
    p.add_argument(
        "--throughput-sizes",
        default=pipeline.BENCH_SIZES,
        metavar="LIST",
        help=f"sizes timed by the throughput stage (default {pipeline.BENCH_SIZES})",
    )
    p.add_argument(
        "--throughput-passes",
        default=",".join(pipeline.BENCH_PASSES),
        metavar="LIST",
        help="passes timed: forward, forward+backward "
        f"(default {','.join(pipeline.BENCH_PASSES)})",
    )
    p.add_argument(
        "--throughput-inputs",
        default=",".join(pipeline.BENCH_INPUTS),
        metavar="LIST",
        help="input kinds timed: realistic, log-uniform "
        f"(default {','.join(pipeline.BENCH_INPUTS)})",
    )
    p.add_argument(
        "--throughput-threads",
        type=positive_int,
        default=pipeline.BENCH_THREADS,
        metavar="N",
        help=f"torch threads for the throughput stage (default {pipeline.BENCH_THREADS})",
    )
    p.add_argument(
        "--throughput-budget",
        type=positive_float,
        default=pipeline.BENCH_BUDGET_S,
        metavar="S",
        help=f"seconds of timing per throughput row (default {pipeline.BENCH_BUDGET_S})",
    )
    exclude = ",".join(pipeline.BENCH_THROUGHPUT_EXCLUDE)
    p.add_argument(
        "--throughput-exclude",
        default=exclude,
        metavar="PATTERNS",
        help="comma list of candidate ids or globs the throughput stage leaves out "
        f"(default {exclude!r}; '' times every candidate)",
    )
    p.add_argument(
        "--goal-speed-size",
        default=f"{pipeline.GOAL_SPEED_SIZE:g}",
        metavar="N",
        help="size at which the shipped loss and naive are timed again for the speed goals, "
        f"on both input kinds (default {pipeline.GOAL_SPEED_SIZE:g}; 0 skips it)",
    )
    add_scheduler_option(p)


def run(args: argparse.Namespace) -> int:
    # checked before the accuracy stage spends minutes
    limit = max(args.max_points, budget.DEFAULT_MAX_ELEMENTS)
    sizes = parse_sizes(args.throughput_sizes, limit, "--throughput-sizes")
    passes = check_choices(split_list(args.throughput_passes, "--throughput-passes") or (),
                           PASSES, "--throughput-passes")  # fmt: skip
    inputs = check_choices(split_list(args.throughput_inputs, "--throughput-inputs") or (),
                           INPUT_KINDS, "--throughput-inputs")  # fmt: skip
    goal_size = None  # "0": no goal timing
    if args.goal_speed_size.strip() != "0":
        goal_sizes = parse_sizes(args.goal_speed_size, limit, "--goal-speed-size")
        if len(goal_sizes) != 1:
            raise UserError(f"--goal-speed-size: one size, or 0, not {args.goal_speed_size!r}")
        goal_size = goal_sizes[0]
    exclude = (split_list(args.throughput_exclude, "--throughput-exclude")
               if args.throughput_exclude.strip() else [])  # fmt: skip
    options = pipeline.BenchOptions(
        cache_dir=args.cache_dir,
        throughput=not args.skip_throughput,
        impact=not args.skip_impact,
        write_points=not args.no_points,
        progress=not args.no_progress,
        throughput_sizes=sizes,
        throughput_passes=passes,
        throughput_inputs=inputs,
        throughput_threads=args.throughput_threads,
        throughput_budget_s=args.throughput_budget,
        throughput_exclude=tuple(exclude or ()),
        goal_speed_size=goal_size,
    )
    pipeline.bench(args.suite, args.out, options, say=lambda line: print(line, flush=True))
    return 0
