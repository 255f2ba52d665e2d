"""``ztbench accuracy``: run a suite's accuracy measurements and write the result files."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from ztbench import budget
from ztbench.atomic import check_output_dir
from ztbench.commands._target import add_target_arguments
from ztbench.errors import UserError
from ztbench.executor import add_scheduler_option
from ztbench.suite import Suite, load_suite

HELP = "measure every candidate of a suite against certified references (value and gradients)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE.toml")
    p.add_argument("-o", "--out", metavar="DIR", help="output directory (default results/<suite>)")
    p.add_argument("--cache-dir", help="reference cache directory (default $ZTBENCH_CACHE_DIR "
                   "or the user cache dir)")  # fmt: skip
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--no-points", action="store_true", help="skip the per-point Parquet file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    budget.add_argument(p)
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
    from ztbench.candidates.external import from_cli

    cand = from_cli(args.candidate, family, args, suite.dtypes)
    return dataclasses.replace(
        suite, candidates=(cand.id,), candidate_modes={cand.id: suite.modes}, thresholds={},
        external={cand.id: cand},
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ztbench.accuracy import run_accuracy  # torch: not for `--help`

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
