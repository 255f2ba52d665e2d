"""Floats that JSON cannot hold, one convention for every JSON file ztbench writes.

JSON has no infinity or NaN. ztbench writes +inf and -inf as the strings ``"inf"`` and
``"-inf"`` and NaN as ``null`` (summary.json, throughput.json and the gate's baseline);
:func:`decode_float` reads them back. A reader that sees ``null`` where a number belongs
knows it was NaN (not measured, or undefined), and ``"inf"`` stays distinguishable from it
(a failure: ``max_ulp: "inf"`` with ``failures > 0``).
"""

from __future__ import annotations

import json
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"number {text} is out of the range of float64")
    return x


def loads(text: str | bytes) -> Any:
    """Parse a JSON document as every ztbench reader must: strict, finite, bounded.

    ValueError (one line) for invalid JSON, the non-standard constants ``NaN``/``Infinity``,
    a number that overflows float64 (``1e999`` would read as inf), an integer too long to
    convert, or nesting deeper than the parser's recursion limit.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise ValueError("not valid JSON (nested too deeply)") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except ValueError as exc:  # our two checks, and int() of an overlong integer
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else "bad value"
        raise ValueError(text) from None
