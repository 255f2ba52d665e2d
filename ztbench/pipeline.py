"""The benchmark end to end (``ztbench bench``, ``make bench``), as four library calls:

- accuracy: every candidate of the suite against certified references (summary, points);
- throughput: how fast each candidate runs, at bench's sizes and thread count;
- impact: each candidate's loss refitted on the suite's datasets (and a synthetic grid);
- report: REPORT.md, tables and figures from the files the stages wrote.

Each stage writes into one results directory and the next reads only files; :func:`bench`
runs them in this order and returns where the report is.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ztbench.candidates import get_candidate, load_suite
from ztbench.core.schema import GOAL_THROUGHPUT_DIR
from ztbench.fit import masked
from ztbench.fit.impact import (
    SYNTHETIC_N,
    SYNTHETIC_SEED,
    impact_genes_frame,
    write_impact,
)
from ztbench.io import budget, memory
from ztbench.io.atomic import atomic_path, check_output_dir
from ztbench.io.datasets import load as load_dataset
from ztbench.io.environment import environment_info
from ztbench.io.executors import release_active
from ztbench.measure.accuracy import run_accuracy
from ztbench.report import bench_line, build_report, terminal_leaderboard
from ztbench.report.goals import SPEED_GOAL_INPUTS
from ztbench.suite import Suite
from ztbench.throughput.config import DEFAULT_SIZES, TimingConfig
from ztbench.throughput.stage import run_suite_throughput

DEFAULT_SUITE = "suites/default.toml"
DEFAULT_OUT = "results/default"
BENCH_RECORD = "bench.json"
# bench's throughput settings: enough to rank candidates by speed, short enough for the
# `make bench` time target (the throughput verb's own defaults time more sizes, longer)
# the training pass on single-cell-like inputs, at a size where the per-call overhead is
# amortised and the slowest float64 forms still take seconds, not minutes, per row
BENCH_SIZES = "1e5"
BENCH_PASSES = ("forward+backward",)
BENCH_INPUTS = ("realistic",)
BENCH_BUDGET_S = 0.3
# one thread: on a shared or small machine, two threads made same-run ratios swing ~2x
# between runs of make bench (e.g. the naive formula against itself in float64)
BENCH_THREADS = 1
# Timed by the throughput verb, not by bench: the full forms (*-full), whose float64 rows
# refine a quarter of log-uniform points in double-double, and the threshold sweep
# families (*/threshold*: the shipped loss in its full form with a rule applied); either
# alone would take most of an hour. Their loss forms (*/ztbench) and the published
# candidates are timed.
BENCH_THROUGHPUT_EXCLUDE = ("*-full", "*/threshold*")
# The speed goals' own timing: the goals' loss forms and the naive formula, at the size
# the goals are stated for, on both input kinds, in the suite's dtypes
GOAL_SPEED_SIZE = 10**6
GOAL_SPEED_INPUTS = ("realistic", "log-uniform")

Say = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """What ``ztbench bench`` may change; the defaults are ``make bench``'s."""

    cache_dir: str | None = None
    throughput: bool = True
    impact: bool = True
    write_points: bool = True
    progress: bool = True
    throughput_sizes: tuple[int, ...] = (10**5,)
    throughput_passes: tuple[str, ...] = BENCH_PASSES
    throughput_inputs: tuple[str, ...] = BENCH_INPUTS
    throughput_threads: int = BENCH_THREADS
    throughput_budget_s: float = BENCH_BUDGET_S
    throughput_exclude: tuple[str, ...] = BENCH_THROUGHPUT_EXCLUDE
    goal_speed_size: int | None = GOAL_SPEED_SIZE  # None: no goal timing


def bench(
    suite_path: str | Path,
    out: str | Path,
    options: BenchOptions = BenchOptions(),
    say: Say = print,
) -> Path:
    """Run accuracy, throughput, impact and the report on a suite into ``out``; print an
    estimate of the time first (:func:`estimate_line`), each stage's wall time, a short
    leaderboard, and return the report's path."""
    suite = load_suite(suite_path)
    out = Path(out)
    check_output_dir(out)
    for recorded in (out / BENCH_RECORD, Path(DEFAULT_OUT) / BENCH_RECORD):
        line = estimate_line(suite, options, recorded)
        if line is not None:
            say(f"bench: {line}")
            break
    # torch.compile specialises its graphs on the thread count: accuracy at the throughput
    # stage's count lets that stage time the graphs accuracy compiled, not recompile them
    threads = torch.get_num_threads()
    with _torch_threads(options.throughput_threads):
        path = _stages(suite, out, options, say, threads)
    say(f"Report: {path}")
    return path


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _stages(suite: Suite, out: Path, options: BenchOptions, say: Say, threads: int) -> Path:
    stages: dict[str, StageRecord] = {}
    with _stage("accuracy", stages):
        result = run_accuracy(suite, out, cache_dir=options.cache_dir,
                              progress=None if options.progress else False,
                              write_points=options.write_points)  # fmt: skip
    release_active()  # a --scheduler local:N cluster idling here would disturb the timing
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    say(f"bench: accuracy {stages['accuracy'].wall_s:.1f} s ({parts})")
    with _stage("throughput", stages):
        note = throughput_stage(suite, out, options)
    say(f"bench: {note} ({stages['throughput'].wall_s:.1f} s)")
    with _stage("impact", stages), _torch_threads(threads):  # no compiled graph: every core
        note = impact_stage(suite, out, options)
    say(f"bench: {note} ({stages['impact'].wall_s:.1f} s)")
    work = stage_work(suite, options)
    write_bench_record(out, suite, stages, work)  # the report shows the stages before it
    with _stage("report", stages):
        path = build_report(out)
    record = write_bench_record(out, suite, stages, work)
    say(f"bench: report {stages['report'].wall_s:.1f} s")
    say("bench: " + bench_line(record))
    say("")
    for line in terminal_leaderboard(out):
        say(line)
    say("")
    return path


# a dataset's training runs (2 heads x 2 losses x 3 seeds), each counted as one fit of all
# the dataset's genes, about its time
TRAINING_RUNS = 12


def stage_work(suite: Suite, options: BenchOptions) -> dict[str, float]:
    """How much work each stage of ``bench`` has on ``suite``, in units that its time grows
    with: accuracy, points x candidate runs (candidates x dtypes x modes, threshold
    families counted once per dtype); throughput, timed rows x elements; impact, per-gene
    fits (candidates x dtypes, each dataset and the synthetic grid) plus the training
    runs; report, points. Only ratios between suites mean anything."""
    nd = len(suite.dtypes)
    points = {f: budget.family_points(fp, nd) for f, fp in suite.families.items()}
    runs = {f: sum(len(suite.modes_for(c)) * nd for c in suite.candidates_of(f))
            + nd * sum(1 for c in suite.thresholds if suite.family_of(c) == f)
            for f in suite.families}  # fmt: skip
    rows = sum(len(suite.modes_for(c)) for c in _timed(suite, options))
    rows *= nd * len(options.throughput_passes) * len(options.throughput_inputs)
    spec = suite.impact
    fits = 0.0
    for fp in suite.families.values():
        per_fit = len(suite.impact_candidates(fp.family)) * len(spec.fit_dtypes(suite.dtypes))
        if fp.dataset is not None:
            fits += per_fit + TRAINING_RUNS * spec.training
        if fp.family == "ztnb" and spec.synthetic is not None:  # a grid cell ~ 1/500 dataset
            fits += per_fit * spec.synthetic[0] * spec.synthetic[1] / 500
    return {
        "accuracy": float(sum(points[f] * runs[f] for f in suite.families)),
        "throughput": float(rows * sum(options.throughput_sizes)) if options.throughput else 0.0,
        "impact": fits if options.impact else 0.0,
        "report": float(sum(points.values())),
    }


def estimate_line(suite: Suite, options: BenchOptions, recorded: Path) -> str | None:
    """``bench``'s time on ``suite``, estimated from a ``bench.json`` recorded here
    (``recorded``) by scaling each stage's time with :func:`stage_work`; None when there is
    no usable record."""
    try:
        doc = json.loads(recorded.read_text(encoding="utf-8"))
        base = {k: (float(v["wall_s"]), float(doc["work"][k])) for k, v in doc["stages"].items()}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    work = stage_work(suite, options)
    total = sum(t * work.get(k, 0.0) / w for k, (t, w) in base.items() if w > 0)
    points = int(work["report"])
    return (f"suite {suite.name}: {points:,} points; about {total / 60:.0f} min, scaled from "
            f"{recorded} (suite {doc.get('suite', '?')}: {doc.get('total_s', 0) / 60:.1f} min)")


@dataclass
class StageRecord:
    """One stage's wall time, and this process's resident high-water mark during it (None
    where the system does not report it)."""

    wall_s: float = 0.0
    peak_rss_bytes: int | None = None


@contextmanager
def _stage(name: str, stages: dict[str, StageRecord]) -> Iterator[None]:
    try:
        memory.reset_peak()
        measured = True
    except OSError:
        measured = False
    record = stages[name] = StageRecord()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        record.wall_s = time.perf_counter() - t0
        if measured:
            record.peak_rss_bytes = memory.status_bytes("VmHWM")


def write_bench_record(
    out: Path, suite: Suite, stages: dict[str, StageRecord], work: dict[str, float]
) -> dict:
    """Write ``out/bench.json`` (atomically): the suite, each stage's wall time and peak
    resident memory, the total, the process's and its largest child's peak, each stage's
    work (:func:`stage_work`, for later estimates); return it."""
    env = environment_info()
    peaks = [r.peak_rss_bytes for r in stages.values() if r.peak_rss_bytes is not None]
    record = {
        "suite": suite.name,
        "suite_sha256": suite.sha256,
        "stages": {k: dataclasses.asdict(r) for k, r in stages.items()},
        "total_s": sum(r.wall_s for r in stages.values()),
        "peak_rss_bytes": max(peaks) if peaks else None,
        "children_peak_rss_bytes": memory.children_peak(),
        "work": work,
        "versions": {k: env.get(k) for k in ("ztbench", "torch", "python")},
    }
    with atomic_path(out / BENCH_RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def _timed(suite: Suite, options: BenchOptions) -> list[str]:
    """The suite's candidates the throughput stage times (less ``throughput_exclude``)."""
    return [c for c in suite.candidates
            if not any(fnmatch.fnmatchcase(c, p) for p in options.throughput_exclude)]  # fmt: skip


def throughput_stage(suite: Suite, out: Path, options: BenchOptions) -> str:
    """Time the suite's candidates (less ``options.throughput_exclude``) at bench's sizes,
    budget and thread count into ``out``; a one-line note."""
    if not options.throughput:
        stale = out / "throughput.csv"
        kept = f"; the report uses the existing {stale}" if stale.exists() else ""
        return f"throughput: skipped (--skip-throughput){kept}"
    timed = _timed(suite, options)
    config = TimingConfig(budget_s=options.throughput_budget_s)
    sizes = {dev: options.throughput_sizes for dev in DEFAULT_SIZES}
    lines = run_suite_throughput(
        suite, out, config, patterns=timed, sizes=sizes, passes=options.throughput_passes,
        inputs=options.throughput_inputs, threads=options.throughput_threads,
        progress=options.progress,
    )  # fmt: skip
    tail = [ln for ln in lines if ln.startswith(("rows:", "threads"))]
    note = f"throughput: wrote {out}/throughput.csv" + (f" ({'; '.join(tail)})" if tail else "")
    goal = _goal_timing(suite, out, options, config)
    return note + (f"; {goal}" if goal else "")


def _goal_timing(suite: Suite, out: Path, options: BenchOptions, config: TimingConfig) -> str:
    """Time the goals' timed loss forms, naive and naive-float64 at
    ``options.goal_speed_size`` on :data:`GOAL_SPEED_INPUTS`, forward+backward, in the
    suite's dtypes, eager, and under torch.compile those the suite compiles on realistic
    inputs (the compiled goal's; log-uniform float64 ZTNB takes seconds per call), into
    ``out``/:data:`~ztbench.core.schema.GOAL_THROUGHPUT_DIR`; a note, or "" when there is
    nothing to time."""
    goals = suite.goals
    if goals is None or options.goal_speed_size is None:
        return ""
    timed = set(_timed(suite, options))
    chosen = [c for c in goals.candidates if c in timed]
    # naive-float64 too: the goals table's floor (what float64 internals alone cost)
    floors = {f"{c.split('/')[0]}/naive-float64" for c in chosen}
    chosen += sorted(floors & timed)
    dtypes = list(suite.dtypes)
    if not chosen or not dtypes:
        return ""
    where = out / GOAL_THROUGHPUT_DIR
    # compiled where the suite compiles (its [candidates.modes] then picks the candidates):
    # a mode the suite does not run would apply to every candidate
    modes = tuple(m for m in ("eager", "compile") if m == "eager" or m in suite.modes)
    # rates only (no memory pass), and one round where a call outlasts the budget: the
    # float64 ZTNB loss on log-uniform inputs takes seconds per call at this size
    config = dataclasses.replace(config, min_rounds=1, memory=False)
    run_suite_throughput(
        suite, where, config, patterns=chosen, dtypes=dtypes, modes=modes,
        sizes={dev: (options.goal_speed_size,) for dev in DEFAULT_SIZES},
        passes=("forward+backward",), inputs=GOAL_SPEED_INPUTS,
        threads=options.throughput_threads, progress=options.progress,
        keep=lambda job: job.mode == "eager" or job.inputs == SPEED_GOAL_INPUTS,
    )  # fmt: skip
    return f"speed goals timed at {options.goal_speed_size:g} elements into {where}"


def impact_stage(suite: Suite, out: Path, options: BenchOptions) -> str:
    """Refit each dataset source's genes (per-gene model) with the suite's impact
    candidates of its family (:class:`~ztbench.suite.Impact`) in its impact dtypes, plus
    the synthetic-truth grid when the suite measures ztnb and names one; a one-line note."""
    if not options.impact:
        return "impact: skipped (--skip-impact)"
    spec = suite.impact
    dtypes = [str(d) for d in spec.fit_dtypes(suite.dtypes)]
    frames, digests = [], {}
    for fp in suite.families.values():
        chosen = list(suite.impact_candidates(fp.family))
        if fp.dataset is not None and chosen:
            frame, found = impact_genes_frame(fp.dataset.name, fp.family, "per-gene", chosen,
                                              dtypes, options.cache_dir,
                                              progress=options.progress)  # fmt: skip
            frames.append(frame)
            digests.update(found)
    ztnb = list(suite.impact_candidates("ztnb"))
    if "ztnb" in suite.families and spec.synthetic is not None and ztnb:
        synthetic = (SYNTHETIC_SEED, SYNTHETIC_N, *spec.synthetic)
        frames.append(impact_genes_frame(None, "ztnb", "per-gene", ztnb, dtypes,
                                         options.cache_dir, synthetic,
                                         progress=options.progress)[0])  # fmt: skip
    if not frames:
        return "impact: skipped (the suite has no dataset source and no ztnb points)"
    paths = write_impact(pd.concat(frames, ignore_index=True), out, digests)
    note = f"impact: wrote {paths[0]} and {paths[1]} ({', '.join(dtypes)})"
    if spec.training:
        note += "; " + training_stage(suite, out, options)
    return note


def training_stage(suite: Suite, out: Path, options: BenchOptions) -> str:
    """Train the masked-count model on each dataset source of the suite with the published
    package and the shipped loss of its family (``ztbench impact --model masked``'s
    defaults); a one-line note."""
    frames, digests = [], {}
    for fp in suite.families.values():
        if fp.dataset is None:
            continue
        data = load_dataset(fp.dataset.name)
        digests[data.name] = data.sha256
        cands = [get_candidate(c) for c in masked.DEFAULT_CANDIDATES[fp.family]]
        frames.append(masked.training_impact(data.counts, fp.family, cands, masked.DEFAULTS,
                                             dataset=data.name, progress=options.progress))
    if not frames:
        return "training: no dataset source"
    runs = pd.concat([f[0] for f in frames], ignore_index=True)
    summary = pd.concat([f[1] for f in frames], ignore_index=True)
    paths = masked.write_training(runs, summary, out, masked.DEFAULTS, digests)
    return f"training: wrote {paths[0]} and {paths[1]}"
