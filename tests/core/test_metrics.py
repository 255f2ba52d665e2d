"""Error measures against hand-computed cases: ulp, ulp error, bits of error, failures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ztbench.core.dtypes import FORMATS, round_to
from ztbench.core.metrics import (
    abs_error,
    bits_error,
    failures,
    from_ordinals,
    ordinals,
    rel_error,
    step_floats,
    summarise_errors,
    ulp,
    ulp_error,
)

DTYPES = ("float64", "float32", "bfloat16", "float16")
P = {"float64": 53, "float32": 24, "bfloat16": 8, "float16": 11}
INF, NAN = math.inf, math.nan


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("float64", 2.0**-52), ("float32", 2.0**-23), ("bfloat16", 2.0**-7), ("float16", 2.0**-10)],
)
def test_ulp_of_one_and_just_below(dtype: str, expected: float) -> None:
    assert ulp(1.0, dtype) == expected
    assert ulp(-1.0, dtype) == expected
    below = float(step_floats(1.0, dtype, -1))
    assert below < 1.0
    assert ulp(below, dtype) == expected / 2  # [0.5, 1) has half the spacing
    assert ulp(0.75, dtype) == expected / 2
    assert ulp(2.0, dtype) == expected * 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_ulp_subnormal_zero_inf_nan(dtype: str) -> None:
    fmt = FORMATS[dtype]
    sub = fmt.smallest_subnormal
    assert sub == 2.0 ** (fmt.min_exp - P[dtype] + 1)
    assert ulp(fmt.tiny, dtype) == sub  # spacing at tiny equals the subnormal spacing
    assert ulp(fmt.tiny / 3, dtype) == sub
    assert ulp(sub, dtype) == sub
    assert ulp(0.0, dtype) == sub
    assert ulp(2 * fmt.tiny, dtype) == 2 * sub
    assert ulp(INF, dtype) == ulp(fmt.max, dtype) == 2.0 ** (math.frexp(fmt.max)[1] - P[dtype])
    assert math.isnan(ulp(NAN, dtype))


def test_ulp_hand_values() -> None:
    assert ulp(2.0**-126, "float32") == 2.0**-149
    assert ulp(2.0**-14, "float16") == 2.0**-24
    assert ulp(2.0**-126, "bfloat16") == 2.0**-133
    assert ulp(1e-300, "float32") == 2.0**-149
    assert ulp(65504.0, "float16") == 32.0
    assert ulp(1e40, "float32") == 2.0**104  # beyond max: ulp of max
    assert ulp(10.0, "float32") == 2.0**-20
    np.testing.assert_array_equal(ulp([1.0, 3.0, 0.0], "float16"), [2.0**-10, 2.0**-9, 2.0**-24])


@pytest.mark.parametrize("dtype", DTYPES)
def test_ulp_is_the_spacing_of_the_format(dtype: str) -> None:
    rng = np.random.default_rng(0)
    fmt = FORMATS[dtype]
    x = round_to(
        np.exp(rng.uniform(math.log(fmt.smallest_subnormal), math.log(fmt.max), 500)), dtype
    )
    x = x[(x > 0) & np.isfinite(x) & (x < fmt.max)]
    np.testing.assert_array_equal(step_floats(x, dtype, 1) - x, ulp(x, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_ordinals_round_trip_and_zero(dtype: str) -> None:
    fmt = FORMATS[dtype]
    x = np.array([0.0, fmt.smallest_subnormal, fmt.tiny, 1.0, -1.0, fmt.max, INF, -INF])
    o = ordinals(x, dtype)
    assert o[0] == 0 and o[1] == 1 and o[2] == 2 ** (P[dtype] - 1)
    assert o[3] == -o[4] and o[6] == o[5] + 1 and o[7] == -o[6]
    assert ordinals(-0.0, dtype) == 0
    np.testing.assert_array_equal(from_ordinals(o, dtype), x)
    assert step_floats(fmt.max, dtype, 5) == INF  # saturates


def test_step_floats_is_nextafter() -> None:
    assert step_floats(10.0, "float64", 1) == np.nextafter(10.0, 11.0)
    assert step_floats(10.0, "float64", -1) == np.nextafter(10.0, 9.0)
    f32 = np.float32(10.0)
    assert step_floats(10.0, "float32", 1) == float(np.nextafter(f32, np.float32(11)))
    assert step_floats(0.0, "float32", -1) == -(2.0**-149)
    assert step_floats(1.0, "bfloat16", 1) == 1.0 + 2.0**-7
    assert step_floats(1.0, "float16", -1) == 1.0 - 2.0**-11


@pytest.mark.parametrize("dtype", DTYPES)
def test_ordinals_match_torch_bits(dtype: str) -> None:
    rng = np.random.default_rng(1)
    x = round_to(rng.standard_normal(200) * 100, dtype)
    t = torch.from_numpy(x).to(getattr(torch, dtype))
    ints = {
        "float64": torch.int64,
        "float32": torch.int32,
        "bfloat16": torch.int16,
        "float16": torch.int16,
    }[dtype]
    bits = t.view(ints).numpy().astype(np.int64)
    mag = bits & ((1 << (t.element_size() * 8 - 1)) - 1)
    np.testing.assert_array_equal(ordinals(x, dtype), np.where(bits < 0, -mag, mag))


def test_ulp_error_fractional_and_negative() -> None:
    assert ulp_error(1.0, 1.0 + 0.3 * 2.0**-23, "float32") == pytest.approx(0.3 / 1.0, rel=1e-6)
    assert ulp_error(1.0, 1.0 + 2.0**-52, "float64") == 1.0
    assert ulp_error(-1.0, -1.0 - 2.0**-52, "float64") == 1.0
    assert ulp_error(-3.0, -3.0, "float16") == 0.0
    # reference just below 1: measured in the spacing of [0.5, 1)
    assert ulp_error(1.0, 1.0 - 2.0**-25, "float32") == 0.5
    assert ulp_error(10.0, 10.0 + 2**-7, "bfloat16") == 0.125  # ulp(10) = 2**-4 in bf16


def test_ulp_error_nan_inf_conventions() -> None:
    c = np.array([NAN, NAN, 1.0, INF, INF, -INF, INF, -INF, 1.0])
    r = np.array([NAN, 1.0, NAN, INF, 1.0, 1.0, -INF, -INF, INF])
    e = ulp_error(c, r, "float64")
    np.testing.assert_array_equal(e[:8], [0, INF, INF, 0, INF, INF, INF, 0])
    assert np.isfinite(e[8]) and e[8] > 1e15  # finite vs inf reference: finite, huge
    assert not np.isnan(e).any()


def test_ulp_error_reference_beyond_the_format() -> None:
    # a float32 reference that overflows float32 is +inf in T: inf is exact, max is 1 ulp
    fmax = FORMATS["float32"].max
    assert ulp_error(INF, 1e40, "float32") == 0.0
    assert ulp_error(fmax, 1e40, "float32") == 1.0
    assert ulp_error(-INF, 1e40, "float32") == INF
    assert ulp_error(65504.0, 70000.0, "float16") == 1.0  # 70000 rounds to inf in float16
    assert ulp_error(65504.0, 65519.0, "float16") == pytest.approx(15 / 32)
    assert ulp_error(FORMATS["float64"].max, INF, "float64") == 1.0
    assert not failures(INF, 1e40, "float32")
    assert failures(INF, 1e40)  # without dtype: reference is a finite float64


def test_zero_reference_uses_smallest_subnormal() -> None:
    assert ulp_error(0.0, 0.0, "float32") == 0.0
    assert ulp_error(2.0**-149, 0.0, "float32") == 1.0
    assert ulp_error(-(2.0**-24), 0.0, "float16") == 1.0
    assert ulp_error(1e-30, 0.0, "float32") == pytest.approx(1e-30 / 2.0**-149)
    assert bits_error(2.0**-149, 0.0, "float32") == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_crossing_zero(dtype: str) -> None:
    tiny = FORMATS[dtype].tiny
    # -tiny .. +tiny spans 2 * 2**(p-1) = 2**p floats of spacing smallest_subnormal
    assert ulp_error(-tiny, tiny, dtype) == 2.0 ** P[dtype]
    assert bits_error(-tiny, tiny, dtype) == pytest.approx(math.log2(1 + 2.0 ** P[dtype]))
    assert bits_error(-0.0, 0.0, dtype) == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_bits_error_adjacent_equal_and_nan(dtype: str) -> None:
    x = np.array([1.0, -3.5, 1e-3, FORMATS[dtype].tiny])
    x = round_to(x, dtype)
    nxt = step_floats(x, dtype, 1)
    np.testing.assert_array_equal(bits_error(nxt, x, dtype), 1.0)
    np.testing.assert_array_equal(bits_error(x, x, dtype), 0.0)
    assert bits_error(step_floats(1.0, dtype, 3), 1.0, dtype) == 2.0  # log2(1 + 3)
    assert bits_error(NAN, NAN, dtype) == 0.0
    assert bits_error(NAN, 1.0, dtype) == INF
    assert bits_error(1.0, NAN, dtype) == INF
    assert bits_error(INF, 1.0, dtype) == INF  # failure
    assert bits_error(INF, INF, dtype) == 0.0
    assert bits_error(-INF, INF, dtype) == INF


def test_bits_error_rounds_the_reference_first() -> None:
    # the float64 reference 1 + 2**-30 rounds to 1.0 in float32: computed 1.0 is exact
    assert bits_error(1.0, 1.0 + 2.0**-30, "float32") == 0.0
    assert ulp_error(1.0, 1.0 + 2.0**-30, "float32") == 2.0**-7
    # full float64 range without overflow in the ordinal distance
    assert bits_error(-1.7e308, 1.7e308, "float64") == pytest.approx(64, abs=0.01)


def test_abs_rel_errors() -> None:
    c = np.array([1.5, 0.0, 1.0, INF, INF, NAN, NAN, 2.0])
    r = np.array([1.0, 0.0, 0.0, INF, -INF, NAN, 1.0, 4.0])
    np.testing.assert_array_equal(abs_error(c, r), [0.5, 0, 1, 0, INF, 0, INF, 2])
    np.testing.assert_array_equal(rel_error(c, r), [0.5, 0, INF, 0, INF, 0, INF, 0.5])


def test_failures_mask() -> None:
    c = np.array([1.0, NAN, INF, -INF, NAN, INF])
    r = np.array([2.0, 1.0, 1.0, 1.0, NAN, INF])
    np.testing.assert_array_equal(failures(c, r), [False, True, True, True, False, False])
    np.testing.assert_array_equal(np.isinf(ulp_error(c, r, "float64")), failures(c, r))


def test_summarise_errors() -> None:
    s = summarise_errors(np.array([0.5, 3.0, 1.0, 3.0]))
    assert (s.n, s.failures, s.max_ulp, s.worst) == (4, 0, 3.0, 1)  # first of the ties
    assert s.mean_ulp == pytest.approx(1.875)
    assert s.median_ulp == 3.0  # upper of the two middle values, never interpolated
    assert s.rms_ulp == pytest.approx(math.sqrt((0.25 + 9 + 1 + 9) / 4))

    e = np.array([0.5, INF, 2.0, INF, 1e9])
    s = summarise_errors(e)
    assert s.failures == 2 and s.max_ulp == INF and s.worst == 1  # failure beats 1e9
    assert s.mean_ulp == pytest.approx((0.5 + 2.0 + 1e9) / 3)  # finite ones only
    assert s.p99_ulp == INF

    s = summarise_errors([1.0, 2.0], failures=[False, True], bits_err=[0.5, 3.0])
    assert s.failures == 1 and s.worst == 1 and s.max_bits == INF and s.mean_bits == 0.5
    assert summarise_errors(np.array([NAN])).failures == 1  # nothing broken can hide

    empty = summarise_errors(np.array([]))
    assert empty.n == 0 and empty.worst == -1 and math.isnan(empty.max_ulp)
    assert set(empty.as_dict()) >= {"n", "failures", "max_ulp", "p99_ulp", "median_ulp"}


def test_vectorised_shapes() -> None:
    c = np.ones((3, 4))
    assert ulp_error(c, 1.0, "float32").shape == (3, 4)
    assert bits_error(c, np.ones(4), "bfloat16").shape == (3, 4)
    assert ulp(np.float64(1.0), "float16").shape == ()


def test_summary_mean_and_rms_do_not_overflow():
    # a zero reference makes errors of ~1e308 ulp; their mean and RMS must stay finite
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summarise_errors(np.array([1e308, 1e308, 3.0]))
    assert s.mean_ulp == pytest.approx(1e308 * (2 / 3) + 1.0, rel=1e-15)
    assert s.rms_ulp == pytest.approx(1e308 * math.sqrt(2 / 3), rel=1e-15)
