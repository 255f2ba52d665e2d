"""The last resort of the float64 refinement (ztbench.loss.last_resort) and the shipped
loss at the points where the double-double refinement alone was hundreds to thousands of
ulp off (2^64 .. 2^74-fold cancellations found by adversarial searches), against mpmath
at 600 bits with the analytic derivatives written out here."""

from __future__ import annotations

import loss_references
import mpmath as mp
import numpy as np
import pytest
import torch

from ztbench.core.metrics import ulp_error
from ztbench.loss import last_resort as L
from ztbench.loss import zt_negbin_nll
from ztbench.loss.dd import ztnb as N

F64 = torch.float64
Point = tuple[float, float, float]

# (k, mu, theta) and the quantity whose double-double result was far off
CANCELLING: list[tuple[Point, str]] = [
    ((5.0, 929.0906706134333, 3.507471580894351e-08), "value"),  # 342 ulp
    ((125.0, 74.77387562598409, 0.14612505133981604), "d_mu"),  # 1247 ulp
    ((6521.0, 1340761.9849631316, 0.10482328956878444), "d_theta"),  # 4697 ulp
    ((21.0, 20.999999979605533, 877.0255162698197), "d_mu"),  # 7 ulp (mu ~ k)
]
# the documented domain's corners and an exact zero (d_mu at theta = 1, mu = k - 1)
EXTREMES: list[Point] = [
    (1e7, 1e9, 1e10), (1.0, 1e-30, 1e-12), (1e7, 1e-30, 1e-12), (1.0, 1e9, 1e10),
    (1e7, 1e9, 1e-12), (3.0, 2.0, 1.0), (2.0, 1.0, 1e10),
]  # fmt: skip


def _reference(k: float, mu: float | mp.mpf, theta: float | mp.mpf) -> dict:
    """Value, full value, d/dmu, d/dtheta at 600 bits as floats (``*_mp``: the derivatives
    unrounded, for the chain rule of log-parameters)."""
    ref = loss_references.ztnb(k, mu, theta, prec=600)
    out = {q: float(v) for q, v in ref.items()}
    out.update(d_mu_mp=ref["d_mu"], d_theta_mp=ref["d_theta"])
    return out


def _ulp(computed: float, reference: float) -> float:
    return float(np.asarray(ulp_error(np.array([computed]), np.array([reference]), "float64"))[0])


def _t(x: float) -> torch.Tensor:
    return torch.tensor([x], dtype=F64)


EXACT = {
    "value": L.ztnb_value_exact,
    "full": L.ztnb_full_value_exact,
    "d_mu": L.ztnb_dmu_exact,
    "d_theta": L.ztnb_dtheta_exact,
}


@pytest.mark.parametrize("point", [p for p, _ in CANCELLING] + EXTREMES)
def test_decimal_evaluation_is_correctly_rounded(point: Point) -> None:
    """Certified to 2^-62 relative before the rounding: at most half an ulp, so (away from
    ties) the float64 nearest the exact value; 1 ulp is allowed for a tie."""
    ref = _reference(*point)
    for name, fn in EXACT.items():
        got = fn(*(_t(v) for v in point)).item()
        assert _ulp(got, ref[name]) <= 1.0, (name, point, got, ref[name])


def test_exact_zero_comes_out_as_zero() -> None:
    """d/dmu at theta = 1, mu = k - 1 is exactly 0: the precision loop ends on the absolute
    bound and gives 0, not a residue."""
    assert L.ztnb_dmu_exact(_t(3.0), _t(2.0), _t(1.0)).item() == 0.0


def test_exact_zero_of_the_value_at_an_integer_point() -> None:
    """k = 3, mu = theta = 4: the loss is log(6 * 2^7 * 15 / (720 * 16)) = log 1 = 0, hit by
    bfloat16 and float32 inputs on realistic data. Float64's goal gives exactly 0 (the
    precision raised to its absolute bound), the narrow goal a residue below 2^-160 (at
    a quarter of the digits), which float32 and bfloat16 round to 0; the shipped loss is
    0 in all three."""
    point = (_t(3.0), _t(4.0), _t(4.0))
    assert float(loss_references.ztnb(3.0, 4.0, 4.0, prec=600)["value"]) == 0.0
    assert L.ztnb_value_exact(*point).item() == 0.0
    assert abs(L.ztnb_value_exact(*point, L.NARROW).item()) <= 2.0**-160
    for dtype in (F64, torch.float32, torch.bfloat16):
        k, mu, th = (t.to(dtype) for t in point)
        assert zt_negbin_nll(k, mu, th, reduction="none").item() == 0.0, dtype


@pytest.mark.parametrize("point", [p for p, _ in CANCELLING] + EXTREMES)
def test_narrow_goal_within_its_relative_bound(point: Point) -> None:
    """The goal of results of float32 precision or less: within 2^-40 relative (plus the
    float64 rounding) of the exact value, or within 2^-160 absolute."""
    ref = _reference(*point)
    for name, fn in EXACT.items():
        got = fn(*(_t(v) for v in point), L.NARROW).item()
        exact = ref[name]
        allowed = max(2.0**-40 * abs(exact) + 2.0**-53 * abs(exact), 2.0**-160)
        assert abs(got - exact) <= allowed, (name, point, got, exact)


@pytest.mark.parametrize(("point", "quantity"), CANCELLING)
def test_double_double_alone_is_not_certified_there(point: Point, quantity: str) -> None:
    """The refinement's flags send these points to the last resort: the condition number of
    the double-double result exceeds the float64 goal's factor (L.FLOAT64.factor)."""
    k, mu, th = (_t(v) for v in point)
    if quantity == "value":
        cond = N.ztnb_value_condition(k, mu, th, N.ztnb_value_dd(k, mu, th))
    elif quantity == "d_mu":
        refined = N.ztnb_dmu_dd(k, mu, th)
        cond = N.ztnb_dmu_dd_magnitude(k, mu, th, refined) / refined.abs()
    else:
        cond = N.ztnb_dtheta_condition(k, mu, th, N.ztnb_dtheta_dd(k, mu, th))
    assert L.needs_last_resort(cond).all()


@pytest.mark.parametrize("point", [p for p, _ in CANCELLING] + EXTREMES[:5])
@pytest.mark.parametrize("full", [False, True])
def test_shipped_loss_within_one_ulp_at_the_cancelling_points(point: Point, full: bool) -> None:
    """The shipped loss, both forms, value and autograd gradients: within 1 ulp at these
    points (the goals are 4 ulp for the value, 16 for the gradients)."""
    k, mu, th = (_t(v) for v in point)
    mu.requires_grad_()
    th.requires_grad_()
    v = zt_negbin_nll(k, mu, th, full=full, reduction="none")
    v.sum().backward()
    ref = _reference(*point)
    got = {"full" if full else "value": v.item(), "d_mu": mu.grad.item(),
           "d_theta": th.grad.item()}  # fmt: skip
    for q, g in got.items():
        assert _ulp(g, ref[q]) <= 1.0, (q, full, point, g, ref[q])


@pytest.mark.parametrize("point", [p for p, _ in CANCELLING])
def test_log_parameters_within_goals_near_the_cancelling_points(point: Point) -> None:
    """With log-parameters log(mu), log(theta) (rounded), the loss is meant at the exact
    exp(log p), a neighbour of the cancelling point: value within 4 ulp, d/dlog mu and
    d/dlog theta within 16 ulp of mpmath's at those parameters."""
    k = _t(point[0])
    lm = _t(point[1]).log().requires_grad_()
    lt = _t(point[2]).log().requires_grad_()
    v = zt_negbin_nll(k, log_mu=lm, log_theta=lt, reduction="none")
    v.sum().backward()
    with mp.workprec(600):
        m, t = mp.exp(mp.mpf(lm.item())), mp.exp(mp.mpf(lt.item()))
        ref = _reference(point[0], m, t)
        d_lmu, d_lth = float(m * ref["d_mu_mp"]), float(t * ref["d_theta_mp"])
    assert _ulp(v.item(), ref["value"]) <= 4.0
    assert _ulp(lm.grad.item(), d_lmu) <= 16.0
    assert _ulp(lt.grad.item(), d_lth) <= 16.0
