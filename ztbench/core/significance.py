"""When a difference between trainings is more than seed noise (torch-free)."""

from __future__ import annotations

import math

SEED_SIGNIFICANCE = 3.0
"""A difference between two trainings is beyond seed noise when its mean over paired seeds
exceeds this many standard deviations of the per-seed differences."""


def exceeds_seed_noise(diff_mean: float, diff_std: float) -> bool:
    """|diff_mean| > :data:`SEED_SIGNIFICANCE` x diff_std, both finite (False otherwise:
    one seed gives no spread)."""
    finite = math.isfinite(diff_mean) and math.isfinite(diff_std)
    return bool(finite and abs(diff_mean) > SEED_SIGNIFICANCE * diff_std)
