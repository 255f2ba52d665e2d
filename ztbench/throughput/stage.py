"""The throughput stage on a suite: which candidates, dtypes, devices, modes, passes, input
kinds and sizes are timed, the timing itself, and the files it writes.

:func:`run_suite_throughput` is what ``ztbench throughput`` and ``make bench`` call: the
suite's candidates (less those its ``patterns`` leave out) plus each family's ``naive``,
over the suite's (or the given) dtypes, devices and modes, written as ``throughput.csv``,
``throughput.json`` and ``env.json`` into ``out``. Bad values are one-line UserErrors that
name the option they came from.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from ztbench.candidates import candidate_of
from ztbench.candidates.external import env_entries
from ztbench.core.schema import DEVICES, DTYPE_NAMES, INPUT_KINDS, MODES, PASSES
from ztbench.io import budget
from ztbench.io.environment import environment_info
from ztbench.io.errors import UserError, split_list
from ztbench.suite import Suite
from ztbench.throughput.config import DEFAULT_SIZES, TimingConfig
from ztbench.throughput.output import summary_lines, write_throughput
from ztbench.throughput.runner import Job, plan, run_throughput, with_naive


def parse_sizes(
    value: str, limit: int = budget.DEFAULT_MAX_ELEMENTS, option: str = "--sizes"
) -> tuple[int, ...]:
    """``"1e4,1e6"`` -> (10000, 1000000); UserError unless each is a positive integer
    within ``limit`` elements (the point budget, ``--max-points``)."""
    out = []
    for item in split_list(value) or []:
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


def check_choices(names: Sequence[str], known: Sequence[str], option: str) -> tuple[str, ...]:
    """``names`` once each, in order; UserError naming ``option`` for one not in ``known``."""
    for n in names:
        if n not in known:
            raise UserError(f"{option}: unknown value {n!r} (known: {', '.join(known)})")
    return tuple(dict.fromkeys(names))


def run_suite_throughput(
    suite: Suite,
    out: Path,
    config: TimingConfig,
    *,
    patterns: Sequence[str] | None = None,
    dtypes: Sequence[str] | None = None,
    devices: Sequence[str] | None = None,
    modes: Sequence[str] | None = None,
    passes: Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
    sizes: dict[str, tuple[int, ...]] | None = None,
    threads: int | None = None,
    progress: bool = True,
    keep: Callable[[Job], bool] | None = None,
) -> list[str]:
    """Time the suite (see the module docstring), write its files into ``out`` and return
    the summary lines (one per family and dtype, then the threads and load average).
    ``keep``: time only the planned jobs (rows) it accepts."""
    ids = list(suite.candidates)
    if patterns is not None:
        for pat in patterns:
            if not any(fnmatch.fnmatchcase(i, pat) for i in ids):
                raise UserError(f"--candidates: {pat!r} matches no candidate of suite {suite.name}")
        ids = [i for i in ids if any(fnmatch.fnmatchcase(i, p) for p in patterns)]
    candidates = with_naive([candidate_of(suite, i) for i in ids])
    dtypes = check_choices(dtypes or suite.dtypes, DTYPE_NAMES, "--dtypes")
    devices = list(devices or suite.devices)
    for dev in devices:
        if dev.split(":", 1)[0] not in DEVICES:
            raise UserError(f"--devices: unknown device {dev!r} (known: {', '.join(DEVICES)})")
    modes = check_choices(modes or suite.modes, MODES, "--modes")
    passes = check_choices(passes or PASSES, PASSES, "--passes")
    inputs = check_choices(inputs or INPUT_KINDS, INPUT_KINDS, "--inputs")

    def modes_for(c: object) -> tuple[str, ...]:
        # the suite's [candidates.modes] restricts the suite's modes; a mode added on the
        # command line applies to every candidate
        cid = c.id  # type: ignore[attr-defined]
        allowed = suite.modes_for(cid) if cid in suite.candidates else suite.modes
        return tuple(m for m in modes if m not in suite.modes or m in allowed)

    jobs = plan(candidates, dtypes, devices, modes, passes, sizes or dict(DEFAULT_SIZES),
                modes_for, inputs)  # fmt: skip
    if keep is not None:
        jobs = [j for j in jobs if keep(j)]
    result = run_throughput(jobs, config, threads=threads, seed=suite.seed, progress=progress)
    env = environment_info(suite.path, devices)
    env["suite_sha256"] = suite.sha256  # as the accuracy runner: also covers a `base` suite
    env["torch_threads"] = result.threads
    if suite.external:  # as the accuracy runner records them (the report reads them)
        env.update(env_entries(suite.external))
    write_throughput(result, out, env)
    return [
        *summary_lines(result.table),
        f"threads {result.threads}; load average at start {result.loadavg.get('start')}, "
        f"at end {result.loadavg.get('end')} (1, 5, 15 min)",
    ]
