"""``ztbench baseline``: run a suite and record its summary as the gate's baseline (ratchet).

The only way a baseline changes. The suite runs once under each CPU capability this machine
has (``ATEN_CPU_CAPABILITY``: default, avx2, avx512 on x86; each but the current one in a
fresh process) and the baseline is their envelope, the worst of each field
(:func:`ztbench.gate.envelope`), so that a CI runner with another CPU passes it.

Before writing, it prints what moved since the previous baseline at the same path (worse,
better, removed and added rows, with the suite's tolerance), so the author sees what a
reviewer will see in the diff. A previous file that cannot be read is reported and replaced.
The file format is described in :mod:`ztbench.gate`; it is written atomically.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ztbench import gate
from ztbench.commands._options import add_budget_option, add_cache_options, add_scheduler_option
from ztbench.commands.check import (
    Printer,
    default_baseline_path,
    env_text,
    load_suite_checked,
    run_suite,
)
from ztbench.io import budget
from ztbench.io.atomic import check_output_file
from ztbench.io.environment import cpu_capability, supported_capabilities
from ztbench.io.errors import UserError, split_list


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE.toml", help="the suite to run")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default=None,
        help="where to write it (default: results/baseline/<suite name>.json)",
    )
    add_cache_options(p, no_cache=False)
    p.add_argument(
        "--cpu-capabilities",
        metavar="LIST",
        default=None,
        help=(
            "comma-separated CPU capabilities to record the envelope of (default: every one "
            f"this machine has, {', '.join(supported_capabilities())} here)"
        ),
    )
    add_budget_option(p)
    add_scheduler_option(p)


def _capabilities(text: str | None) -> tuple[str, ...]:
    have = supported_capabilities()
    if text is None:
        return have
    asked = tuple(c.lower() for c in split_list(text, "--cpu-capabilities") or ())
    bad = [c for c in asked if c not in have]
    if bad:
        raise UserError(
            f"--cpu-capabilities: {', '.join(bad)} not available here "
            f"(this machine has: {', '.join(have)})"
        )
    return asked


def _record_in_subprocess(
    suite_path: str | Path, capability: str, cache_dir: str | Path | None, workdir: Path
) -> gate.Baseline:
    """One recording under ``capability``, made by ``ztbench baseline`` in a fresh process
    (torch chooses its kernels once, at start-up)."""
    out = workdir / f"{capability}.json"
    cmd = [sys.executable, "-m", "ztbench.cli", "baseline", str(suite_path), "-o", str(out),
           "--cpu-capabilities", capability, "--max-points", str(budget.max_points())]  # fmt: skip
    if cache_dir is not None:
        cmd += ["--cache-dir", str(cache_dir)]
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise UserError(f"recording under cpu capability {capability} failed: {why}")
    return gate.load_baseline(out)


def record(
    suite_path: str | Path,
    output: str | Path | None = None,
    cache_dir: str | Path | None = None,
    say: Printer = print,
    capabilities: Sequence[str] | None = None,
) -> gate.Baseline:
    """Run the suite under each CPU capability, print what moved since the previous
    baseline, write the envelope of the runs."""
    caps = tuple(capabilities) if capabilities else supported_capabilities()
    here = cpu_capability()
    say(f"[1/3] loading suite {suite_path}")
    suite = load_suite_checked(suite_path)
    path = Path(output) if output else default_baseline_path(suite.name)
    check_output_file(path, [suite_path])
    recordings: dict[str, gate.Baseline] = {}
    if here in caps:  # first: a problem here (bad input, a full disk) stops it early
        done = run_suite(suite, cache_dir, say, f"[2/3] ({here})")
        recordings[here] = gate.Baseline.from_summary(
            done.summary, suite.name, suite.sha256, done.env
        )
    with tempfile.TemporaryDirectory(prefix="ztbench-baseline-") as tmp:
        for cap in caps:
            if cap not in recordings:
                say(f"[2/3] ({cap}) running suite {suite.name} in a process of its own ...")
                recordings[cap] = _record_in_subprocess(suite_path, cap, cache_dir, Path(tmp))
    new = gate.envelope([recordings[c] for c in caps], caps)

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
            _as_summary(new),
            new.env,
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
            say(f"previous baseline: {env_text(previous.env)}; now: {env_text(new.env)}")
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


def _as_summary(baseline: gate.Baseline) -> Any:
    """The baseline's rows as a summary table (what :func:`ztbench.gate.compare` reads)."""
    import pandas as pd

    return pd.DataFrame(
        [dict(zip(gate.KEY_COLUMNS, k, strict=True)) | dict(r) for k, r in baseline.rows.items()]
    )


def run(args: argparse.Namespace) -> int:
    caps = _capabilities(args.cpu_capabilities)
    say = lambda s: print(s, flush=True)  # noqa: E731
    record(args.suite, args.output, args.cache_dir, say=say, capabilities=caps)
    return 0
