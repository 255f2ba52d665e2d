"""The throughput run: the plan of jobs, one row per job, the naive ratios.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ztbench.candidates.base import Candidate, Unsupported, get_candidate
from ztbench.candidates.execution import compile_limits, first_line, is_missing_kernel
from ztbench.throughput.config import (
    COLUMNS,
    EXTRA_COLUMNS,
    ThroughputResult,
    Timing,
    TimingConfig,
)
from ztbench.throughput.inputs import (
    copy_elements,
    make_call,
    make_copy,
    make_inputs,
    make_peer_call,
)
from ztbench.throughput.timing import (
    peak_bytes,
    time_call,
)

# each row's round times travel beside the table (not a column of it)
ROUNDS_KEY = "_round_s"


@dataclass(frozen=True)
class Job:
    """One row to measure."""

    candidate: Candidate
    dtype: str
    device: str
    mode: str
    pass_: str
    size: int
    inputs: str = "log-uniform"


def with_naive(candidates: Sequence[Candidate]) -> list[Candidate]:
    """``candidates`` plus each family's ``<family>/naive`` (the ratio's reference) if absent."""
    out = list(candidates)
    ids = {c.id for c in out}
    for fam in dict.fromkeys(c.family for c in candidates):
        try:
            naive = get_candidate(f"{fam}/naive")
        except ValueError:
            continue
        if naive.id not in ids:
            out.insert(next(i for i, c in enumerate(out) if c.family == fam), naive)
            ids.add(naive.id)
    return out


def _skip_reason(job: Job, config: TimingConfig) -> tuple[str, str] | None:
    """(status, reason) when the job is not timed, else None."""
    c = job.candidate
    if job.dtype not in c.dtypes:
        return "unsupported", f"{c.id} supports {', '.join(c.dtypes)} only"
    if c.kind == "peer":
        if job.device != "cpu":
            return "unsupported", f"{c.id} is a CPU-only peer (no device {job.device!r})"
        if job.mode != "eager":
            return "unsupported", f"{c.id} is a peer outside torch: no torch.compile"
        if job.pass_ != "forward":
            return "unsupported", f"{c.id} is a peer without autograd: forward only"
        if job.size > config.peer_max_size:
            return "skipped", f"peers are timed at sizes <= {config.peer_max_size:g} only"
        return None
    dev = torch.device(job.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return "unsupported", "CUDA is not available"
    return None


def _row(job: Job, threads: int) -> dict[str, Any]:
    c = job.candidate
    nan = float("nan")
    return {
        "family": c.family,
        "candidate": c.id,
        "dtype": job.dtype,
        "device": job.device,
        "mode": job.mode,
        "pass": job.pass_,
        "size": job.size,
        "inputs": job.inputs,
        "median_s": nan,
        "min_s": nan,
        "elements_per_s": nan,
        "cost_vs_copy": nan,
        "cost_vs_naive": nan,
        "compile_s": nan,
        "peak_bytes_per_element": nan,
        "status": "ok",
        "reason": "",
        "kind": c.kind,
        "form": c.form,
        "threads": threads,
        "rounds": 0,
        "calls_per_round": 0,
        "copy_median_s": nan,
        "copy_min_s": nan,
        "naive_median_s": nan,
        "peak_memory_measure": "",
    }


class _Runner:
    def __init__(self, config: TimingConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self._inputs_key: tuple[str, str, str, str, int] | None = None
        self._inputs: list[torch.Tensor] = []
        self._copies: dict[tuple[str, str, int], Timing] = {}

    def inputs(self, job: Job) -> list[torch.Tensor]:
        key = (job.inputs, job.candidate.family, job.dtype, job.device, job.size)
        if key != self._inputs_key:
            self._inputs = []  # free the previous inputs first
            self._inputs = make_inputs(*key, seed=self.seed)
            self._inputs_key = key
        return self._inputs

    def copy(self, job: Job) -> Timing:
        dtype = "float64" if job.candidate.kind == "peer" else job.dtype
        n = copy_elements(job.candidate.family, job.pass_, job.size)
        key = (job.device, dtype, n)
        if key not in self._copies:
            call = make_copy(n, dtype, job.device)
            self._copies[key] = time_call(call, job.device, self.config)
            del call
        return self._copies[key]

    def measure(self, job: Job, row: dict[str, Any]) -> None:
        c, cfg = job.candidate, self.config
        peer = c.kind == "peer"
        inputs = self.inputs(job)
        try:
            call = make_peer_call(c, inputs) if peer else make_call(c, job.mode, job.pass_, inputs)
            t = time_call(call, job.device, cfg)
            row[ROUNDS_KEY] = t.round_s
            if cfg.memory:
                peak, how = peak_bytes(call, job.device, peer)
                row["peak_bytes_per_element"] = peak / job.size
                row["peak_memory_measure"] = how
            del call
        except Unsupported as exc:
            row.update(status="unsupported", reason=exc.reason)
            return
        except Exception as exc:
            if job.mode == "compile":
                row.update(status="unsupported", reason=f"torch.compile failed: {first_line(exc)}")
            elif is_missing_kernel(exc):
                row.update(status="unsupported", reason=f"missing kernel: {first_line(exc)}")
            else:
                row.update(status="failed", reason=first_line(exc))
            return
        copy = self.copy(job)
        row.update(
            median_s=t.median_s,
            min_s=t.min_s,
            elements_per_s=job.size / t.median_s,
            compile_s=max(t.first_s - t.median_s, 0.0) if job.mode == "compile" else 0.0,
            rounds=t.rounds,
            calls_per_round=t.calls_per_round,
            copy_median_s=copy.median_s,
            copy_min_s=copy.min_s,
            cost_vs_copy=t.median_s / copy.median_s,
        )


def plan(
    candidates: Sequence[Candidate],
    dtypes: Sequence[str],
    devices: Sequence[str],
    modes: Sequence[str],
    passes: Sequence[str],
    sizes: dict[str, Sequence[int]],
    modes_for: Callable[[Candidate], Sequence[str]] | None = None,
    inputs: Sequence[str] = ("log-uniform",),
) -> list[Job]:
    """Every job, ordered so that inputs (device, dtype, size, input kind, family) are
    built once.

    ``sizes`` maps a device type (``cpu``, ``cuda``) to its sizes; ``modes_for`` (default:
    every mode) restricts the modes of a candidate; ``inputs``: the input kinds
    (:data:`~ztbench.core.schema.INPUT_KINDS`).
    """
    jobs = []
    for device in devices:
        dev_sizes = sizes.get(torch.device(device).type, ())
        for dtype in dtypes:
            for size in dev_sizes:
                for kind in inputs:
                    for fam in dict.fromkeys(c.family for c in candidates):
                        for c in (c for c in candidates if c.family == fam):
                            allowed = modes_for(c) if modes_for else modes
                            for mode in (m for m in modes if m in allowed):
                                for pass_ in passes:
                                    jobs.append(
                                        Job(c, dtype, device, mode, pass_, int(size), kind)
                                    )
    return jobs


def _naive_ratios(table: pd.DataFrame) -> None:
    """Fill naive_median_s and cost_vs_naive from the family's naive rows (in place)."""
    keys = ["family", "dtype", "device", "mode", "pass", "size", "inputs"]
    naive = table[(table["candidate"] == table["family"] + "/naive") & (table["status"] == "ok")]
    ref = naive.set_index(keys)["median_s"]
    idx = pd.MultiIndex.from_frame(table[keys])
    table["naive_median_s"] = ref.reindex(idx).to_numpy(dtype=np.float64)
    table["cost_vs_naive"] = table["median_s"] / table["naive_median_s"]


def run_throughput(
    jobs: Sequence[Job],
    config: TimingConfig | None = None,
    threads: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ThroughputResult:
    """Measure every job; one row per job (:data:`COLUMNS` then :data:`EXTRA_COLUMNS`).

    ``threads``: torch's intra-op thread count for the run (default: the current one), set
    with ``torch.set_num_threads`` and restored afterwards. Never raises for a candidate's
    failure: it becomes the row's ``status``/``reason``.
    """
    config = config or TimingConfig()
    old_threads = torch.get_num_threads()
    threads = threads or old_threads
    torch.set_num_threads(threads)
    runner = _Runner(config, seed)
    rows: list[dict[str, Any]] = []
    load_start = _loadavg()
    try:
        with compile_limits():
            _run_jobs(jobs, runner, threads, progress, rows)
    finally:
        torch.set_num_threads(old_threads)
    table = pd.DataFrame(rows, columns=[*COLUMNS, *EXTRA_COLUMNS])
    _naive_ratios(table)
    loadavg = {"start": load_start, "end": _loadavg()}
    round_s = [tuple(r.get(ROUNDS_KEY, ())) for r in rows]
    return ThroughputResult(table, threads, config, seed, loadavg=loadavg, round_s=round_s)


def _loadavg() -> list[float] | None:
    """The 1, 5, 15-minute load averages (other processes competing for the CPU), or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _run_jobs(
    jobs: Sequence[Job], runner: _Runner, threads: int, progress: bool, rows: list
) -> None:
    from tqdm import tqdm

    bar = tqdm(jobs, desc="throughput", unit="row", file=sys.stderr, disable=not progress)
    for job in bar:
        bar.set_postfix_str(
            f"{job.candidate.id} {job.dtype} {job.device} {job.mode} {job.pass_} "
            f"{job.size:g} {job.inputs}",
            refresh=False,
        )
        row = _row(job, threads)
        skip = _skip_reason(job, runner.config)
        if skip is not None:
            row["status"], row["reason"] = skip
        else:
            runner.measure(job, row)
        rows.append(row)


