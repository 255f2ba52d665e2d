"""Each published rule reproduces its published behaviour on both sides of its switch,
including the exact switch point (one test per rule)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ztbench.candidates import get_candidate
from ztbench.measure.evaluate import evaluate
from ztbench.reference import compute_references


def refs(family: str, points: dict[str, np.ndarray]):
    return compute_references(family, points, cache_dir=False, progress=False)


def below(x: float) -> float:
    return float(np.nextafter(x, -np.inf))


def above(x: float) -> float:
    return float(np.nextafter(x, np.inf))


def test_ztpoisson_published_rule() -> None:
    """lam < 10: -k log(lam + 1e-8) + log(exp(lam) - 1 + 1e-8); lam >= 10 (10 included):
    -k log(lam + 1e-8) + lam, gradient -k/(lam + 1e-8) + 1."""
    lam = np.array([0.5, 3.0, below(10.0), 10.0, above(10.0), 25.0])
    k = np.full_like(lam, 3.0)
    ev = evaluate(get_candidate("ztpoisson/published"), {"k": k, "lam": lam}, "float64")
    exact = -k * np.log(lam + 1e-8) + np.log(np.exp(np.minimum(lam, 10.0)) - 1.0 + 1e-8)
    approx = -k * np.log(lam + 1e-8) + lam
    want = np.where(lam < 10.0, exact, approx)
    np.testing.assert_allclose(ev.value, want, rtol=1e-15)
    np.testing.assert_allclose(ev.grads["d_lam"][3:], (-k / (lam + 1e-8) + 1.0)[3:], rtol=1e-15)
    # the jump at the switch is the dropped term log(1 - e^-10) ~ -4.5e-5
    assert abs((ev.value[2] - ev.value[3]) - np.log(-np.expm1(-10.0))) < 1e-12
    # and the threshold family at the published t switches at the same point
    # (on the shipped loss, full NLL: exact below t, log(1 - e^-lam) dropped from t on)
    th = evaluate(get_candidate("ztpoisson/threshold"), {"k": k, "lam": lam}, "float64")
    ref = refs("ztpoisson", {"k": k, "lam": lam})["nll"].to_numpy()
    np.testing.assert_allclose(th.value[:3], ref[:3], rtol=4e-15)
    lgk1 = math.lgamma(4.0)
    np.testing.assert_allclose(th.value[3:], (-k * np.log(lam) + lam + lgk1)[3:], rtol=1e-15)


def _published_code_expected(k, mu, theta):
    """The published code's formula, written independently in numpy (lgamma in float32)."""
    tiny = np.finfo(np.float64).tiny
    mu_t = mu + tiny
    s = theta + mu_t

    def g(z):
        return torch.lgamma(torch.tensor(z, dtype=torch.float32)).double().numpy()

    th_c, s_c = np.minimum(theta, 14.0), np.minimum(s, 15.0)
    trunc = np.where(s > 15.0, theta * np.log(s), np.log(s_c**th_c - th_c**th_c))
    return (
        g(theta)
        - g(k + theta)
        - theta * np.log(theta + tiny)
        + trunc
        - k * np.log(mu_t)
        + (k * np.log(s))
    )


def test_ztnb_published_code_rule() -> None:
    """theta + mu > 15 (strict): theta log(theta + mu); theta + mu <= 15: the pow form with
    theta <= 14 and theta + mu <= 15 clamps; lgamma in float32 even for float64 input."""
    mu = np.array([2.0, 5.0, 5.0, above(15.0) - 10.0, 30.0, 0.3])
    theta = np.array([3.0, below(10.0), 10.0, 10.0, 2.0, 14.5])  # last: clamp theta at 14
    k = np.array([2.0, 1.0, 3.0, 3.0, 7.0, 2.0])
    pts = {"k": k, "mu": mu, "theta": theta}
    ev = evaluate(get_candidate("ztnb/published-code-2024-10"), pts, "float64")
    want = _published_code_expected(k, mu, theta)
    np.testing.assert_allclose(ev.value, want, rtol=1e-13)
    ref = refs("ztnb", pts)["nll_loss"].to_numpy()
    w = theta * np.log1p(mu / theta)
    # exact side (rows 0-2; row 2 is theta + mu = 15 exactly): reference to float32 lgamma
    np.testing.assert_allclose(ev.value[:3], ref[:3], atol=4e-6)
    # approximate side (rows 3-4): off by the dropped -log(1 - e^-w)
    np.testing.assert_allclose(ev.value[3:5] - ref[3:5], -np.log(-np.expm1(-w[3:5])), atol=4e-6)
    # clamped pow (row 5): theta + mu = 14.8 < 15 but theta clamped at 14, visibly wrong
    assert abs(ev.value[5] - ref[5]) > 0.1
    # float32 lgamma: `want` uses float32 lgamma and matches to 1e-13 above; a float64
    # lgamma would differ by ~1e-7 here
    lg64 = torch.lgamma(torch.tensor(k + theta, dtype=torch.float64)).numpy()
    lg32 = torch.lgamma(torch.tensor(k + theta, dtype=torch.float32)).double().numpy()
    assert np.max(np.abs(lg64 - lg32)) > 1e-8


def test_ztnb_published_text_rule() -> None:
    """Approximation when mu + theta > 15 or (mu - 1)(theta - 1) > 15 (both strict), exact
    pow form otherwise."""
    mu = np.array([1.0, 14.0, above(14.0), 4.0, 4.0, 20.0, 0.5])
    theta = np.array([2.0, 1.0, 1.0, 6.0, above(6.0), 1.0, 16.0])
    k = np.array([1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 2.0])
    exact_rows = np.array([True, True, False, True, False, False, False])
    # rows 1/2: mu + theta = 15 exactly / just above; rows 3/4: (mu-1)(theta-1) = 15 / above
    pts = {"k": k, "mu": mu, "theta": theta}
    ev = evaluate(get_candidate("ztnb/published-text"), pts, "float64")
    ref = refs("ztnb", pts)["nll_loss"].to_numpy()
    w = theta * np.log1p(mu / theta)
    np.testing.assert_allclose(ev.value[exact_rows], ref[exact_rows], rtol=1e-12)
    np.testing.assert_allclose(
        (ev.value - ref)[~exact_rows], -np.log(-np.expm1(-w[~exact_rows])), rtol=1e-9
    )
    # mu = 0.5, theta = 16: w = 0.49, the approximation is off by ~1 nat
    assert ev.value[6] - ref[6] > 0.9
    assert all(np.isfinite(g).all() for g in ev.grads.values())


def test_ztnb_threshold_sum_reproduces_published_switch() -> None:
    """ztnb/threshold-sum at its default t = 15 switches where the published code does
    (theta + mu > 15), with the exact truncation term below."""
    mu = np.array([5.0, above(15.0) - 10.0, 0.01])  # theta + mu = 15, next float
    theta = np.array([10.0, 10.0, 100.0])
    k = np.array([2.0, 2.0, 2.0])
    pts = {"k": k, "mu": mu, "theta": theta}
    ev = evaluate(get_candidate("ztnb/threshold-sum"), pts, "float64")
    ref = refs("ztnb", pts)["nll"].to_numpy()  # the threshold families give the full NLL
    w = theta * np.log1p(mu / theta)
    np.testing.assert_allclose(ev.value[0], ref[0], rtol=1e-14)
    np.testing.assert_allclose(ev.value[1:] - ref[1:], -np.log(-np.expm1(-w[1:])), rtol=1e-9)
    # the w switch does not approximate where w is small, whatever theta + mu
    ev_w = evaluate(get_candidate("ztnb/threshold-w"), pts, "float64")
    np.testing.assert_allclose(ev_w.value, ref, rtol=1e-14)
