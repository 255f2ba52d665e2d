"""The engines' float conversions round to nearest (ties to even): certification needs it."""

import math

import mpmath
import pytest
from flint import arb, ctx

from ztbench.reference.mpmath_engine import _to_float

ONE_ULP = 2.0**-52
HALF = 2.0**-53  # half an ulp of 1.0
TINY = 2.0**-150  # far below any float64 spacing near 1


@pytest.fixture(autouse=True)
def high_precision():
    saved = ctx.prec
    ctx.prec = 300
    yield
    ctx.prec = saved


CASES = [
    # (terms of the offset from 1, summed exactly at 300 bits; expected float)
    ((HALF, TINY), 1.0 + ONE_ULP),  # just above the midpoint: up
    ((HALF, -TINY), 1.0),  # just below: down
    ((HALF,), 1.0),  # tie: to even (1.0 has an even significand)
    ((3 * HALF,), 1.0 + 2 * ONE_ULP),  # tie between 1+u and 1+2u: to even (1+2u)
]


@pytest.mark.parametrize(("offset_terms", "expected"), CASES)
def test_flint_float_rounds_to_nearest_even(offset_terms, expected):
    exact = arb(1)
    for term in offset_terms:
        exact += arb(term)
    assert float(exact) == expected
    assert float(-exact) == -expected


@pytest.mark.parametrize(("offset_terms", "expected"), CASES)
def test_mpmath_conversion_rounds_to_nearest_even(offset_terms, expected):
    with mpmath.workprec(300):
        exact = mpmath.mpf(1)
        for term in offset_terms:
            exact += mpmath.mpf(term)
        assert _to_float(exact) == expected
        assert _to_float(-exact) == -expected


def test_flint_float_range_ends():
    assert float(arb(2) ** -1074 * arb(0.75)) == 5e-324  # nearest subnormal
    assert float(arb(2) ** -1080) == 0.0  # below half the smallest subnormal
    assert float(arb(2) ** 1100) == math.inf  # past the largest float
