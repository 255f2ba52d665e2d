"""The reference engine against independent checks, never against itself.

Each test computes its expectation another way: a closed form, the normalisation of the
distribution, SciPy, a numerical derivative of a different expression, or the other
engine.
"""

import math

import mpmath
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ztbench.reference import compute_references


def refs(family, engine="arb", **cols):
    n = max(np.size(v) for v in cols.values())
    points = {c: np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)) for c, v in cols.items()}
    return compute_references(family, points, engine=engine, cache_dir=False, progress=False)


@pytest.mark.parametrize("engine", ["arb", "mpmath"])
def test_ztpoisson_k1_closed_form(engine):
    # k = 1: NLL = log(lam) ... -log(lam) + log(expm1(lam)) = log(expm1(lam)/lam), computed
    # here with mpmath at 400 digits in that other form.
    lams = [1e-30, 1e-8, 0.5, 1.0, 10.0, 700.0, 1e6]
    out = refs("ztpoisson", engine, k=1.0, lam=lams)
    assert out["certified"].all()
    with mpmath.workdps(400):
        expected = [float(mpmath.log(mpmath.expm1(mpmath.mpf(x)) / mpmath.mpf(x))) for x in lams]
    assert out["nll"].tolist() == expected
    assert out["nll_loss"].tolist() == expected  # lgamma(2) = 0
    assert out["nll"].iloc[0] == 5e-31  # log(expm1(x)/x) = x/2 + O(x^2)


def test_k_zero_has_infinite_nll():
    out = refs("ztnb", k=[0.0, 1.0], mu=2.0, theta=3.0)
    assert out["nll"].iloc[0] == math.inf and out["nll_loss"].iloc[0] == math.inf
    assert math.isfinite(out["nll"].iloc[1])


@pytest.mark.parametrize("lam", [0.1, 3.0, 50.0])
def test_ztpoisson_probabilities_sum_to_one(lam):
    k = np.arange(1, int(lam + 30 * math.sqrt(lam) + 60))
    out = refs("ztpoisson", k=k, lam=lam)
    assert abs(math.fsum(np.exp(-out["nll"])) - 1.0) < 1e-12


@pytest.mark.parametrize(("mu", "theta"), [(1.0, 0.5), (5.0, 10.0), (0.01, 100.0), (20.0, 2.0)])
def test_ztnb_probabilities_sum_to_one(mu, theta):
    k = np.arange(1, 2500)
    out = refs("ztnb", k=k, mu=mu, theta=theta)
    assert abs(math.fsum(np.exp(-out["nll"])) - 1.0) < 1e-12


def test_untruncated_part_agrees_with_scipy_poisson():
    k = np.array([1, 2, 5, 10, 30])
    lam = np.array([0.7, 2.0, 5.5, 9.0, 25.0])
    out = refs("ztpoisson", k=k, lam=lam)
    expected = -stats.poisson.logpmf(k, lam) + np.log1p(-np.exp(-lam))
    np.testing.assert_allclose(out["nll"], expected, rtol=1e-12)


def test_untruncated_part_agrees_with_scipy_nbinom():
    k = np.array([1, 2, 5, 10, 30])
    mu = np.array([0.7, 2.0, 5.5, 9.0, 25.0])
    theta = np.array([0.5, 3.0, 10.0, 1.5, 40.0])
    out = refs("ztnb", k=k, mu=mu, theta=theta)
    p = theta / (theta + mu)
    expected = -stats.nbinom.logpmf(k, theta, p) + np.log1p(-(p**theta))
    np.testing.assert_allclose(out["nll"], expected, rtol=1e-12)


def _ztnb_pow_form(k, mu, theta):
    """The NLL in the naive pow form (not the engines' form), for mpmath.diff."""
    return (
        mpmath.loggamma(theta)
        - mpmath.loggamma(k + theta)
        + mpmath.loggamma(k + 1)
        - theta * mpmath.log(theta)
        + mpmath.log((theta + mu) ** theta - theta**theta)
        - k * mpmath.log(mu)
        + k * mpmath.log(theta + mu)
    )


@pytest.mark.parametrize(
    ("k", "mu", "theta"), [(1, 0.3, 2.0), (4, 7.5, 0.8), (12, 3.0, 40.0), (2, 1e-3, 5.0)]
)
def test_ztnb_gradients_match_numerical_derivative(k, mu, theta):
    out = refs("ztnb", k=k, mu=mu, theta=theta).iloc[0]
    with mpmath.workdps(60):
        m, t = mpmath.mpf(mu), mpmath.mpf(theta)
        d_mu = mpmath.diff(lambda x: _ztnb_pow_form(k, x, t), m)
        d_theta = mpmath.diff(lambda x: _ztnb_pow_form(k, m, x), t)
    assert out["d_mu"] == pytest.approx(float(d_mu), rel=1e-14)
    assert out["d_theta"] == pytest.approx(float(d_theta), rel=1e-14)


@pytest.mark.parametrize(("k", "lam"), [(1, 1e-5), (3, 2.0), (40, 38.5), (1, 60.0)])
def test_ztpoisson_gradient_matches_numerical_derivative(k, lam):
    out = refs("ztpoisson", k=k, lam=lam).iloc[0]
    with mpmath.workdps(60):
        f = lambda x: -k * mpmath.log(x) + mpmath.log(mpmath.exp(x) - 1)  # noqa: E731
        expected = float(mpmath.diff(f, mpmath.mpf(lam)))
    assert out["d_lam"] == pytest.approx(expected, rel=1e-14)


def _hard_points(family: str, n: int, seed: int) -> pd.DataFrame:
    """Log-uniform points over the whole domain plus the named hard regions."""
    rng = np.random.default_rng(seed)

    def logu(lo, hi, size):
        return np.exp(rng.uniform(np.log(lo), np.log(hi), size))

    k = np.floor(logu(1, 1e7, n))
    if family == "ztpoisson":
        lam = logu(1e-30, 1e9, n)
        edge_k = np.array([1, 1, 1e7, 1e7, 1e6, 1, 5])
        edge_lam = np.array([1e-30, 1e9, 1e7, 9999999.5, 1e6 + 0.5, 1e-12, 5.0])
        near = np.floor(logu(10, 1e7, 200))  # k close to lam
        return pd.DataFrame(
            {
                "k": np.concatenate([k, edge_k, near]),
                "lam": np.concatenate([lam, edge_lam, near * (1 + rng.uniform(-1e-3, 1e-3, 200))]),
            }
        )
    mu = logu(1e-30, 1e9, n)
    theta = logu(1e-12, 1e10, n)
    edges = [
        (1, 1e-30, 1e10),
        (1, 1e-30, 1e-12),
        (1, 1e9, 1e10),
        (1, 1e9, 1e-12),
        (1e7, 1e9, 1e10),
        (1e7, 1e-30, 1e-12),
        (1e7, 1e7, 1e10),
        (2, 1e-3, 31.6),
        (1, 1.0, 100.0),
    ]
    e = np.array(edges, dtype=float).T
    tiny_mu_big_theta = (np.floor(logu(1, 100, 100)), logu(1e-30, 1e-6, 100), logu(1e6, 1e10, 100))
    return pd.DataFrame(
        {
            "k": np.concatenate([k, e[0], tiny_mu_big_theta[0]]),
            "mu": np.concatenate([mu, e[1], tiny_mu_big_theta[1]]),
            "theta": np.concatenate([theta, e[2], tiny_mu_big_theta[2]]),
        }
    )


@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_arb_and_mpmath_agree_exactly_over_the_domain(family):
    points = _hard_points(family, 1900, seed=7)
    assert len(points) >= 2000
    a = compute_references(family, points, engine="arb", cache_dir=False, progress=False)
    m = compute_references(family, points, engine="mpmath", cache_dir=False, progress=False)
    assert a["certified"].all() and m["certified"].all()
    pd.testing.assert_frame_equal(a, m, check_exact=True)


@pytest.mark.parametrize(
    ("cols", "needle"),
    [
        ({"k": [1.0, -1.0], "lam": [1.0, 1.0]}, "row 1: k"),
        ({"k": [1.0, 2.5], "lam": [1.0, 1.0]}, "row 1: k"),
        ({"k": [1.0, 1.0], "lam": [1.0, 0.0]}, "row 1: lam"),
        ({"k": [1.0, 1.0], "lam": [np.nan, 1.0]}, "row 0: lam"),
        ({"k": [1.0, 1.0], "lam": [1.0, np.inf]}, "row 1: lam"),
    ],
)
def test_invalid_points_name_the_row(cols, needle):
    with pytest.raises(ValueError, match=needle):
        refs("ztpoisson", **cols)


def test_invalid_ztnb_theta_names_the_row():
    with pytest.raises(ValueError, match="row 2: theta"):
        refs("ztnb", k=[1.0, 1.0, 1.0], mu=[1.0, 1.0, 1.0], theta=[1.0, 2.0, -3.0])
