"""Throughput: how fast each candidate runs, relative to a copy timed in the same run.

:func:`run_throughput` times every candidate x dtype x device x mode (eager,
torch.compile) x pass (``forward``, ``forward+backward``) x size and returns one row per
combination (:data:`COLUMNS` first, then :data:`EXTRA_COLUMNS`); :func:`write_throughput`
writes ``throughput.csv``, ``throughput.json`` and ``env.json``.

How a row is measured (:func:`time_call`):

- Inputs: ``size`` points, each column log-uniform over the family's domain (``k`` a
  log-uniform integer), drawn in float64 from a generator seeded by (suite seed, family,
  size) and cast to the dtype (round to nearest, as :func:`ztbench.dtypes.round_to`). The
  domain is clipped to the dtype's normal range (float16: ``[6.1e-5, 65504]``), so inputs
  are finite and non-zero in every dtype. The same float64 points are used for every dtype
  of a device (CPU and CUDA generators differ).
- ``forward``: the candidate under ``torch.no_grad()``. ``forward+backward``: parameters
  with ``requires_grad``, the candidate, then ``torch.autograd.grad(value.sum(), params)``.
- Warm-up: the first call (which compiles, in ``compile`` mode) plus ``warmup`` more calls
  are not timed. ``compile_s`` is the first call's time minus the steady-state median:
  torch.compile's compilation time where it compiled (``dynamic=True`` graphs are cached
  per candidate, grad mode and dtype, so the first size of each compiles and later sizes
  reuse it, showing ~0), and 0.0 in eager mode.
- Rounds: each round runs ``calls_per_round`` calls (grown until a round lasts at least
  ``min_round_s``, so tiny sizes are not timer noise) and gives the time per call; rounds
  continue until ``budget_s`` is spent, at least ``min_rounds`` and at most
  ``max_rounds``. ``median_s`` and ``min_s`` are over rounds. CPU is timed with
  ``time.perf_counter`` (torch CPU ops are synchronous); CUDA with CUDA events recorded
  around the round after a ``torch.cuda.synchronize``.
- Copy floor: in the same run, on the same device and dtype, ``dst.copy_(src)`` of as many
  elements as half the bytes the candidate must move at least (read every input once,
  write every output once: ``forward`` reads k and the parameters and writes the value;
  ``forward+backward`` also writes one gradient per parameter), so the copy reads and
  writes the same total number of bytes. ``ratio_to_copy = median_s / copy_median_s``.
- ``ratio_to_naive = median_s / naive_median_s``, with the family's ``naive`` candidate in
  the same dtype, device, mode, pass and size (NaN where naive was not timed). Both ratios
  are cost multiples: above 1 is slower. The element-rate ratio is the reciprocal.
- ``peak_bytes_per_element``: the high-water mark of memory allocated during one call,
  above what was allocated before it (the inputs are not counted), divided by ``size``.
  CUDA: ``torch.cuda.max_memory_allocated``. CPU: the running sum of the allocations and
  frees that torch's CPU allocator reports to ``torch.profiler`` (``profile_memory``).
  Peers: ``tracemalloc`` (numpy's allocations; memory of a subprocess such as Rscript is
  not seen). The column ``peak_memory_measure`` names the method of each row.
- Threads: ``torch.set_num_threads(threads)`` for the whole run, recorded in every row.
  The system load averages at the start and end of the run are recorded in
  ``throughput.json`` (``settings.loadavg``): timings taken while other processes compete
  for the cores are not comparable.
- Peers (numpy float64, CPU, no autograd) run forward, float64, CPU, eager only, and only
  at sizes up to ``peer_max_size`` (default 10^4: a peer such as R through Rscript must
  not dominate the run). Other combinations are rows with status ``unsupported`` or
  ``skipped`` and the reason.

Whatever a candidate cannot do (dtype or device not supported, missing kernel,
torch.compile failure, an exception while running) becomes a row with status
``unsupported`` or ``failed`` and the reason; the run goes on.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ztbench.candidates.base import Candidate, Unsupported, get_candidate
from ztbench.dtypes import get_format
from ztbench.evaluate import MODES, compile_limits, compiled, first_line, is_missing_kernel
from ztbench.families import get_family
from ztbench.jsonfloat import encode

PASSES: tuple[str, ...] = ("forward", "forward+backward")
COLUMNS: tuple[str, ...] = (
    "family",
    "candidate",
    "dtype",
    "device",
    "mode",
    "pass",
    "size",
    "median_s",
    "min_s",
    "elements_per_s",
    "ratio_to_copy",
    "ratio_to_naive",
    "compile_s",
    "peak_bytes_per_element",
)
EXTRA_COLUMNS: tuple[str, ...] = (
    "status",
    "reason",
    "kind",
    "form",
    "threads",
    "rounds",
    "calls_per_round",
    "copy_median_s",
    "copy_min_s",
    "naive_median_s",
    "peak_memory_measure",
)
DEFAULT_SIZES: dict[str, tuple[int, ...]] = {
    "cpu": (10**4, 10**6, 10**7),
    "cuda": (10**4, 10**6, 10**7, 10**8),
}
MEMORY_MEASURES: dict[str, str] = {
    "cuda": "torch.cuda.max_memory_allocated above the memory allocated before the call",
    "cpu": "torch CPU allocator high-water mark above the start (torch.profiler profile_memory)",
    "peer": "tracemalloc peak of Python/numpy allocations (subprocess memory not seen)",
}


@dataclass(frozen=True)
class TimingConfig:
    """How long and how often to time one measurement (see the module docstring)."""

    budget_s: float = 0.5
    min_rounds: int = 3
    max_rounds: int = 50
    min_round_s: float = 2e-3
    warmup: int = 1
    peer_max_size: int = 10**4
    memory: bool = True


@dataclass(frozen=True)
class Timing:
    """Per-call times over rounds, and the first (warm-up, compiling) call's time."""

    median_s: float
    min_s: float
    rounds: int
    calls_per_round: int
    first_s: float


@dataclass
class ThroughputResult:
    """What :func:`run_throughput` produced: the rows and the run's settings."""

    table: pd.DataFrame
    threads: int
    config: TimingConfig
    seed: int
    memory_measures: dict[str, str] = field(default_factory=lambda: dict(MEMORY_MEASURES))
    loadavg: dict[str, list[float] | None] = field(default_factory=dict)


# ----------------------------------------------------------------------------- inputs


def _seed(seed: int, family: str, size: int) -> int:
    return zlib.crc32(f"{seed}/{family}/{size}".encode()) ^ (seed & 0x7FFFFFFF)


def timing_inputs(
    family: str, dtype: str, device: str, size: int, seed: int = 0
) -> list[torch.Tensor]:
    """Seeded inputs (k, then the parameters), log-uniform over the family's domain.

    Each column is drawn in float64 on ``device`` and cast to ``dtype``; the domain is
    clipped to the dtype's normal range so every input is finite and non-zero.
    """
    fam = get_family(family)
    fmt = get_format(dtype)
    dev = torch.device(device)
    gen = torch.Generator(device=dev)
    gen.manual_seed(_seed(seed, family, size))
    cols = []
    for col in fam.columns:
        lo, hi = fam.domain[col]
        lo, hi = max(lo, 1.0 if col == "k" else fmt.tiny), min(hi, fmt.max)
        u = torch.rand(size, generator=gen, dtype=torch.float64, device=dev)
        if col == "k":  # log-uniform integer in [1, hi]
            x = torch.floor(torch.exp(u * math.log(hi + 1.0))).clamp_(1.0, math.floor(hi))
        else:
            x = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))).clamp_(lo, hi)
        cols.append(x.to(fmt.torch_dtype))
        del u, x
    return cols


def n_outputs(family: str, pass_: str) -> int:
    """Arrays a pass writes at least: the value, plus one gradient per parameter."""
    return 1 + (len(get_family(family).params) if pass_ == "forward+backward" else 0)


def copy_elements(family: str, pass_: str, size: int) -> int:
    """Elements of the copy moving as many bytes as the candidate must (read + write) / 2."""
    moved = len(get_family(family).columns) + n_outputs(family, pass_)
    return (moved * size + 1) // 2


# ------------------------------------------------------------------------------ calls


def make_call(
    candidate: Candidate, mode: str, pass_: str, inputs: Sequence[torch.Tensor]
) -> Callable[[], Any]:
    """A no-argument callable running one ``pass_`` of ``candidate`` on ``inputs``.

    Torch candidates only (peers: :func:`make_peer_call`). ``compile`` uses
    :func:`compiled` (``dynamic=True``, cached per candidate); run it inside
    :func:`compile_limits` so that dynamo does not silently fall back to eager.
    """
    threshold = candidate.threshold
    if mode == "compile":
        cfn = compiled(candidate)
    elif mode == "eager":
        cfn = candidate.fn
    else:
        raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")

    def fn(k: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return cfn(k, *params, threshold=threshold)

    k = inputs[0]
    if pass_ == "forward":
        params = [p.detach() for p in inputs[1:]]

        def forward() -> Any:
            with torch.no_grad():
                return fn(k, *params)

        return forward
    if pass_ == "forward+backward":
        gparams = [p.detach().requires_grad_(True) for p in inputs[1:]]

        def forward_backward() -> Any:
            out = fn(k, *gparams)
            if not out.requires_grad:
                raise RuntimeError("candidate output does not require grad: no backward")
            return torch.autograd.grad(out.sum(), gparams)

        return forward_backward
    raise ValueError(f"unknown pass {pass_!r} (known: {', '.join(PASSES)})")


def make_peer_call(candidate: Candidate, inputs: Sequence[torch.Tensor]) -> Callable[[], Any]:
    """A no-argument callable running a peer forward on float64 CPU copies of ``inputs``."""
    arrays = [np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64) for t in inputs]
    threshold = candidate.threshold
    return lambda: candidate.fn(*arrays, threshold=threshold)


def make_copy(n: int, dtype: str, device: str) -> Callable[[], Any]:
    """``dst.copy_(src)`` of ``n`` elements of ``dtype`` on ``device``: the bandwidth floor."""
    tdtype = get_format(dtype).torch_dtype
    src = torch.ones(n, dtype=tdtype, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


# ----------------------------------------------------------------------------- timing


def _round(call: Callable[[], Any], calls: int, device: torch.device) -> float:
    """Seconds for ``calls`` calls (CUDA: events after a synchronize)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    for _ in range(calls):
        call()
    return time.perf_counter() - t0


def time_call(call: Callable[[], Any], device: str, config: TimingConfig) -> Timing:
    """Time ``call`` after warm-up: median and min per-call seconds over adaptive rounds."""
    dev = torch.device(device)
    first = _round(call, 1, dev)
    for _ in range(config.warmup):
        _round(call, 1, dev)
    calls, t = 1, _round(call, 1, dev)
    while t < config.min_round_s and calls < 1 << 20:
        calls *= int(min(100, max(2, math.ceil(1.2 * config.min_round_s / max(t, 1e-9)))))
        t = _round(call, calls, dev)
    times, spent = [t / calls], t
    while len(times) < config.max_rounds and (
        len(times) < config.min_rounds or spent < config.budget_s
    ):
        t = _round(call, calls, dev)
        times.append(t / calls)
        spent += t
    return Timing(statistics.median(times), min(times), len(times), calls, first)


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (kineto prints 'profiler_start/stop' lines there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_bytes(call: Callable[[], Any], device: str, peer: bool = False) -> tuple[float, str]:
    """Peak bytes allocated during one ``call`` above the start, and the method's key.

    Keys index :data:`MEMORY_MEASURES`: ``cuda``, ``cpu`` (torch.profiler memory events)
    or ``peer`` (tracemalloc).
    """
    if peer:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            call()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return float(peak - start), "peer"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        start = torch.cuda.memory_allocated(dev)
        call()
        torch.cuda.synchronize(dev)
        return float(torch.cuda.max_memory_allocated(dev) - start), "cuda"
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as p:
        call()
    events = [e for e in p.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return float(peak), "cpu"


# ------------------------------------------------------------------------------ runner


@dataclass(frozen=True)
class Job:
    """One row to measure."""

    candidate: Candidate
    dtype: str
    device: str
    mode: str
    pass_: str
    size: int


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
        "median_s": nan,
        "min_s": nan,
        "elements_per_s": nan,
        "ratio_to_copy": nan,
        "ratio_to_naive": nan,
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
        self._inputs_key: tuple[str, str, str, int] | None = None
        self._inputs: list[torch.Tensor] = []
        self._copies: dict[tuple[str, str, int], Timing] = {}

    def inputs(self, family: str, dtype: str, device: str, size: int) -> list[torch.Tensor]:
        key = (family, dtype, device, size)
        if key != self._inputs_key:
            self._inputs = []  # free the previous inputs first
            self._inputs = timing_inputs(family, dtype, device, size, self.seed)
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
        inputs = self.inputs(c.family, job.dtype, job.device, job.size)
        try:
            call = make_peer_call(c, inputs) if peer else make_call(c, job.mode, job.pass_, inputs)
            t = time_call(call, job.device, cfg)
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
            ratio_to_copy=t.median_s / copy.median_s,
        )


def plan(
    candidates: Sequence[Candidate],
    dtypes: Sequence[str],
    devices: Sequence[str],
    modes: Sequence[str],
    passes: Sequence[str],
    sizes: dict[str, Sequence[int]],
    modes_for: Callable[[Candidate], Sequence[str]] | None = None,
) -> list[Job]:
    """Every job, ordered so that inputs (device, dtype, size, family) are built once.

    ``sizes`` maps a device type (``cpu``, ``cuda``) to its sizes; ``modes_for`` (default:
    every mode) restricts the modes of a candidate.
    """
    jobs = []
    for device in devices:
        dev_sizes = sizes.get(torch.device(device).type, ())
        for dtype in dtypes:
            for size in dev_sizes:
                for fam in dict.fromkeys(c.family for c in candidates):
                    for c in (c for c in candidates if c.family == fam):
                        allowed = modes_for(c) if modes_for else modes
                        for mode in (m for m in modes if m in allowed):
                            for pass_ in passes:
                                jobs.append(Job(c, dtype, device, mode, pass_, int(size)))
    return jobs


def _naive_ratios(table: pd.DataFrame) -> None:
    """Fill naive_median_s and ratio_to_naive from the family's naive rows (in place)."""
    keys = ["family", "dtype", "device", "mode", "pass", "size"]
    naive = table[(table["candidate"] == table["family"] + "/naive") & (table["status"] == "ok")]
    ref = naive.set_index(keys)["median_s"]
    idx = pd.MultiIndex.from_frame(table[keys])
    table["naive_median_s"] = ref.reindex(idx).to_numpy(dtype=np.float64)
    table["ratio_to_naive"] = table["median_s"] / table["naive_median_s"]


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
    return ThroughputResult(table, threads, config, seed, loadavg=loadavg)


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
            f"{job.candidate.id} {job.dtype} {job.device} {job.mode} {job.pass_} {job.size:g}",
            refresh=False,
        )
        row = _row(job, threads)
        skip = _skip_reason(job, runner.config)
        if skip is not None:
            row["status"], row["reason"] = skip
        else:
            runner.measure(job, row)
        rows.append(row)


# ----------------------------------------------------------------------------- output


def write_throughput(result: ThroughputResult, out: Path, env: dict[str, Any]) -> list[Path]:
    """Write throughput.csv, throughput.json and env.json into ``out`` (atomically).

    JSON: ``{"columns", "rows" (objects, columns in order; non-finite floats as in
    :mod:`ztbench.jsonfloat`), "settings",
    "peak_memory_measures", "env"}``. Returns the paths written.
    """
    import json

    from ztbench.atomic import atomic_paths

    out = Path(out)
    table = result.table
    csv_path, json_path, env_path = (
        out / "throughput.csv",
        out / "throughput.json",
        out / "env.json",
    )
    cfg = result.config
    doc = {
        "columns": list(table.columns),
        "settings": {
            "threads": result.threads,
            "seed": result.seed,
            "budget_s": cfg.budget_s,
            "min_rounds": cfg.min_rounds,
            "max_rounds": cfg.max_rounds,
            "min_round_s": cfg.min_round_s,
            "warmup": cfg.warmup,
            "peer_max_size": cfg.peer_max_size,
            "loadavg": result.loadavg,
            "ratios": "cost multiples: median_s / copy_median_s and median_s / naive_median_s",
        },
        "peak_memory_measures": result.memory_measures,
        "rows": [{k: encode(v) for k, v in rec.items()} for rec in table.to_dict(orient="records")],
        "env": env,
    }
    with atomic_paths(csv_path, json_path, env_path) as (csv_tmp, json_tmp, env_tmp):
        table.to_csv(csv_tmp, index=False, float_format="%.9g")
        json_tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        env_tmp.write_text(json.dumps(env, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [csv_path, json_path, env_path]


def summary_lines(table: pd.DataFrame) -> list[str]:
    """Short human summary: counts by status and the element-rate ratios to naive."""
    lines = []
    counts = table["status"].value_counts()
    lines.append("rows: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    ok = table[table["status"] == "ok"]
    for _, r in ok.iterrows():
        lines.append(
            f"{r['candidate']:<28} {r['dtype']:<8} {r['device']:<5} {r['mode']:<7} "
            f"{r['pass']:<16} {r['size']:>9.0e}  {r['elements_per_s']:.3g} el/s  "
            f"x{r['ratio_to_copy']:.2f} copy  x{r['ratio_to_naive']:.2f} naive"
        )
    return lines
