"""Every forward path of the shipped loss (ztbench.loss.paths.Path), for each family, the loss
form and the full form, natural and log parameters: inputs that make choose_path pick the
path, a check that the call ran it, and value and gradients against mpmath.

The reference is computed here, at 60 digits, from the NLL formulas themselves (not from
the package's stable forms), at the exact values the inputs represent in their dtype:

    ZTP:  NLL = -k log(lam) + log(e^lam - 1) + lgamma(k + 1)
    ZTNB: NLL = lgamma(theta) - lgamma(k + theta) + lgamma(k + 1) - theta log(theta)
                + log((theta + mu)^theta - theta^theta) - k log(mu) + k log(theta + mu)

(the loss form drops lgamma(k + 1)); the gradients are mpmath's numerical derivatives of
the same expressions, times p for a log-parameter. Tolerances are the project's goals
(docs/loss-internals.md): the value within 4 ulp, each gradient within 16 ulp, of the
result's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import mpmath
import numpy as np
import pytest
import torch

from ztbench.core.metrics import ulp_error
from ztbench.loss import zt_negbin_nll, zt_poisson_nll
from ztbench.loss.paths import Path, choose_path, recording

VALUE_ULP = 4.0
GRADIENT_ULP = 16.0
DPS = 60

HAS_CUDA = torch.cuda.is_available()

# path -> (device, the result dtype it serves)
SERVES: dict[Path, tuple[str, torch.dtype]] = {
    Path.EAGER_SCREENED_F32: ("cpu", torch.float32),
    Path.EAGER_SCREENED: ("cpu", torch.bfloat16),
    Path.EAGER_INDEXED: ("cuda", torch.float32),
    Path.EAGER_REFINED: ("cpu", torch.float64),
    Path.COMPILED_SCREENED: ("cpu", torch.float32),
    Path.COMPILED_OPAQUE: ("cpu", torch.float64),
    Path.COMPILED_TRACED: ("cuda", torch.float32),
}

# (k, lam) and (k, mu, theta): each branch of the kernels' main splits (lam and
# x = mu/theta below and above 1, k = 1 and k > 1, theta below and above 10), away from
# the zero crossings of the loss and its derivatives
ZTP_POINTS = [(1.0, 0.03), (2.0, 0.4), (3.0, 2.5), (17.0, 40.0), (250.0, 180.0)]
ZTNB_POINTS = [
    (1.0, 0.03, 0.5),
    (3.0, 2.5, 4.0),
    (17.0, 40.0, 0.7),
    (250.0, 180.0, 1.0e4),
    (5.0, 1.0e3, 20.0),
]


def _ztp_nll(full: bool) -> Callable[..., mpmath.mpf]:
    def nll(k: mpmath.mpf, lam: mpmath.mpf) -> mpmath.mpf:
        v = -k * mpmath.log(lam) + mpmath.log(mpmath.exp(lam) - 1)
        return v + mpmath.loggamma(k + 1) if full else v

    return nll


def _ztnb_nll(full: bool) -> Callable[..., mpmath.mpf]:
    def nll(k: mpmath.mpf, mu: mpmath.mpf, theta: mpmath.mpf) -> mpmath.mpf:
        v = (
            mpmath.loggamma(theta)
            - mpmath.loggamma(k + theta)
            - theta * mpmath.log(theta)
            + mpmath.log((theta + mu) ** theta - theta**theta)
            - k * mpmath.log(mu)
            + k * mpmath.log(theta + mu)
        )
        return v + mpmath.loggamma(k + 1) if full else v

    return nll


def _reference(family: str, full: bool, k: float, params: list[float], is_log: bool
               ) -> tuple[float, list[float]]:  # fmt: skip
    """(NLL, [dNLL/dp or dNLL/dlog p]) at the exact values of the inputs, rounded once to
    float64 from DPS digits. ``params`` are the inputs as given (log p with ``is_log``)."""
    nll = _ztp_nll(full) if family == "ztpoisson" else _ztnb_nll(full)
    with mpmath.workdps(DPS):
        km = mpmath.mpf(k)
        nat = [mpmath.exp(mpmath.mpf(p)) if is_log else mpmath.mpf(p) for p in params]
        value = nll(km, *nat)
        grads = []
        for i, p in enumerate(nat):

            def along(t: mpmath.mpf, i: int = i) -> mpmath.mpf:
                args = list(nat)
                args[i] = t
                return nll(km, *args)

            # the step is taken far below the DPS digits: mpmath raises the working
            # precision of the evaluations itself
            g = mpmath.diff(along, p)
            grads.append(g * p if is_log else g)
        return float(value), [float(g) for g in grads]


def _inputs(family: str, device: str, dtype: torch.dtype, is_log: bool
            ) -> tuple[torch.Tensor, list[torch.Tensor]]:  # fmt: skip
    """(k, parameters as the caller gives them), the parameters rounded to ``dtype``
    (log p rounded to ``dtype`` for log-parameters)."""
    points = np.array(ZTP_POINTS if family == "ztpoisson" else ZTNB_POINTS)
    k = torch.tensor(points[:, 0], device=device)
    params = []
    for col in points[:, 1:].T:
        p = torch.tensor(np.log(col) if is_log else col, dtype=torch.float64)
        params.append(p.to(dtype).to(device).requires_grad_(True))
    return k, params


def _loss(family: str, is_log: bool, full: bool, validate: bool = True
          ) -> Callable[..., torch.Tensor]:  # fmt: skip
    names = ["lam"] if family == "ztpoisson" else ["mu", "theta"]
    fn = zt_poisson_nll if family == "ztpoisson" else zt_negbin_nll

    def loss(k: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        kw = {("log_" if is_log else "") + n: p for n, p in zip(names, params, strict=True)}
        return fn(k, **kw, full=full, reduction="none", validate=validate)

    return loss


def _cases() -> list:  # type: ignore[type-arg]
    cases = []
    for path, (device, _) in SERVES.items():
        marks = []
        if device == "cuda":
            marks.append(pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device"))
        if path.compiled:
            marks.append(pytest.mark.slow)
        for family in ("ztpoisson", "ztnb"):
            for full in (False, True):
                for is_log in (False, True):
                    cid = f"{path.value}-{family}-{'full' if full else 'loss'}-" + (
                        "log" if is_log else "natural"
                    )
                    cases.append(pytest.param(path, family, full, is_log, id=cid, marks=marks))
    return cases


@pytest.mark.parametrize(("path", "family", "full", "is_log"), _cases())
def test_path_against_mpmath(path: Path, family: str, full: bool, is_log: bool) -> None:
    device, dtype = SERVES[path]
    compiled = path.compiled
    k, params = _inputs(family, device, dtype, is_log)
    # on the CPU the general screen runs where the float32 screen declines a call with an
    # invalid element (k = 0 appended, validate=False; only the valid elements are checked)
    fallback = path is Path.EAGER_SCREENED
    if fallback:
        k = torch.cat([k, k.new_zeros(1)])
        params = [torch.cat([p, p[:1]]).detach().requires_grad_(True) for p in params]
    assert choose_path(k, params, compiling=compiled) is (
        Path.EAGER_SCREENED_F32 if fallback else path)
    loss = _loss(family, is_log, full, validate=not fallback)
    if compiled:
        # a fresh cache: the same test function's code object recompiles once per case,
        # and past Dynamo's recompile limit it would run eager mode instead
        torch._dynamo.reset()
        loss = torch.compile(loss, backend="aot_eager", fullgraph=True)
    with recording() as ran:
        value = loss(k, *params)
    # compiled code runs the traced graph (nothing eager records itself)
    assert ran == ([] if compiled else [path])
    assert value.dtype == dtype
    grads = torch.autograd.grad(value.sum(), params)

    dname = str(dtype).removeprefix("torch.")
    got_v = value.detach().double().cpu().numpy()
    got_g = [g.double().cpu().numpy() for g in grads]
    raw = [p.detach().double().cpu().numpy() for p in params]
    for i, kk in enumerate(k.cpu().tolist()[: len(k) - fallback]):
        want_v, want_g = _reference(family, full, kk, [float(p[i]) for p in raw], is_log)
        err = float(ulp_error(got_v[i], want_v, dname))
        assert err <= VALUE_ULP, f"value at point {i}: {err} ulp ({got_v[i]!r} vs {want_v!r})"
        for j, (g, w) in enumerate(zip(got_g, want_g, strict=True)):
            err = float(ulp_error(g[i], w, dname))
            assert err <= GRADIENT_ULP, f"gradient {j} at point {i}: {err} ulp ({g[i]!r} vs {w!r})"


def test_float32_screen_hands_invalid_input_to_the_general_path() -> None:
    # an invalid element in float32 (validate=False): the screen declines the call and
    # EAGER_SCREENED computes it, with NaN there and the other elements as the screen
    # gives them
    k = torch.tensor([1.0, 0.0, 5.0])
    lam = torch.tensor([0.5, 2.0, 3.0])
    assert choose_path(k, [lam]) is Path.EAGER_SCREENED_F32
    with recording() as ran:
        bad = zt_poisson_nll(k, lam, reduction="none", validate=False)
        good = zt_poisson_nll(k[[0, 2]], lam[[0, 2]], reduction="none")
    assert ran == [Path.EAGER_SCREENED, Path.EAGER_SCREENED_F32]
    assert torch.isnan(bad[1])
    torch.testing.assert_close(bad[[0, 2]], good)


def test_choose_path_table() -> None:
    # the documented table, with "meta" standing for any device other than the CPU
    cpu, meta = torch.device("cpu"), torch.device("meta")

    def chosen(device: torch.device, *dtypes: torch.dtype, compiling: bool,
               k_device: torch.device | None = None) -> Path:  # fmt: skip
        k = torch.ones(2, device=k_device or device)
        params = [torch.ones(2, dtype=dt, device=device) for dt in dtypes]
        return choose_path(k, params, compiling=compiling)

    f32, f64, bf16 = torch.float32, torch.float64, torch.bfloat16
    assert chosen(cpu, f32, compiling=False) is Path.EAGER_SCREENED_F32
    assert chosen(cpu, f32, f32, compiling=False) is Path.EAGER_SCREENED_F32
    assert chosen(cpu, bf16, compiling=False) is Path.EAGER_SCREENED_F32
    assert chosen(cpu, f32, bf16, compiling=False) is Path.EAGER_SCREENED_F32
    assert chosen(cpu, torch.float16, compiling=False) is Path.EAGER_SCREENED_F32
    assert chosen(cpu, f32, f64, compiling=False) is Path.EAGER_REFINED
    assert chosen(cpu, f64, compiling=False) is Path.EAGER_REFINED
    assert chosen(meta, f32, compiling=False) is Path.EAGER_INDEXED
    assert chosen(meta, f32, compiling=False, k_device=cpu) is Path.EAGER_INDEXED
    assert chosen(meta, f64, compiling=False) is Path.EAGER_REFINED
    assert chosen(cpu, f32, compiling=True) is Path.COMPILED_SCREENED
    assert chosen(cpu, bf16, compiling=True) is Path.COMPILED_SCREENED
    assert chosen(cpu, f64, compiling=True) is Path.COMPILED_OPAQUE
    assert chosen(meta, f32, compiling=True) is Path.COMPILED_TRACED
    assert chosen(meta, f64, compiling=True) is Path.COMPILED_TRACED
    # a mask elsewhere than k: not the float32 screen (its inputs stay where they are)
    k, lam = torch.ones(2), torch.ones(2)
    assert choose_path(k, [lam], torch.ones(2, dtype=torch.bool, device=meta),
                       compiling=False) is Path.EAGER_SCREENED  # fmt: skip
    assert set(SERVES) == set(Path)
