"""Candidates in their own parameterisation: inputs rounded as the candidate sees them,
references at the exact value those inputs stand for, gradients w.r.t. its own parameters."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pandas as pd
import pytest
import torch

from ztbench.candidates import load_suite
from ztbench.candidates.base import Candidate
from ztbench.candidates.ztnb import stable
from ztbench.core.dtypes import round_to
from ztbench.core.families import get_family
from ztbench.core.metrics import ordinals
from ztbench.measure.accuracy import _prepare
from ztbench.measure.evaluate import candidate_inputs, evaluate
from ztbench.reference import compute_references


def _exact_loss(k: int, mu: float, log_theta: mpmath.mpf) -> mpmath.mpf:
    """The ZTNB loss at theta = exp(log_theta), written out independently (pow form)."""
    th = mpmath.exp(log_theta)
    m = mpmath.mpf(mu)
    return (mpmath.loggamma(th) - mpmath.loggamma(k + th) - th * mpmath.log(th)
            + mpmath.log((th + m) ** th - th**th) - k * mpmath.log(m)
            + k * mpmath.log(th + m))  # fmt: skip


@pytest.mark.parametrize("engine", ["arb", "mpmath"])
def test_reference_at_the_value_a_log_input_stands_for(engine: str) -> None:
    # log theta rounded to float32 and bfloat16: theta = exp(that) is not a float64
    lt = np.array([round_to(np.float64(math.log(3.5)), "float32"),
                   round_to(np.float64(-2.3), "bfloat16"), 4.0])  # fmt: skip
    k, mu = np.array([1.0, 3.0, 7.0]), np.array([6.0, 0.5, 20.0])
    got = compute_references("ztnb", {"k": k, "mu": mu, "log_theta": lt}, engine=engine,
                             cache_dir=False, log_params=("theta",))  # fmt: skip
    assert list(got.columns) == ["nll", "nll_loss", "d_mu", "d_log_theta", "certified"]
    with mpmath.workdps(60):
        for i in range(3):
            f = lambda v, i=i: _exact_loss(int(k[i]), float(mu[i]), v)  # noqa: E731
            want = f(mpmath.mpf(float(lt[i])))
            slope = mpmath.diff(f, mpmath.mpf(float(lt[i])))  # d/dlog theta, numerically
            assert got["nll_loss"][i] == float(want)
            assert abs(got["d_log_theta"][i] - float(slope)) <= 2e-16 * abs(float(slope))


def _log_theta_candidate() -> Candidate:
    def fn(k, mu, log_theta, threshold=None):  # type: ignore[no-untyped-def]
        return stable(k, mu, torch.exp(log_theta))

    return Candidate(id="ztnb/test-log-theta", family="ztnb", form="loss", description="",
                     provenance="", kind="torch", dtypes=("float64", "float32"), fn=fn,
                     log_params=("theta",))  # fmt: skip


def test_candidate_declares_its_parameterisation() -> None:
    c = _log_theta_candidate()
    assert c.parameterisation == {"mu": "natural", "theta": "log"}
    assert c.columns == ("k", "mu", "log_theta")
    assert c.gradients == ("d_mu", "d_log_theta")
    with pytest.raises(ValueError, match="not a parameter"):
        get_family("ztnb").columns_for(("lam",))


def test_natural_columns_are_converted_then_rounded() -> None:
    c = _log_theta_candidate()
    theta = np.array([0.1, 3.5, 1e6])
    got = candidate_inputs(c, {"k": np.ones(3), "mu": np.full(3, 2.0), "theta": theta},
                           "float32")  # fmt: skip
    assert set(got) == {"k", "mu", "log_theta"}
    np.testing.assert_array_equal(got["log_theta"], round_to(np.log(theta), "float32"))
    own = candidate_inputs(c, got, "float32")  # own columns are taken as they are
    np.testing.assert_array_equal(own["log_theta"], got["log_theta"])
    with pytest.raises(ValueError, match="need the columns"):
        candidate_inputs(c, {"k": np.ones(1), "mu": np.ones(1)}, "float32")


def test_gradient_with_respect_to_the_candidates_own_parameter() -> None:
    c = _log_theta_candidate()
    k, mu, lt = np.array([1.0, 4.0]), np.array([6.0, 0.3]), np.array([1.25, -3.0])
    ev = evaluate(c, {"k": k, "mu": mu, "log_theta": lt}, "float64")
    assert set(ev.grads) == {"d_mu", "d_log_theta"}
    ref = compute_references("ztnb", {"k": k, "mu": mu, "log_theta": lt}, cache_dir=False,
                             log_params=("theta",))  # fmt: skip
    np.testing.assert_allclose(ev.grads["d_log_theta"], ref["d_log_theta"], rtol=1e-13)
    np.testing.assert_allclose(ev.value, ref["nll_loss"], rtol=1e-14)


def test_runner_rounds_the_candidates_own_inputs(tmp_path) -> None:
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(
        'dtypes = ["float32", "bfloat16"]\n[candidates]\ninclude = ["ztnb/stable"]\n'
        "[families.ztnb]\nedges = [[1, 6.0, 3.5], [3, 0.5, 0.1], [2, 100.0, 1e9]]\n"
    )
    suite = load_suite(suite_file)
    fam = get_family("ztnb")
    prepared = _prepare(fam, suite, False, False, ((), ("theta",)))
    for data in prepared[("theta",)]:
        assert list(data.points.columns) == ["k", "mu", "log_theta"]
        want = round_to(np.log(np.array([0.1, 3.5, 1e9])), data.dtype)
        np.testing.assert_array_equal(np.sort(data.points["log_theta"]), np.sort(want))
        ref = compute_references("ztnb", data.points, cache_dir=False, log_params=("theta",))
        pd.testing.assert_frame_equal(data.refs, ref)
        # regions see the natural value that input stands for
        np.testing.assert_allclose(data.natural["theta"], np.exp(data.points["log_theta"]))
    for data in prepared[()]:
        assert list(data.points.columns) == ["k", "mu", "theta"]


def test_log_inputs_at_the_domain_ends_stay_inside(tmp_path) -> None:
    """theta = 1e10 and 1e-12: round_T(log theta) may stand for a value just outside the
    domain; the runner takes the neighbouring float inwards, so the point is measured."""
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(
        'dtypes = ["float64", "float32", "bfloat16"]\n[candidates]\ninclude = ["ztnb/stable"]\n'
        "[families.ztnb]\nedges = [[1, 6.0, 1e10], [3, 0.5, 1e-12]]\n"
    )
    fam = get_family("ztnb")
    for data in _prepare(fam, load_suite(suite_file), False, False, (("theta",),))[("theta",)]:
        assert data.out_of_range == 0 and len(data.points) == 2
        lo, hi = fam.domain["theta"]
        assert ((data.natural["theta"] >= lo) & (data.natural["theta"] <= hi)).all()
        want = round_to(np.log(np.array([1e-12, 1e10])), data.dtype)
        got = np.sort(data.points["log_theta"].to_numpy())
        # at most one float of the dtype from round_T(log theta)
        steps = ordinals(got, data.dtype) - ordinals(want, data.dtype)
        assert np.all(np.abs(steps) <= 1)
