"""``ztbench throughput SUITE.toml [-o DIR]``: how fast each candidate runs.

Times the suite's candidates over its dtypes, devices and modes, both passes, at each size
(see :mod:`ztbench.throughput` for what is measured and how), and writes
``throughput.csv``, ``throughput.json`` and ``env.json`` into DIR (default
``results/<suite name>/``). The family's ``naive`` candidate is always timed too (the
reference of ``cost_vs_naive``). Filters for quick runs: ``--candidates`` keeps the
suite's candidates matching any pattern; ``--dtypes``, ``--devices``, ``--modes``,
``--passes``, ``--sizes`` and ``--inputs`` (log-uniform over the whole domain, realistic
single-cell-like values, or both) replace the suite's (or the default) values. Progress on
stderr; a bad suite or option is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ztbench.candidates import load_suite
from ztbench.commands._options import add_budget_option, add_progress_option
from ztbench.io import budget
from ztbench.io.atomic import check_output_dir
from ztbench.io.errors import UserError, nonnegative_float, positive_int, split_list
from ztbench.suite import find_suite
from ztbench.throughput.config import DEFAULT_SIZES, TimingConfig
from ztbench.throughput.stage import parse_sizes, run_suite_throughput


def add_arguments(p: argparse.ArgumentParser) -> None:

    d = TimingConfig()
    sizes = "; ".join(f"{k}: {','.join(f'{s:.0e}' for s in v)}" for k, v in DEFAULT_SIZES.items())
    p.add_argument("suite", metavar="SUITE.toml", help="suite file (or a name in suites/)")
    p.add_argument("-o", "--out", metavar="DIR", help="output directory (default results/<suite>)")
    p.add_argument("--candidates", metavar="PATTERNS", help="comma list of ids or globs")
    p.add_argument("--dtypes", metavar="LIST", help="comma list (default: the suite's)")
    p.add_argument("--devices", metavar="LIST", help="comma list (default: the suite's)")
    p.add_argument("--modes", metavar="LIST", help="eager,compile (default: the suite's)")
    p.add_argument("--passes", metavar="LIST", help="forward,forward+backward (default both)")
    p.add_argument("--inputs", metavar="LIST",
                   help="log-uniform (the whole domain), realistic (single-cell-like "
                        "values; see ztbench.throughput.inputs) (default both)")  # fmt: skip
    p.add_argument("--sizes", metavar="LIST", help=f"comma list, e.g. 1e4,1e6 (default {sizes})")
    p.add_argument(
        "--budget", type=float, default=d.budget_s, metavar="S",
        help=f"seconds of timing per row (at least --min-rounds rounds; default {d.budget_s})",
    )  # fmt: skip
    p.add_argument("--min-rounds", type=positive_int, default=d.min_rounds, metavar="N")
    p.add_argument("--max-rounds", type=positive_int, default=d.max_rounds, metavar="N")
    p.add_argument(
        "--threads", type=positive_int, default=None, metavar="N",
        help="torch.set_num_threads for the run (default: torch's current count)",
    )  # fmt: skip
    p.add_argument(
        "--peer-max-size", type=nonnegative_float, default=d.peer_max_size, metavar="N",
        help=f"largest size at which peers are timed (default {d.peer_max_size:.0e})",
    )  # fmt: skip
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    add_progress_option(p)
    add_budget_option(p, budget.DEFAULT_MAX_ELEMENTS)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if out is not None:
        check_output_dir(out)
    suite = load_suite(find_suite(args.suite))
    sizes = None
    if args.sizes is not None:
        sizes = {dev: parse_sizes(args.sizes, args.max_points) for dev in DEFAULT_SIZES}
    if args.budget <= 0 or not math.isfinite(args.budget):
        raise UserError(f"--budget must be positive, got {args.budget!r}")
    if args.min_rounds < 1 or args.max_rounds < args.min_rounds:
        raise UserError("need 1 <= --min-rounds <= --max-rounds")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    if args.peer_max_size < 0:
        raise UserError("--peer-max-size must be >= 0")
    config = TimingConfig(
        budget_s=args.budget,
        min_rounds=args.min_rounds,
        max_rounds=args.max_rounds,
        peer_max_size=int(args.peer_max_size),
        memory=not args.no_memory,
    )
    out = out or Path("results") / suite.name
    lines = run_suite_throughput(
        suite, out, config,
        patterns=split_list(args.candidates, "--candidates"),
        dtypes=split_list(args.dtypes, "--dtypes"), devices=split_list(args.devices, "--devices"),
        modes=split_list(args.modes, "--modes"), passes=split_list(args.passes, "--passes"),
        inputs=split_list(args.inputs, "--inputs"), sizes=sizes,
        threads=args.threads, progress=not args.no_progress,
    )  # fmt: skip
    for line in lines:
        print(line)
    print(f"throughput: wrote {out}/throughput.csv, throughput.json, env.json")
    return 0
