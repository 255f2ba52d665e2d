"""``ztbench check``: rerun a suite and compare its summary with the committed baseline.

Exit codes: 0 the gate passes (improvements never fail), 1 a regression (an ulp metric
grew beyond the suite's tolerance, failures appeared or grew, a status went from ok to
something else, a baseline row disappeared, or the environment that decides the numerics
differs from the baseline's), 2 bad input (suite, or a missing, unreadable or malformed
baseline: one line on stderr). The rules are in :mod:`ztbench.gate`.

The stages (suite, baseline, run, compare) are announced on stdout as they start; the
report is plain fixed-width text.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ztbench import gate
from ztbench.candidates import load_suite
from ztbench.commands._options import add_budget_option, add_cache_options, add_scheduler_option
from ztbench.io.environment import cpu_capability
from ztbench.io.errors import UserError
from ztbench.measure.accuracy import run_accuracy

DEFAULT_BASELINE_DIR = Path("results") / "baseline"

Printer = Callable[[str], None]


def default_baseline_path(suite_name: str) -> Path:
    """``results/baseline/<suite name>.json``, relative to the current directory."""
    return DEFAULT_BASELINE_DIR / f"{suite_name}.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE.toml", help="the suite to rerun")
    p.add_argument(
        "--baseline",
        metavar="FILE",
        default=None,
        help="baseline JSON (default: results/baseline/<suite name>.json)",
    )
    add_cache_options(p, no_cache=False)
    add_budget_option(p)
    add_scheduler_option(p)


@dataclass(frozen=True)
class SuiteRun:
    """A loaded suite and the summary and environment of one run of it."""

    suite: Any
    summary: pd.DataFrame
    env: dict[str, Any]


def load_suite_checked(path: str | Path) -> Any:
    """:func:`ztbench.suite.load_suite`, with file errors turned into one-line UserErrors."""

    try:
        return load_suite(Path(path))
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        raise UserError(f"suite {path}: {exc}") from None


def run_suite(suite: Any, cache_dir: str | Path | None, say: Printer, stage: str) -> SuiteRun:
    """Run the accuracy suite (no output files) and return its summary and environment."""

    sizes = []
    for name in ("candidate", "dtype", "device", "mode"):
        v = getattr(suite, f"{name}s", None)
        if v is not None and hasattr(v, "__len__"):
            sizes.append(f"{len(v)} {name}{'' if len(v) == 1 else 's'}")
    what = " x ".join(sizes)
    say(f"{stage} running suite {suite.name}" + (f" ({what})" if what else "") + " ...")
    t0 = time.perf_counter()
    result = run_accuracy(
        suite, out_dir=None, cache_dir=Path(cache_dir) if cache_dir else None, progress=False
    )
    summary = result.summary
    env = dict(result.env)
    say(f"      {len(summary)} summary rows in {time.perf_counter() - t0:.1f} s")
    return SuiteRun(suite, summary, env)


def env_text(env: Any) -> str:
    """``torch 2.13.0 on cpu`` (and the CPU capabilities a baseline was recorded under)
    from an environment mapping."""
    caps = env.get(gate.CAPABILITIES_KEY)
    under = f" (cpu capabilities {caps.replace(',', ', ')})" if caps else ""
    return f"torch {env.get('torch', '?')} on {env.get('device_kind', '?')}{under}"


@dataclass(frozen=True)
class CheckOutcome:
    """What :func:`check` did: the gate result, the fresh summary and its environment."""

    result: gate.GateResult
    summary: pd.DataFrame
    env: dict[str, Any]
    baseline_path: Path

    @property
    def exit_code(self) -> int:
        return self.result.exit_code


def check(
    suite_path: str | Path,
    baseline_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    say: Printer = print,
) -> CheckOutcome:
    """Load the suite and its baseline, rerun the suite, compare, print the report.

    Raises UserError (exit 2) for a bad suite or a missing/unreadable/malformed baseline;
    the baseline is loaded before the (long) run so that such input fails fast.
    """
    say(f"[1/4] loading suite {suite_path}")
    suite = load_suite_checked(suite_path)
    path = Path(baseline_path) if baseline_path else default_baseline_path(suite.name)
    say(f"[2/4] loading baseline {path}")
    baseline = gate.load_baseline(path, suite.name)
    say(f"      {len(baseline.rows)} rows, recorded with {env_text(baseline.env)}")
    recorded = baseline.env.get(gate.CAPABILITIES_KEY)
    if recorded and cpu_capability() not in recorded.split(","):
        say(f"      note: this CPU runs torch's {cpu_capability()} kernels, which the baseline "
            "was not recorded under: their last bits may differ beyond the tolerance")  # fmt: skip
    run = run_suite(suite, cache_dir, say, "[3/4]")
    say(f"[4/4] comparing with the baseline ({env_text(run.env)})")
    result = gate.compare(
        baseline,
        run.summary,
        run.env,
        suite.gate,
        suite_sha256=getattr(suite, "sha256", None),
    )
    hint = (
        f"`ztbench baseline {suite_path}` here, or one file per environment with "
        f"`ztbench baseline {suite_path} -o FILE` and `ztbench check --baseline FILE`"
    )
    say("")
    for line in gate.format_report(result, env_hint=hint):
        say(line)
    return CheckOutcome(result, run.summary, run.env, path)


def run(args: argparse.Namespace) -> int:
    outcome = check(args.suite, args.baseline, args.cache_dir, say=_say)
    return outcome.exit_code


def _say(line: str) -> None:
    print(line, flush=True)
