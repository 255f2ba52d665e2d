"""Gate tolerances: how much a gated ulp metric may grow before it is a regression.

One type for the suite loader (a suite's ``[gate]`` table) and the gate that applies it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tolerance:
    """How much a gated ulp metric may grow: a regression needs both
    ``now > max_ratio * base`` and ``now - base > min_ulp``. Where the baseline is already
    ``broken_from`` ulp or more (the caller passes 2^(p/2) of the dtype: half the format's
    bits wrong), ``broken_ratio`` replaces a smaller ``max_ratio``: such an error comes
    from a cancellation that amplifies the last bits of torch's math functions, and those
    differ between CPUs (MKL and the C library choose their code by processor: a float32
    formulation at 9e4 ulp on one CPU is at 2.2e5 on another), while the default 4 still
    fails a moved series threshold that makes such a row 5.5 times worse.

    How much a failure count may grow: none from 0; otherwise by at most
    ``failure_slack`` of the baseline's count (the same last bits move a point or two of
    a formulation that already overflows across its overflow boundary)."""

    max_ratio: float = 2.0
    min_ulp: float = 1.0
    failure_slack: float = 0.02
    broken_ratio: float = 4.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_ratio) and self.max_ratio >= 1.0):
            raise ValueError(f"max_ratio must be finite and >= 1, got {self.max_ratio!r}")
        if not (math.isfinite(self.min_ulp) and self.min_ulp >= 0.0):
            raise ValueError(f"min_ulp must be finite and >= 0, got {self.min_ulp!r}")
        if not (math.isfinite(self.failure_slack) and self.failure_slack >= 0.0):
            raise ValueError(f"failure_slack must be finite and >= 0, got {self.failure_slack!r}")
        if not (math.isfinite(self.broken_ratio) and self.broken_ratio >= 1.0):
            raise ValueError(f"broken_ratio must be finite and >= 1, got {self.broken_ratio!r}")

    def failures_regressed(self, base: int, now: int) -> bool:
        """True when the failure count grew from 0, or by more than ``failure_slack * base``."""
        return now > base and (base == 0 or now - base > self.failure_slack * base)

    def regressed(self, base: float, now: float, broken_from: float = math.inf) -> bool:
        """True when ``now`` is worse than ``base`` beyond the tolerance (NaN-safe);
        ``broken_from``: the ulp error from which ``broken_ratio`` applies."""
        if math.isnan(base) or math.isnan(now):
            # A region measured before and not now is a regression; the reverse is new data.
            return math.isnan(now) and not math.isnan(base)
        if math.isinf(base) and math.isinf(now):
            return False
        ratio = max(self.broken_ratio, self.max_ratio) if base >= broken_from else self.max_ratio
        return now > ratio * base and now - base > self.min_ulp

    def improved(self, base: float, now: float) -> bool:
        """True when ``now`` is better than ``base`` beyond the tolerance (NaN-safe)."""
        if math.isnan(base) or math.isnan(now):
            return False
        if math.isinf(base) and math.isinf(now):
            return False
        return base > self.max_ratio * now and base - now > self.min_ulp


@dataclass(frozen=True)
class GateTolerance:
    """The suite's tolerance: a default and per-candidate overrides (by candidate id)."""

    default: Tolerance = field(default_factory=Tolerance)
    per_candidate: Mapping[str, Tolerance] = field(default_factory=dict)

    def for_candidate(self, candidate: str) -> Tolerance:
        """The tolerance that applies to ``candidate`` (its override, else the default)."""
        return self.per_candidate.get(candidate, self.default)
