"""Timing one call: rounds, the median and min, peak memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import statistics
import time
import tracemalloc
from collections.abc import Callable
from functools import cache
from typing import Any

import torch

from ztbench.io.memory import reset_peak, status_bytes
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
    return Timing(statistics.median(times), min(times), len(times), calls, first, tuple(times))


def peak_bytes(call: Callable[[], Any], device: str, peer: bool = False) -> tuple[float, str]:
    """Peak bytes allocated during one ``call`` above the start, and the method's key.

    Keys index :data:`MEMORY_MEASURES`: ``cuda``, ``cpu`` (the resident high-water mark,
    :func:`_resident_peak`), ``peer`` (tracemalloc) or ``none``.
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
    return _resident_peak(call)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _resident_peak(call: Callable[[], Any]) -> tuple[float, str]:
    """The process's resident-memory high-water mark during ``call`` above its resident
    size at the start (Linux): O(1), whatever the number of allocations.

    The free memory the C allocator keeps is first given back (``malloc_trim``), so that
    what ``call`` allocates must become resident again, and the mark is reset by writing 5
    to ``/proc/self/clear_refs``; Python's garbage collector waits meanwhile. Resident
    pages can count a freed block that the allocator keeps beside a new one: the measure is
    within a few percent below the true peak and up to about twice it. Elsewhere: NaN,
    measure ``none``.
    """
    trim = _malloc_trim()
    # garbage collected during the call would lower the resident size under the mark
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            if trim is not None:
                trim(0)
            reset_peak()
            start = status_bytes("VmRSS")
        except OSError:
            call()
            return math.nan, "none"
        call()
        return float(max(status_bytes("VmHWM") - start, 0)), "cpu"
    finally:
        if enabled:
            gc.enable()


