"""``ztbench refs``: certified reference values for the points of a CSV file."""

from __future__ import annotations

import argparse

from ztbench.commands._options import add_cache_options, add_progress_option, add_scheduler_option
from ztbench.core.families import FAMILIES, get_family
from ztbench.core.schema import ENGINE_NAMES
from ztbench.io.atomic import check_output_file
from ztbench.io.errors import UserError
from ztbench.io.pointsio import read_points_csv, write_csv
from ztbench.reference import ENGINES, compute_references


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
    add_cache_options(p)
    add_progress_option(p)
    add_scheduler_option(p)


def run(args: argparse.Namespace) -> int:

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
