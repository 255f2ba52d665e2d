"""Reference engine on mpmath: agreement of two precisions.

Each quantity is evaluated at p and 2p bits (p = 64 first). It is accepted when both
results round (to nearest) to the same float64; otherwise p doubles and the next pair is
compared, up to ``CAP_BITS``. A quantity never settled keeps the highest-precision result
and the point is marked uncertified. This is the design card's engine: not a proof (two
precisions could agree on a wrong value), but it is independent of arb, and the tests
require the two engines to agree exactly.
"""

from __future__ import annotations

import mpmath
import numpy as np
from mpmath import libmp

from ztbench.reference.formulas import Backend, evaluate_points, start_precision

NAME = "mpmath"
START_BITS = 64
CAP_BITS = 2**14
ALGORITHM = "1"
VERSION = f"mpmath-{mpmath.__version__}/alg-{ALGORITHM}"

BACKEND = Backend(
    num=mpmath.mpf,
    log=mpmath.log,
    log1p=mpmath.log1p,
    exp=mpmath.exp,
    expm1=mpmath.expm1,
    lgamma=mpmath.loggamma,
    digamma=mpmath.digamma,
)


def _to_float(x) -> float:
    """Round an mpf to the nearest float64 (mpmath's own default rounds down)."""
    if not isinstance(x, mpmath.mpf):
        return float("nan")
    return libmp.to_float(x._mpf_, rnd=libmp.round_nearest)


def _at(formula, args: tuple, prec: int) -> list[float]:
    with mpmath.workprec(prec):
        return [_to_float(v) for v in formula(BACKEND, *args)]


def _point(
    family: str, formula, args: tuple, nq: int, hint: tuple[float, ...]
) -> tuple[list[float], bool]:
    prec = start_precision(family, args[0], hint, START_BITS)
    low = _at(formula, args, prec)
    out: list[float] = [0.0] * nq
    pending = list(range(nq))
    while True:
        high = _at(formula, args, 2 * prec)
        still = []
        for i in pending:
            if low[i] == high[i]:
                out[i] = high[i]
            else:
                still.append(i)
        pending = still
        if not pending:
            return out, True
        prec *= 2
        if 2 * prec > CAP_BITS:
            for i in pending:
                out[i] = high[i]
            return out, False
        low = high


def evaluate_chunk(
    family: str, k: np.ndarray, *params: np.ndarray, log_mask: tuple[bool, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Same contract as :func:`ztbench.reference.arb_engine.evaluate_chunk`."""
    return evaluate_points(_point, family, k, params, log_mask)
