"""``ztbench refs``: certified reference values for the points of a CSV file."""

from __future__ import annotations

import argparse

from ztbench.atomic import check_output_file
from ztbench.errors import UserError
from ztbench.executor import add_scheduler_option
from ztbench.families import FAMILIES, get_family
from ztbench.pointsio import read_points_csv, write_csv
from ztbench.schema import ENGINE_NAMES

HELP = "certified reference NLL values and gradients for the points of a CSV file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input",
        metavar="INPUT.csv",
        help="header row with k,lam (ztpoisson) or k,mu,theta (ztnb); other columns kept",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT.csv")
    p.add_argument("--family", required=True, help=f"one of: {', '.join(FAMILIES)}")
    p.add_argument(
        "--engine", default="arb", help=f"one of: {', '.join(ENGINE_NAMES)} (default arb)"
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="reference cache directory (default $ZTBENCH_CACHE_DIR or the user cache dir)",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_scheduler_option(p)


def run(args: argparse.Namespace) -> int:
    from ztbench.reference import ENGINES, compute_references

    try:
        family = get_family(args.family)
        if args.engine not in ENGINES:
            raise ValueError(f"unknown engine {args.engine!r} (known: {', '.join(ENGINES)})")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    check_output_file(args.output, [args.input])
    points = read_points_csv(args.input, family, reserved=(*family.quantities, "certified"))
    refs = compute_references(
        family,
        points,
        engine=args.engine,
        cache_dir=False if args.no_cache else args.cache_dir,
        progress=False if args.no_progress else None,
    )
    out = points.join(refs)
    out["k"] = out["k"].astype("int64")  # validated integers: write them as such
    write_csv(out, args.output)
    n_bad = int((~refs["certified"]).sum())
    if n_bad:
        print(f"ztbench refs: warning: {n_bad} point(s) not certified (certified = false)")
    return 0
