"""``ztbench bench-refs``: reference points per second of each engine (a benchmark)."""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd

from ztbench import budget
from ztbench.errors import UserError, nonnegative_int, positive_int
from ztbench.families import Family, get_family
from ztbench.suite import FamilyPoints, RandomSpec, Range

HELP = "benchmark: certified reference points per second of each engine on the ztnb domain"


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
    budget.add_argument(p)


def _sample(family: Family, n: int, seed: int) -> pd.DataFrame:
    """``n`` log-uniform points over the whole domain (the suites' random sampler)."""
    columns = {c: Range(*family.domain[c]) for c in family.columns}
    from ztbench.grids import build_family_points

    spec = FamilyPoints(family.name, randoms=(RandomSpec(n, columns),))
    # the sampler sorts its points: shuffle (seeded) so that mpmath's subset is a fair sample
    return build_family_points(spec, seed).sample(frac=1.0, random_state=seed)


def run(args: argparse.Namespace) -> int:
    from ztbench.reference import ENGINES, compute_references

    family = get_family(args.family)
    problem = budget.excess(args.points)
    if problem is not None:
        raise UserError(f"--points {args.points}: {problem}")
    points = _sample(family, args.points, args.seed)
    print(
        f"{args.points} log-uniform points over the {family.name} domain, "
        f"{os.cpu_count()} CPU(s), no cache"
    )
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
