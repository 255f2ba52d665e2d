"""ztbench.loss.dd.ztp against mpmath (80 digits) at the hard points of the ZTP loss.

Hard points: the float64 neighbours (0, +-1 .. +-1000 ulp) of the zero crossings of the
value -k log(lam) + log(expm1(lam)) (two per k >= 3) and of d_lam = -k/lam + 1/(1 - e^-lam)
(one per k >= 2), tiny lam, lam in [1, 40], huge lam with k ~ lam/log(lam).
"""

from __future__ import annotations

import math
from functools import cache

import mpmath as mp
import numpy as np
import pytest
import torch

from ztbench.core.metrics import step_floats, ulp_error
from ztbench.loss.dd import arith as A
from ztbench.loss.dd import ztp as D
from ztbench.loss.kernels import ztp_kernel

DPS = 80
OFFSETS = (0, 1, 2, 3, 5, 10, 30, 100, 300, 1000)
VALUE_ULP_MAX = 4.0
GRAD_ULP_MAX = 16.0
SMALL_KS = tuple(range(3, 51))
LARGE_KS = (100, 1000, 10**4, 10**5, 10**6, 10**7)


def _value_ref(k: float, lam: float) -> mp.mpf:
    x = mp.mpf(lam)
    return -k * mp.log(x) + mp.log(mp.expm1(x))


def _grad_ref(k: float, lam: float) -> mp.mpf:
    x = mp.mpf(lam)
    # (x - k)/x, not -k/x + 1/(1 - e^-x): at x = k the latter cancels e^-x against 1
    return (x - k) / x + 1 / mp.expm1(x)


def _neighbours(root: mp.mpf) -> list[float]:
    """The float64 nearest ``root`` first, then its neighbours OFFSETS floats either side."""
    steps = [0] + [sign * off for off in OFFSETS if off for sign in (1, -1)]
    return step_floats(float(root), "float64", steps).tolist()


def _value_roots(k: int) -> list[mp.mpf]:
    """The two lam > 0 with -k log(lam) + log(expm1(lam)) = 0 (k >= 3)."""
    f = lambda x: -k * mp.log(x) + mp.log(mp.expm1(x))  # noqa: E731
    # the minimum is at lam_min with lam_min / (1 - e^-lam_min) = k, lam_min in (k-1, k)
    lam_min = mp.findroot(
        lambda x: x / (-mp.expm1(-x)) - k, (max(k - 1.0, 1.0), k), solver="anderson"
    )
    hi = mp.mpf(2) * k * mp.log(k) + 10
    return [
        mp.findroot(f, (mp.mpf(1), lam_min), solver="anderson"),
        mp.findroot(f, (lam_min, hi), solver="anderson"),
    ]


def _grad_root(k: int) -> mp.mpf:
    """lam with lam / (1 - e^-lam) = k (k >= 2), in (k - 1, k)."""
    return mp.findroot(
        lambda x: x / (-mp.expm1(-x)) - k, (mp.mpf(k - 1) + mp.mpf(1e-9), k), solver="anderson"
    )


@cache
def _sets() -> dict[str, list[tuple[float, float]]]:
    with mp.workdps(DPS):
        vroots = [
            (k, lam) for k in SMALL_KS + LARGE_KS for r in _value_roots(k) for lam in _neighbours(r)
        ]
        groots = [
            (k, lam)
            for k in (*range(2, 51), 100, 10**4, 10**7)
            for lam in _neighbours(_grad_root(k))
        ]
    tiny = [
        (k, lam)
        for k in (1, 2, 3, 10, 1000, 10**7)
        for lam in (1e-30, 1e-20, 1e-10, 1e-5, 0.01, 0.1, 0.5, 0.999, 1.0)
    ]
    mid = [(k, 1.0 + 39.0 * i / 97.0) for k in (1, 2, 3, 5, 8, 13, 20, 30, 40) for i in range(98)]
    huge = []
    for lam in (1e6, 3.3e6, 1e7, 1e8, 4.4e8, 1e9):
        k0 = round(lam / math.log(lam))
        huge += [(float(k), lam) for k in range(k0 - 3, k0 + 4)]
    g = torch.Generator().manual_seed(7)
    n = 800
    k_dom = torch.floor(
        torch.exp(torch.rand(n, dtype=torch.float64, generator=g) * math.log(1e7 + 1))
    )
    lam_dom = torch.exp(
        math.log(1e-30) + torch.rand(n, dtype=torch.float64, generator=g) * math.log(1e39)
    )
    # where the crossings are: k, lam <= 1e3
    k_low = torch.floor(torch.exp(torch.rand(n, dtype=torch.float64, generator=g) * math.log(1e3)))
    lam_low = torch.exp(torch.rand(n, dtype=torch.float64, generator=g) * math.log(1e3))
    # lam < 1 (the claim "no cancellation that matters below lam = 1", measured)
    k_b = torch.floor(torch.exp(torch.rand(n, dtype=torch.float64, generator=g) * math.log(20)))
    lam_b = torch.exp(math.log(1e-30) * torch.rand(n, dtype=torch.float64, generator=g) ** 4)
    below1 = list(zip(k_b.tolist(), lam_b.tolist(), strict=True))
    rand = list(
        zip(torch.cat([k_dom, k_low]).tolist(), torch.cat([lam_dom, lam_low]).tolist(), strict=True)
    )
    return {
        "value_roots": vroots,
        "grad_roots": groots,
        "tiny": tiny,
        "mid": mid,
        "huge": huge,
        "random": rand,
        "below1": below1,
    }


def _ulp_err(computed: torch.Tensor, refs: list[mp.mpf]) -> list[float]:
    """float64 ulp errors (:func:`ztbench.core.metrics.ulp_error`) against mpmath references."""
    ref = np.array([float(r) for r in refs], dtype=np.float64)
    return ulp_error(computed.numpy(), ref, "float64").tolist()


@cache
def _measure(name: str) -> dict[str, list[float]]:
    pts = _sets()[name]
    k = torch.tensor([p[0] for p in pts], dtype=torch.float64)
    lam = torch.tensor([p[1] for p in pts], dtype=torch.float64)
    with mp.workdps(DPS):
        vref = [_value_ref(*p) for p in pts]
        gref = [_grad_ref(*p) for p in pts]
    with mp.workdps(DPS + 30):  # certify: a higher precision rounds to the same float64
        assert [float(r) for r in vref] == [float(_value_ref(*p)) for p in pts]
        assert [float(r) for r in gref] == [float(_grad_ref(*p)) for p in pts]
    v64, g64 = ztp_kernel(k, lam, True)
    flag_v, flag_g = D.ztp_cancellation(k, lam, v64, g64)
    return {
        "value": _ulp_err(D.ztp_value_dd(k, lam), vref),
        "grad": _ulp_err(D.ztp_grad_dd(k, lam), gref),
        "value64": _ulp_err(v64, vref),
        "grad64": _ulp_err(g64, gref),
        "flag_value": flag_v.tolist(),
        "flag_grad": flag_g.tolist(),
    }


SET_NAMES = ("value_roots", "grad_roots", "tiny", "mid", "huge", "random", "below1")


@pytest.mark.parametrize("name", SET_NAMES)
def test_value_accuracy(name: str) -> None:
    m = _measure(name)
    assert max(m["value"]) <= VALUE_ULP_MAX, max(m["value"])


@pytest.mark.parametrize("name", SET_NAMES)
def test_grad_accuracy(name: str) -> None:
    m = _measure(name)
    assert max(m["grad"]) <= GRAD_ULP_MAX, max(m["grad"])


@pytest.mark.parametrize("name", SET_NAMES)
def test_cancellation_flags_every_bad_float64_point(name: str) -> None:
    m = _measure(name)
    for key, flag in (("value64", "flag_value"), ("grad64", "flag_grad")):
        missed = [
            i for i, (e, f) in enumerate(zip(m[key], m[flag], strict=True)) if e > 2.0 and not f
        ]
        assert not missed, (key, [(_sets()[name][i], m[key][i]) for i in missed[:5]])


def test_float64_below_one_has_no_harmful_cancellation() -> None:
    """lam < 1: both value terms are >= 0 and d_lam cancels at most ~2.4-fold."""
    m = _measure("below1")
    assert max(m["value64"]) <= 2.0
    assert max(m["grad64"]) <= 4.0
    assert not any(m["flag_value"])


def test_root_sets_are_hard_for_float64() -> None:
    """The sets exercise what they should: float64 is far off at the crossings."""
    assert max(_measure("value_roots")["value64"]) > 100
    assert max(_measure("grad_roots")["grad64"]) > 16


def test_error_free_transforms() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(1000, dtype=torch.float64, generator=g) * 1e3
    b = torch.randn(1000, dtype=torch.float64, generator=g) * 1e-3
    for (s, e), op in ((A.two_sum(a, b), "add"), (A.two_prod(a, b), "mul")):
        for ai, bi, si, ei in zip(a.tolist(), b.tolist(), s.tolist(), e.tolist(), strict=True):
            exact = mp.mpf(ai) + mp.mpf(bi) if op == "add" else mp.mpf(ai) * mp.mpf(bi)
            assert mp.mpf(si) + mp.mpf(ei) == exact


def test_dd_log_and_exp() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.exp(torch.empty(300, dtype=torch.float64).uniform_(-70, 21, generator=g))
    hi, lo = A.dd_log(x)
    y = torch.empty(300, dtype=torch.float64).uniform_(1, 40, generator=g)
    eh, el = A.dd_exp_neg(y)
    with mp.workdps(DPS):
        for xi, h, low in zip(x.tolist(), hi.tolist(), lo.tolist(), strict=True):
            r = mp.log(xi)
            assert abs(mp.mpf(h) + low - r) <= mp.mpf(2) ** -104 * abs(r)
        for yi, h, low in zip(y.tolist(), eh.tolist(), el.tolist(), strict=True):
            r = mp.exp(-mp.mpf(yi))
            assert abs(mp.mpf(h) + low - r) <= mp.mpf(2) ** -102 * r


def test_shapes_and_broadcast() -> None:
    k = torch.tensor([[3.0], [7.0]], dtype=torch.float64)
    lam = torch.tensor([0.5, 4.5, 1e9], dtype=torch.float64)
    assert D.ztp_value_dd(k, lam).shape == (2, 3)
    assert D.ztp_grad_dd(k, lam).shape == (2, 3)
    assert torch.isfinite(D.ztp_value_dd(k, lam)).all()
    assert torch.isfinite(D.ztp_grad_dd(k, lam)).all()


def main() -> None:  # pragma: no cover - measurement helper
    for name in SET_NAMES:
        m = _measure(name)
        print(
            f"{name:12s} n={len(m['value']):5d} value {max(m['value']):7.2f} ulp "
            f"grad {max(m['grad']):7.2f} ulp | float64 value {max(m['value64']):9.1f} "
            f"grad {max(m['grad64']):9.1f}"
        )


if __name__ == "__main__":  # pragma: no cover
    main()
