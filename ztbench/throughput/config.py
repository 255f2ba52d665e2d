"""Throughput settings, defaults and result types (torch-free: the CLI's help reads them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ztbench.core.schema import THROUGHPUT_COLUMNS, THROUGHPUT_EXTRA_COLUMNS

COLUMNS = THROUGHPUT_COLUMNS
EXTRA_COLUMNS = THROUGHPUT_EXTRA_COLUMNS
DEFAULT_SIZES: dict[str, tuple[int, ...]] = {
    "cpu": (10**4, 10**6, 10**7),
    "cuda": (10**4, 10**6, 10**7, 10**8),
}
MEMORY_MEASURES: dict[str, str] = {
    "cuda": "torch.cuda.max_memory_allocated above the memory allocated before the call",
    "cpu": "resident-memory high-water mark above the start (Linux VmHWM, after malloc_trim)",
    "peer": "tracemalloc peak of Python/numpy allocations (subprocess memory not seen)",
    "none": "not measured (no /proc/self/clear_refs: not Linux)",
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
    round_s: tuple[float, ...] = ()  # the per-call time of each round


@dataclass
class ThroughputResult:
    """What :func:`run_throughput` produced: the rows and the run's settings."""

    table: pd.DataFrame
    threads: int
    config: TimingConfig
    seed: int
    memory_measures: dict[str, str] = field(default_factory=lambda: dict(MEMORY_MEASURES))
    loadavg: dict[str, list[float] | None] = field(default_factory=dict)
    round_s: list[tuple[float, ...]] = field(default_factory=list)  # per table row


