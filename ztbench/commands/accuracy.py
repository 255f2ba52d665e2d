"""``ztbench accuracy``: run a suite's accuracy measurements and write the result files."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from ztbench.candidates import load_suite
from ztbench.candidates.external import from_cli
from ztbench.commands._options import (
    add_budget_option,
    add_cache_options,
    add_progress_option,
    add_scheduler_option,
)
from ztbench.commands._target import add_target_arguments
from ztbench.io.atomic import check_output_dir
from ztbench.io.errors import UserError
from ztbench.measure.accuracy import run_accuracy  # torch: not for `--help`
from ztbench.suite import Suite


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE.toml")
    p.add_argument("-o", "--out", metavar="DIR", help="output directory (default results/<suite>)")
    add_cache_options(p)
    p.add_argument("--no-points", action="store_true", help="skip the per-point Parquet file")
    add_progress_option(p)
    add_budget_option(p)
    p.add_argument(
        "--candidate",
        metavar="TARGET",
        help="measure only your own function (module:function or path/to/file.py:function, "
        "imported and run by ztbench) on the suite's points; see --family, --form, --sign, "
        "--kind, --parameters",
    )
    add_target_arguments(p, " (default: the suite's, if it has one)")
    add_scheduler_option(p)


def only_target(suite: Suite, args: argparse.Namespace) -> Suite:
    """``suite`` measuring the ``--candidate`` target alone (no sweeps; its dtypes, devices,
    modes, points and regions)."""
    families = list(suite.families)
    family = args.family or (families[0] if len(families) == 1 else None)
    if family is None:
        raise UserError(f"--candidate: give --family (suite {suite.name} has points of "
                        f"{', '.join(families)})")  # fmt: skip
    if family not in suite.families:
        raise UserError(f"--family {family}: suite {suite.name} has no [families.{family}]")

    cand = from_cli(args.candidate, family, args, suite.dtypes)
    return dataclasses.replace(
        suite, candidates=(cand.id,), candidate_modes={cand.id: suite.modes}, thresholds={},
        external={cand.id: cand},
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:

    suite = load_suite(args.suite)
    if args.candidate:
        suite = only_target(suite, args)
    out = Path(args.out) if args.out else Path("results") / suite.name
    check_output_dir(out)
    start = time.perf_counter()
    result = run_accuracy(
        suite,
        out,
        cache_dir=False if args.no_cache else args.cache_dir,
        progress=False if args.no_progress else None,
        write_points=not args.no_points,
    )
    total = time.perf_counter() - start
    s = result.summary
    ok = s[(s["status"] == "ok") & (s["region"] == "all")]
    print(f"accuracy: suite {suite.name}: {len(ok)} measured rows, "
          f"{int((s['status'] != 'ok').sum())} skipped/unsupported rows, "
          f"{int(ok['failures'].sum())} failures")  # fmt: skip
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    print(f"accuracy: {total:.1f} s in all ({stages})")
    print(f"accuracy: wrote {out}/summary.csv, summary.json, thresholds.csv, env.json"
          + ("" if args.no_points else ", points.parquet"))  # fmt: skip
    return 0
