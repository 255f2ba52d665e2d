"""Timing one call: rounds, the median and min, peak memory.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ztbench.throughput.config import (
    Timing,
    TimingConfig,
)


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


