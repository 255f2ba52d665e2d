"""Reference engine on python-flint's arb: ball arithmetic with certified rounding.

Each quantity is evaluated as a ball [m - r, m + r] that provably contains the exact
value. The ball is accepted when both of its ends round (to nearest) to the same float64:
that float is then the correctly rounded exact value. Otherwise the point is evaluated
again at twice the working precision, from 64 bits up to ``CAP_BITS``; a quantity still
unsettled there keeps its midpoint and the point is marked uncertified.

Depends on python-flint's ``float(arb)`` rounding to nearest (ties to even), which
tests/reference/test_reference_rounding.py checks for the pinned version.
"""

from __future__ import annotations

import flint
import numpy as np
from flint import arb, ctx

from ztbench.reference.formulas import Backend, evaluate_points, start_precision

NAME = "arb"
START_BITS = 64
CAP_BITS = 2**14
# Bump ALGORITHM when the formulas or the certification rule change: it is part of the
# cache key, so stale references are never reused.
ALGORITHM = "1"
VERSION = f"python-flint-{flint.__version__}/alg-{ALGORITHM}"

BACKEND = Backend(
    num=arb,
    log=arb.log,
    log1p=arb.log1p,
    exp=arb.exp,
    expm1=arb.expm1,
    lgamma=arb.lgamma,
    digamma=arb.digamma,
)


def _point(
    family: str, formula, args: tuple, nq: int, hint: tuple[float, ...]
) -> tuple[list[float], bool]:
    out: list[float] = [0.0] * nq
    pending = list(range(nq))
    prec = start_precision(family, args[0], hint, START_BITS)
    while True:
        ctx.prec = prec
        balls = formula(BACKEND, *args)
        still = []
        for i in pending:
            lo = float(balls[i].lower())
            if lo == float(balls[i].upper()):  # NaN never compares equal: not settled
                # Both ends may be zeros of opposite signs (an underflowed result):
                # the midpoint gives the more likely sign.
                out[i] = lo if lo != 0.0 else float(balls[i].mid())
            else:
                still.append(i)
        pending = still
        if not pending:
            return out, True
        if prec >= CAP_BITS:
            for i in pending:
                out[i] = float(balls[i].mid())
            return out, False
        prec *= 2


def evaluate_chunk(
    family: str, k: np.ndarray, *params: np.ndarray, log_mask: tuple[bool, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Certified float64 quantities at each point (see :func:`formulas.evaluate_points`)."""
    saved = ctx.prec
    try:
        return evaluate_points(_point, family, k, params, log_mask)
    finally:
        ctx.prec = saved
