"""The recommended zero-truncated Poisson and negative binomial losses (public API).

``from ztbench import zt_poisson_nll, zt_negbin_nll``::

    loss = zt_poisson_nll(k, log_lam=eta)                     # mean over elements
    loss = zt_negbin_nll(k, log_mu=eta, log_theta=phi, reduction="sum", full=True)

Design (the formulas are in the docstrings of the private kernels below):

- Every input is computed in **float64** internally and the result rounded once to the
  input's floating dtype (float32, bfloat16, float16 inputs): one rounding of a value
  that is accurate to a few float64 ulp is within about half an ulp of the correctly
  rounded result in the narrower format.
- The loss is written so that the large terms cancel analytically (the log of the
  truncation normaliser is split into log w + log(expm1(w)/w), the lgamma and digamma
  differences are taken relative to k log(theta) and k/theta with Stirling and
  asymptotic series, every log(1 + small) is a log1p / log1pmx): see
  :func:`_ztp_kernel` and :func:`_ztnb_kernel`.
- A custom :class:`torch.autograd.Function` returns analytic gradients computed in the
  same forward pass, each written as a sum of terms that do not cancel (differences
  such as mu - k are exact by Sterbenz's lemma where they would otherwise cancel).
  Gradients with respect to log-parameters follow by the chain rule through exp (in
  float64).
- Invalid input (k < 1, non-integer or non-finite k, parameters that are NaN, not
  positive or not finite): ``ValueError`` naming the problem with ``validate=True``
  (a host synchronisation); NaN at those positions with ``validate=False`` (no
  synchronisation, no graph break: the torch.compile hot path).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ztbench.candidates import primitives as P

__all__ = ["zt_negbin_nll", "zt_poisson_nll"]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")
_F64 = torch.float64


# --------------------------------------------------------------------------- kernels
def _ztp_kernel(k: Tensor, lam: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """ZTP loss -k log(lam) + log(expm1(lam)) and its derivative in lam (float64).

    Value: ``-(k - 1) log(lam) + h(lam)``, h(x) = log(expm1(x)/x)
    (:func:`~ztbench.candidates.primitives.log_expm1_over_x`); taking one log(lam) out of
    the truncation term removes the small-lam cancellation (k = 1: the loss ~ lam/2).

    Derivative ``-k/lam + 1/(1 - e^-lam)``:

    - lam <= 1: ``-(k - 1)/lam + q(lam)``, q(x) = 1/(1 - e^-x) - 1/x by its series
      (1/2 at k = 1; for k >= 2 the first term dominates q < 0.6 by at least 1/0.6);
    - lam > 1: ``(lam - k)/lam + 1/expm1(lam)``; lam - k is exact when k/2 <= lam <= 2k
      (Sterbenz), so at k = lam the result is exactly 1/expm1(lam) (tiny, not rounding
      noise of 1 - k/lam).
    """
    value = -torch.xlogy(k - 1.0, lam) + P.log_expm1_over_x(lam)
    if not need_grad:
        return value, None
    small = lam <= 1.0
    l_s, l_l = P.split(small, lam, 0.5, 2.0)
    g_small = -(k - 1.0) / l_s + P.inv1mexp_minus_inv(l_s)
    # 1/expm1(lam) = e^-lam / (1 - e^-lam): no overflow of expm1 past lam ~ 709 (the
    # term is then a subnormal that the reference keeps)
    g_large = (l_l - k) / l_l + torch.exp(-l_l) / (-torch.expm1(-l_l))
    return value, torch.where(small, g_small, g_large)


def _ztnb_kernel(
    k: Tensor, mu: Tensor, theta: Tensor, need_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """ZTNB loss and its derivatives in mu and theta (float64).

    With x = mu/theta, lx = log1p(x), w = theta lx = -log P(0), r = lx/x, h(w) =
    log(expm1(w)/w), D = lgamma(k+theta) - lgamma(theta) - k log(theta) and
    G = D + (k - 1) log(theta) (:func:`~ztbench.candidates.primitives.lgamma_excess`),
    the loss lgamma(theta) - lgamma(k+theta) + k log1p(theta/mu) + log(expm1(w)) is

    - x < 1: ``-D - (k - 1) log(mu) + k lx + log(r) + h(w)`` (theta >= 10; for theta < 10
      -D - (k - 1) log(mu) is evaluated as -G - (k - 1) log(x)): no k log(theta) is formed
      and subtracted (the large-theta cancellation); at k = 1 the loss is
      lx + log r + h(w) ~ x/2 + w/2 (the tiny-NLL region) to full relative accuracy;
      log r = log1p(log1pmx(x)/x).
    - x >= 1: ``-G + k log1p(1/x) + log(lx) + h(w)`` (log(theta) cancelled analytically
      between lgamma(theta) ~ -log(theta) and log(w), which matters for tiny theta).

    d/dmu = k/(theta+mu) - k/mu + theta/(theta+mu) / (1 - e^-w) = num / (mu (1 + x)):

    - w <= 1: num = (1/r - 1) - (k - 1) + mu q(w), 1/r - 1 = -log1pmx(x)/lx >= 0;
    - w > 1: num = (mu - k) + mu/expm1(w) (mu - k exact near k, Sterbenz).

    d/dtheta = psi(theta) - psi(k+theta) + k/(theta+mu) + s/(1 - e^-w), s = lx - y,
    y = x/(1+x) (s = -log1pmx(-y) for y <= 1/2); with E = k/theta - (psi(k+theta) -
    psi(theta)) and F = psi(k+theta) - psi(1+theta)
    (:func:`~ztbench.candidates.primitives.digamma_excess`):

    - w > 1: ``Dpsi - log1pmx(t) + s/expm1(w)``, t = (k - mu)/(theta + mu),
      Dpsi = psi(theta) - psi(k+theta) + log1p(k/theta)
      (:func:`~ztbench.candidates.primitives.digamma_log_difference`): the logs of
      the digamma difference, k/(theta+mu) and s cancel analytically into -log1pmx(t)
      ~ t^2/2, whose k - mu is exact near the mode (the Poisson limit's (k - mu)^2);
    - w <= 1 and (x < 1 or theta >= 1): ``E - (k - 1) y/theta + log1pmx(x)/((1 + x) w)
      + s q(w)`` (the k/theta parts cancelled analytically; -y/theta + s/w =
      log1pmx(x)/((1+x)w));
    - w <= 1, x >= 1 and theta < 1: ``-F + k/(theta + mu) - x/((1 + x) w) + s q(w)``
      (the 1/theta of psi(theta) cancelled analytically against s/w).
    """
    x = mu / theta
    lx = torch.log1p(x)
    lpm = P.log1pmx(x)
    below = x < 1.0
    # w = theta log1p(x), as mu * r for x < 1 (no subnormal log1p(x) when x is tiny)
    x_b, x_a = P.split(below, x, 0.5, 2.0)
    r_b = 1.0 + P.log1pmx(x_b) / x_b
    w = torch.where(below, mu * r_b, theta * lx)
    h = P.log_expm1_over_x(w)
    d, g = P.lgamma_excess(k, theta)
    # -D - (k-1) log(mu) for theta >= 10; for theta < 10 the same as -G - (k-1) log(x)
    # (x = mu/theta is rounded once, so log(x) is accurate to ~1 ulp of |log x| whereas
    # D = G - (k-1) log(theta) and (k-1) log(mu) would each carry ulps of much larger
    # numbers into a cancellation).
    logx = torch.where(x > 1e-300, torch.log(x_b), torch.log(mu) - torch.log(theta))
    head = torch.where(
        theta >= P.STIRLING_MIN, -d - torch.xlogy(k - 1.0, mu), -g - (k - 1.0) * logx
    )
    v_below = head + k * torch.log1p(x_b)
    v_below = v_below + torch.log1p(P.log1pmx(x_b) / x_b) + h
    v_above = -g + k * torch.log1p(1.0 / x_a) + torch.log(torch.log1p(x_a)) + h
    value = torch.where(below, v_below, v_above)
    if not need_grad:
        return value, None, None

    q = P.inv1mexp_minus_inv(w)
    one_x = 1.0 + x
    # d/dmu
    wsmall = w <= 1.0
    num_s = -lpm / lx - (k - 1.0) + mu * q
    w_1 = torch.where(wsmall, torch.ones_like(w), w)
    em1 = -torch.expm1(-w_1)  # 1 - e^-w; mu/expm1(w) = exp(log(mu) - w)/(1 - e^-w)
    num_l = (mu - k) + torch.exp(torch.log(mu) - w_1) / em1
    d_mu = torch.where(wsmall, num_s, num_l) / (mu * one_x)
    # d/dtheta
    y = x / one_x
    y_s = torch.where(y <= 0.5, y, torch.full_like(y, 0.25))
    s = torch.where(y <= 0.5, -P.log1pmx(-y_s), lx - y)
    e, f = P.digamma_excess(k, theta)
    sq = s * q
    t_l = e - (k - 1.0) * y / theta + lpm / (one_x * w) + sq
    t_s = -f + k / (theta + mu) - x / (one_x * w) + sq
    # w > 1: psi(theta) - psi(k+theta) + k/(theta+mu) + s + s/expm1(w), regrouped around
    # t = (k - mu)/(theta + mu) (k - mu exact near the mode; the Poisson limit's
    # (k - mu)^2 term then comes out of -log1pmx(t) to full relative accuracy).
    # log1pmx(t) = log((k+theta)/(theta+mu)) - t away from t = 0 (1 + t formed from the
    # rounded t would cancel when k << mu).
    t = (k - mu) / (theta + mu)
    t_w = torch.where(wsmall, torch.zeros_like(t), t)
    t_near = t_w.abs() <= 0.5
    t_n = torch.where(t_near, t_w, torch.zeros_like(t_w))
    lpm_t = torch.where(t_near, P.log1pmx(t_n), torch.log((k + theta) / (theta + mu)) - t_w)
    w_l = torch.where(wsmall, torch.ones_like(w), w)
    s_pos = torch.where(s > 0, s, torch.ones_like(s))
    s_em1 = torch.where(s > 0, torch.exp(torch.log(s_pos) - w_l) / (-torch.expm1(-w_l)), 0.0 * s)
    t_big_w = P.digamma_log_difference(k, theta) - lpm_t + s_em1
    d_theta = torch.where(wsmall, torch.where((x < 1.0) | (theta >= 1.0), t_l, t_s), t_big_w)
    return value, d_mu, d_theta


# --------------------------------------------------------------------------- autograd
class _ZTPoissonFn(torch.autograd.Function):
    """Loss and analytic d/dlam (float64 tensors, already broadcast)."""

    @staticmethod
    def forward(ctx, k: Tensor, lam: Tensor) -> Tensor:  # type: ignore[override]
        need = bool(ctx.needs_input_grad[1])
        value, d_lam = _ztp_kernel(k, lam, need)
        if need:
            ctx.save_for_backward(d_lam)
        return value

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]
        (d_lam,) = ctx.saved_tensors
        return None, grad * d_lam


class _ZTNegBinFn(torch.autograd.Function):
    """Loss and analytic d/dmu, d/dtheta (float64 tensors, already broadcast)."""

    @staticmethod
    def forward(ctx, k: Tensor, mu: Tensor, theta: Tensor) -> Tensor:  # type: ignore[override]
        need = bool(ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        value, d_mu, d_theta = _ztnb_kernel(k, mu, theta, need)
        if need:
            ctx.save_for_backward(d_mu, d_theta)
        return value

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, Tensor]:  # type: ignore[override]
        d_mu, d_theta = ctx.saved_tensors
        return None, grad * d_mu, grad * d_theta


# --------------------------------------------------------------------------- plumbing
def _float_dtype(*ts: Tensor) -> torch.dtype:
    dt: torch.dtype | None = None
    for t in ts:
        if t.is_floating_point():
            dt = t.dtype if dt is None else torch.promote_types(dt, t.dtype)
    return torch.get_default_dtype() if dt is None else dt


def _as_tensor(x: object, device: torch.device | None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    return torch.as_tensor(x, device=device)


def _param(
    name: str, natural: object, log: object, device: torch.device | None
) -> tuple[str, Tensor, bool]:
    """(name used in messages, the tensor given, whether it is a log-parameter)."""
    if (natural is None) == (log is None):
        raise ValueError(f"give exactly one of {name}= and log_{name}=")
    if natural is not None:
        return name, _as_tensor(natural, device), False
    return f"log_{name}", _as_tensor(log, device), True


def _check_k(k: Tensor) -> None:
    if not k.is_floating_point() and k.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise ValueError(f"k must be a real tensor, got {k.dtype}")
    kf = k.to(_F64)
    if bool(torch.isnan(kf).any()):
        raise ValueError("k contains NaN")
    if bool(torch.isinf(kf).any()):
        raise ValueError("k contains inf")
    if bool((kf < 1).any()):
        raise ValueError(
            "k must be >= 1 (a zero-truncated law gives zero probability to k = 0), "
            f"got min {kf.min().item()}"
        )
    if bool((kf != torch.floor(kf)).any()):
        raise ValueError("k must be integer-valued (counts), got a non-integer value")


def _check_param(label: str, raw: Tensor, nat64: Tensor, is_log: bool) -> None:
    if not raw.is_floating_point():
        raw = raw.to(_F64)
    if bool(torch.isnan(raw).any()):
        raise ValueError(f"{label} contains NaN")
    if is_log:
        if bool(torch.isinf(raw).any()):
            raise ValueError(f"{label} must be finite, got inf")
        if bool(((nat64 <= 0) | torch.isinf(nat64)).any()):
            raise ValueError(
                f"{label} out of range: exp({label}) underflows to 0 or overflows in float64"
            )
        return
    if bool((raw <= 0).any()):
        raise ValueError(f"{label} must be > 0, got min {raw.min().item()}")
    if bool(torch.isinf(raw).any()):
        raise ValueError(f"{label} must be finite, got inf")


def _valid_k(k64: Tensor) -> Tensor:
    return (k64 >= 1.0) & (k64 == torch.floor(k64)) & torch.isfinite(k64)


def _valid_p(p64: Tensor) -> Tensor:
    return (p64 > 0.0) & torch.isfinite(p64)


def _reduce(out: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return out
    if reduction == "sum":
        return out.sum()
    return out.mean()


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")


def _to64(t: Tensor, is_log: bool) -> Tensor:
    t64 = t.to(_F64)
    return torch.exp(t64) if is_log else t64


# --------------------------------------------------------------------------- public API
def zt_poisson_nll(
    k: Tensor,
    lam: Tensor | float | None = None,
    *,
    log_lam: Tensor | float | None = None,
    reduction: Reduction = "mean",
    full: bool = False,
    validate: bool = True,
) -> Tensor:
    """Zero-truncated Poisson negative log-likelihood.

    loss = -k log(lam) + log(e^lam - 1)  (+ lgamma(k + 1) with ``full=True``).

    Args:
        k: counts >= 1 (integer-valued, integer or floating tensor).
        lam: the mean of the untruncated Poisson, > 0; or ``log_lam`` = log(lam) (give
            exactly one). Gradients flow to whichever is given.
        reduction: "mean" (default), "sum" or "none" (elementwise, broadcast shape).
        full: add lgamma(k + 1), the constant that makes it -log P(X = k).
        validate: raise ValueError on invalid input (k < 1, non-integer or non-finite k,
            lam NaN / <= 0 / inf); with False, NaN at those positions (no host sync).

    Returns:
        A tensor of the floating dtype of the parameter (float64 for float64 input;
        float32 / bfloat16 / float16 inputs are computed in float64 and rounded once).
    """
    _check_reduction(reduction)
    label, p, is_log = _param("lam", lam, log_lam, k.device if isinstance(k, Tensor) else None)
    k = _as_tensor(k, p.device)
    out_dtype = _float_dtype(p)
    k64 = k.to(device=p.device, dtype=_F64)
    lam64 = _to64(p, is_log)
    if validate:
        _check_k(k)
        _check_param(label, p, lam64, is_log)
    k64, lam64 = torch.broadcast_tensors(k64, lam64)
    ok = _valid_k(k64) & _valid_p(lam64)
    one = torch.ones_like(lam64)
    value = _ZTPoissonFn.apply(torch.where(ok, k64, one), torch.where(ok, lam64, one))
    if full:
        value = value + torch.lgamma(torch.where(ok, k64, one) + 1.0)
    value = torch.where(ok, value, torch.full_like(value, float("nan")))
    return _reduce(value, reduction).to(out_dtype)


def zt_negbin_nll(
    k: Tensor,
    mu: Tensor | float | None = None,
    theta: Tensor | float | None = None,
    *,
    log_mu: Tensor | float | None = None,
    log_theta: Tensor | float | None = None,
    reduction: Reduction = "mean",
    full: bool = False,
    validate: bool = True,
) -> Tensor:
    """Zero-truncated negative binomial negative log-likelihood (NB2: mean mu, size theta).

    loss = lgamma(theta) - lgamma(k + theta) - theta log(theta)
           + log((theta + mu)^theta - theta^theta) - k log(mu) + k log(theta + mu)
           (+ lgamma(k + 1) with ``full=True``).

    Args:
        k: counts >= 1 (integer-valued).
        mu / log_mu: the mean of the untruncated law (> 0), or its log (exactly one).
        theta / log_theta: the inverse dispersion (> 0), or its log (exactly one).
        reduction, full, validate: as :func:`zt_poisson_nll`.

    Returns:
        A tensor of the promoted floating dtype of the parameters (computed in float64).
    """
    _check_reduction(reduction)
    dev = k.device if isinstance(k, Tensor) else None
    mlabel, pm, m_log = _param("mu", mu, log_mu, dev)
    tlabel, pt, t_log = _param("theta", theta, log_theta, pm.device)
    k = _as_tensor(k, pm.device)
    out_dtype = _float_dtype(pm, pt)
    k64 = k.to(device=pm.device, dtype=_F64)
    mu64 = _to64(pm, m_log)
    th64 = _to64(pt.to(pm.device), t_log)
    if validate:
        _check_k(k)
        _check_param(mlabel, pm, mu64, m_log)
        _check_param(tlabel, pt, th64, t_log)
    k64, mu64, th64 = torch.broadcast_tensors(k64, mu64, th64)
    ok = _valid_k(k64) & _valid_p(mu64) & _valid_p(th64)
    one = torch.ones_like(mu64)
    value = _ZTNegBinFn.apply(
        torch.where(ok, k64, one), torch.where(ok, mu64, one), torch.where(ok, th64, one)
    )
    if full:
        value = value + torch.lgamma(torch.where(ok, k64, one) + 1.0)
    value = torch.where(ok, value, torch.full_like(value, float("nan")))
    return _reduce(value, reduction).to(out_dtype)
