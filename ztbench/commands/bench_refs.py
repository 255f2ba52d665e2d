"""``ztbench bench-refs``: reference points per second of each engine (a benchmark).

With ``--scaling local:1,local:2`` (any ``--scheduler`` values) it times the arb engine on
each executor in turn instead, and prints points per second, per worker, and the speed-up
over the first: how the reference stage scales with workers. Cluster workers are started
and have imported the engine before the clock starts, so their figures are steady rates;
``pool`` forks its processes per call, and that start-up is part of its figure, as in a run.
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd

from ztbench.commands._options import add_budget_option
from ztbench.core.families import Family, get_family
from ztbench.io import budget
from ztbench.io.errors import UserError, nonnegative_int, positive_int
from ztbench.io.executors import (
    LocalPool,
    active_executor,
    add_scheduler_option,
    parse_scheduler,
    scheduler_scope,
)
from ztbench.points.grids import build_family_points
from ztbench.reference import ENGINES, compute_references
from ztbench.suite import FamilyPoints, RandomSpec, Range


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--points", type=positive_int, default=100_000, help="arb points (default 100000)"
    )
    p.add_argument(
        "--mpmath-points",
        type=positive_int,
        default=2_000,
        help="mpmath points, a subset of the same sample (default 2000; it is ~40x slower)",
    )
    p.add_argument("--family", default="ztnb", choices=("ztnb", "ztpoisson"))
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument(
        "--scaling",
        metavar="LIST",
        help="comma list of schedulers (e.g. local:1,local:2): time arb on each and print "
        "points/s, per worker and the speed-up over the first",
    )
    add_scheduler_option(p)
    add_budget_option(p)


def _sample(family: Family, n: int, seed: int) -> pd.DataFrame:
    """``n`` log-uniform points over the whole domain (the suites' random sampler)."""
    columns = {c: Range(*family.domain[c]) for c in family.columns}

    spec = FamilyPoints(family.name, randoms=(RandomSpec(n, columns),))
    # the sampler sorts its points: shuffle (seeded) so that mpmath's subset is a fair sample
    return build_family_points(spec, seed).sample(frac=1.0, random_state=seed)


def _scaling(family: Family, points: pd.DataFrame, schedulers: list[str]) -> None:

    print(f"{len(points)} log-uniform points over the {family.name} domain, arb, no cache")
    first = None
    for address in schedulers:
        with scheduler_scope(address) as executor:
            ex = executor or LocalPool()
            ex.start("ztbench.reference")
            workers = ex.n_workers()
            start = time.perf_counter()
            compute_references(family, points, cache_dir=False, progress=False, executor=ex)
            rate = len(points) / (time.perf_counter() - start)
        first = first or rate
        print(f"  {address:24s} {workers:>4d} workers  {rate:>10,.0f} pts/s  "
              f"{rate / workers:>9,.0f} pts/s/worker  x{rate / first:.2f}")  # fmt: skip


def run(args: argparse.Namespace) -> int:

    family = get_family(args.family)
    problem = budget.excess(args.points)
    if problem is not None:
        raise UserError(f"--points {args.points}: {problem}")
    points = _sample(family, args.points, args.seed)
    if args.scaling is not None:
        try:
            schedulers = [parse_scheduler(s) for s in args.scaling.split(",")]
        except UserError as exc:
            raise UserError(f"--scaling: {exc}") from None
        _scaling(family, points, schedulers)
        return 0
    executor = active_executor()
    where = f"{os.cpu_count()} CPU(s)" if executor is None else repr(executor)
    if executor is not None:
        # workers started and the engine imported before the clock starts: the figure is
        # the steady rate, not the cluster's start-up
        executor.start("ztbench.reference")
    print(f"{args.points} log-uniform points over the {family.name} domain, {where}, no cache")
    rates = {}
    for engine, n in (("arb", args.points), ("mpmath", min(args.mpmath_points, args.points))):
        start = time.perf_counter()
        refs = compute_references(family, points.iloc[:n], engine=engine, cache_dir=False)
        seconds = time.perf_counter() - start
        rates[engine] = n / seconds
        print(
            f"  {engine:7s} {ENGINES[engine].VERSION:32s} {n:>8d} pts  {seconds:8.2f} s  "
            f"{rates[engine]:>10,.0f} pts/s  certified {refs['certified'].mean():.4%}"
        )
    print(f"arb / mpmath: {rates['arb'] / rates['mpmath']:.1f}x")
    return 0
