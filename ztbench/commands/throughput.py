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
import fnmatch
import math
from collections.abc import Sequence
from pathlib import Path

from ztbench import budget
from ztbench.atomic import check_output_dir
from ztbench.errors import UserError, nonnegative_float, positive_int

HELP = "time every candidate (elements/s, ratio to a copy and to naive) and write throughput.csv"


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UserError(f"empty list {value!r}")
    return items


def parse_sizes(
    value: str, limit: int = budget.DEFAULT_MAX_ELEMENTS, option: str = "--sizes"
) -> tuple[int, ...]:
    """``"1e4,1e6"`` -> (10000, 1000000); UserError unless each is a positive integer
    within ``limit`` elements (the point budget, ``--max-points``)."""
    out = []
    for item in _split(value) or []:
        try:
            x = float(item)
        except ValueError:
            raise UserError(f"{option}: {item!r} is not a number") from None
        if not math.isfinite(x) or x < 1 or x != math.floor(x):
            raise UserError(f"{option}: {item!r} is not a positive integer")
        problem = budget.excess(x, limit, "elements")
        if problem is not None:
            raise UserError(f"{option}: {item} {problem}")
        out.append(int(x))
    return tuple(out)


def _check(names: Sequence[str], known: Sequence[str], option: str) -> tuple[str, ...]:
    for n in names:
        if n not in known:
            raise UserError(f"{option}: unknown value {n!r} (known: {', '.join(known)})")
    return tuple(dict.fromkeys(names))


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ztbench.throughput.config import DEFAULT_SIZES, TimingConfig

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
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    budget.add_argument(p, budget.DEFAULT_MAX_ELEMENTS)


def run(args: argparse.Namespace) -> int:
    from ztbench.environment import environment_info
    from ztbench.schema import DEVICES, DTYPE_NAMES, INPUT_KINDS, MODES, PASSES
    from ztbench.suite import find_suite, load_suite
    from ztbench.throughput.config import DEFAULT_SIZES, TimingConfig
    from ztbench.throughput.output import summary_lines, write_throughput
    from ztbench.throughput.runner import plan, run_throughput, with_naive

    out = Path(args.out) if args.out else None
    if out is not None:
        check_output_dir(out)
    suite = load_suite(find_suite(args.suite))
    ids = list(suite.candidates)
    patterns = _split(args.candidates)
    if patterns is not None:
        for pat in patterns:
            if not any(fnmatch.fnmatchcase(i, pat) for i in ids):
                raise UserError(f"--candidates: {pat!r} matches no candidate of suite {suite.name}")
        ids = [i for i in ids if any(fnmatch.fnmatchcase(i, p) for p in patterns)]
    candidates = with_naive([suite.candidate(i) for i in ids])

    dtypes = _check(_split(args.dtypes) or suite.dtypes, DTYPE_NAMES, "--dtypes")
    devices = _split(args.devices) or list(suite.devices)
    for dev in devices:
        if dev.split(":", 1)[0] not in DEVICES:
            raise UserError(f"--devices: unknown device {dev!r} (known: {', '.join(DEVICES)})")
    modes = _check(_split(args.modes) or suite.modes, MODES, "--modes")
    passes = _check(_split(args.passes) or PASSES, PASSES, "--passes")
    inputs = _check(_split(args.inputs) or INPUT_KINDS, INPUT_KINDS, "--inputs")
    if args.sizes is not None:
        sizes = {dev: parse_sizes(args.sizes, args.max_points) for dev in DEFAULT_SIZES}
    else:
        sizes = dict(DEFAULT_SIZES)
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

    def modes_for(c: object) -> tuple[str, ...]:
        # the suite's [candidates.modes] restricts the suite's modes; a mode added on the
        # command line applies to every candidate
        cid = c.id  # type: ignore[attr-defined]
        allowed = suite.modes_for(cid) if cid in suite.candidates else suite.modes
        return tuple(m for m in modes if m not in suite.modes or m in allowed)

    jobs = plan(candidates, dtypes, devices, modes, passes, sizes, modes_for, inputs)
    result = run_throughput(
        jobs, config, threads=args.threads, seed=suite.seed, progress=not args.no_progress
    )
    env = environment_info(suite.path, devices)
    env["suite_sha256"] = suite.sha256  # as the accuracy runner: also covers a `base` suite
    env["torch_threads"] = result.threads
    if suite.external:  # as the accuracy runner records them (the report reads them)
        from ztbench.candidates.external import env_entries

        env.update(env_entries(suite.external))
    out = out or Path("results") / suite.name
    write_throughput(result, out, env)
    for line in summary_lines(result.table):
        print(line)
    print(f"threads {result.threads}; load average at start {result.loadavg.get('start')}, "
          f"at end {result.loadavg.get('end')} (1, 5, 15 min)")  # fmt: skip
    print(f"throughput: wrote {out}/throughput.csv, throughput.json, env.json")
    return 0
