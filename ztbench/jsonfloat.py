"""Floats that JSON cannot hold, one convention for every JSON file ztbench writes.

JSON has no infinity or NaN. ztbench writes +inf and -inf as the strings ``"inf"`` and
``"-inf"`` and NaN as ``null`` (summary.json, throughput.json and the gate's baseline);
:func:`decode_float` reads them back. A reader that sees ``null`` where a number belongs
knows it was NaN (not measured, or undefined), and ``"inf"`` stays distinguishable from it
(a failure: ``max_ulp: "inf"`` with ``failures > 0``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def encode(value: Any) -> Any:
    """``value`` as JSON can hold it: numpy scalars as Python scalars, non-finite floats
    by the convention above; anything else unchanged."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return None
        return "inf" if value > 0 else "-inf"
    return value


def decode_float(value: Any) -> float:
    """The float that :func:`encode` wrote; ValueError for anything else (bools included)."""
    if value is None:
        return math.nan
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'must be a number, null, "inf" or "-inf", got {value!r}')
    return float(value)
