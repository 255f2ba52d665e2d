"""The point budget: every size a suite or a command line asks for is checked against it
before anything is allocated.

A suite's grid of 1e12 points, a random block of int64-max samples, a threshold range
with a huge ``num`` or a throughput size of 1e15 would otherwise end in an allocation
failure (or hours of work) deep inside a run. Each such size is compared with the budget
first, and past it one line says how many points were asked for and how to raise the
limit (``--max-points N`` on the verbs that take a suite or a size). Memory use then stays
proportional to the budget.

The limit in force is a context variable: :func:`limited` sets it for the duration of a
verb (the CLI does this from ``--max-points``); library callers get the default.
"""

from __future__ import annotations

import argparse
import contextvars
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ztbench.io.errors import positive_int

# Points per suite (all families together). The default suite asks for ~0.3 million;
# ten million points and their references, errors and per-point rows fit in a few GB.
DEFAULT_MAX_POINTS = 10_000_000
# Elements per timed tensor (``throughput --sizes``): the default sizes go up to 1e8 on CUDA.
DEFAULT_MAX_ELEMENTS = 100_000_000

_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("max_points", default=None)


def max_points(default: int = DEFAULT_MAX_POINTS) -> int:
    """The limit in force (set by :func:`limited`), else ``default``."""
    limit = _LIMIT.get()
    return default if limit is None else limit


@contextmanager
def limited(limit: int | None) -> Iterator[None]:
    """Run the body with ``limit`` as the budget (None: keep the default)."""
    token = _LIMIT.set(limit)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def excess(count: float, limit: int | None = None, noun: str = "points") -> str | None:
    """None when ``count`` fits the budget, else the one-line problem to report."""
    limit = max_points() if limit is None else limit
    if count <= limit:
        return None
    return (
        f"asks for {_count_text(count)} {noun}, over the budget of {_count_text(limit)} "
        f"(raise it with --max-points N)"
    )


def _count_text(count: float) -> str:
    if count < 1e30:
        return f"{int(count):,}"
    return f"{count:.3g}" if math.isfinite(count) else "infinitely many"


def add_argument(p: argparse.ArgumentParser, default: int = DEFAULT_MAX_POINTS) -> None:
    """``--max-points N`` on a verb (the CLI applies it with :func:`limited`)."""
    p.add_argument(
        "--max-points",
        type=positive_int,
        default=default,
        metavar="N",
        help=f"refuse to allocate more than N points (default {default:.0e})",
    )


def near_threshold_points(spec: Any, ndtypes: int, family: str) -> int:
    """Points a ``near_thresholds`` spec asks for (before deduplication): per threshold and
    curve, ``2 ulps + 1`` neighbours in each dtype and ``decade`` points, times each k."""
    per_curve = ndtypes * (2 * spec.ulps + 1) + spec.decade
    if family == "ztnb":  # one curve per value of each list of curve points (sum_mu, ...)
        lists = [v for name, v in vars(spec).items() if name not in ("k", "at")]
        curves = sum(len(v) for v in lists if isinstance(v, tuple))
    else:
        curves = 1
    return len(spec.k) * len(spec.at) * curves * per_curve


def grid_points(axis_sizes: Sequence[int]) -> int:
    """Points of a cartesian grid (exact integer product)."""
    return math.prod(int(n) for n in axis_sizes)


def family_points(spec: Any, ndtypes: int) -> int:
    """An upper bound on the points of one family's spec (a :class:`ztbench.suite.FamilyPoints`)."""
    total = sum(grid_points(axis_sizes(g)) for g in spec.grids)
    total += sum(r.n for r in spec.randoms)
    total += len(spec.edges)
    if spec.near_thresholds is not None:
        total += near_threshold_points(spec.near_thresholds, ndtypes, spec.family)
    dataset = getattr(spec, "dataset", None)  # realistic points from a shipped dataset
    if dataset is not None:
        total += int(dataset.n)
    return total


def axis_sizes(grid: Any) -> list[int]:
    """The number of values of each column of a grid spec (a range's ``num``, a list's length)."""
    out = []
    for col in grid.columns.values():
        out.append(len(col) if isinstance(col, tuple) else int(col.num or 1))
    return out
