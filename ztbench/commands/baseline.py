"""``ztbench baseline``: run a suite and record its summary as the gate's baseline (ratchet).

The only way a baseline changes. Before writing, it prints what moved since the previous
baseline at the same path (worse, better, removed and added rows, with the suite's
tolerance), so the author sees what a reviewer will see in the diff. A previous file that
cannot be read is reported and replaced. The file format is described in
:mod:`ztbench.gate`; it is written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ztbench import budget, gate
from ztbench.atomic import check_output_file
from ztbench.commands.check import (
    Printer,
    default_baseline_path,
    env_text,
    load_suite_checked,
    run_suite,
)
from ztbench.errors import UserError
from ztbench.executor import add_scheduler_option

HELP = "run a suite and record its accuracy summary as the CI gate's baseline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE.toml", help="the suite to run")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default=None,
        help="where to write it (default: results/baseline/<suite name>.json)",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=None,
        help="reference cache directory (default: $ZTBENCH_CACHE_DIR or the user cache)",
    )
    budget.add_argument(p)
    add_scheduler_option(p)


def record(
    suite_path: str | Path,
    output: str | Path | None = None,
    cache_dir: str | Path | None = None,
    say: Printer = print,
) -> gate.Baseline:
    """Run the suite, print what moved since the previous baseline, write the new one."""
    say(f"[1/3] loading suite {suite_path}")
    suite = load_suite_checked(suite_path)
    path = Path(output) if output else default_baseline_path(suite.name)
    check_output_file(path, [suite_path])
    run = run_suite(suite, cache_dir, say, "[2/3]")
    new = gate.Baseline.from_summary(run.summary, suite.name, suite.sha256, run.env)

    say(f"[3/3] writing {path}")
    previous: gate.Baseline | None = None
    if path.exists():
        try:
            previous = gate.load_baseline(path)
        except UserError as exc:
            say(f"note: the previous baseline is replaced without comparison: {exc}")
    if previous is None:
        say("no previous baseline at this path: recording the first one")
    elif previous.suite != suite.name:
        say(f"note: the previous file was for suite {previous.suite!r}: replaced")
    else:
        result = gate.compare(
            previous,
            run.summary,
            run.env,
            suite.gate,
            suite_sha256=suite.sha256,
        )
        say(_moved_line(result))
        if not result.env_mismatch:
            lines = gate.format_report(
                result,
                verb="baseline",
                regressions_title="WORSE than the previous baseline (accepted by recording)",
                improvements_title="BETTER than the previous baseline",
                improvements_note="",
            )
            for line in lines:
                say(line.replace("MISSING:", "REMOVED:").replace("NEW:", "ADDED:"))
        else:
            say(f"previous baseline: {env_text(previous.env)}; now: {env_text(run.env)}")
    gate.save_baseline(new, path)
    say(f"wrote {path}: {len(new.rows)} rows, {env_text(new.env)}, suite sha256 {suite.sha256}")
    return new


def _moved_line(result: gate.GateResult) -> str:
    if result.env_mismatch:
        return "the environment changed since the previous baseline: rows not compared"
    parts = [
        f"{len(result.regressions)} worse",
        f"{len(result.improvements)} better",
        f"{len(result.missing)} removed",
        f"{len(result.new)} added",
    ]
    return "moved since the previous baseline: " + ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    record(args.suite, args.output, args.cache_dir, say=lambda s: print(s, flush=True))
    return 0
