"""The recommended zero-truncated Poisson and negative binomial losses (public API).

``from ztbench.loss import zt_poisson_nll, zt_negbin_nll``::

    loss = zt_poisson_nll(k, log_lam=eta)                     # mean over elements
    loss = zt_negbin_nll(k, log_mu=eta, log_theta=phi, reduction="sum", full=True)
    loss = zt_negbin_nll(x, log_mu=eta, log_theta=phi, mask=x > 0)  # nonzero counts of x

Design (the formulas are in the docstrings of the private kernels below):

- Every input is computed in **float64** internally and the result rounded once to the
  input's floating dtype (float32, bfloat16, float16 inputs): one rounding of a value
  that is accurate to a few float64 ulp is within about half an ulp of the correctly
  rounded result in the narrower format.
- Float32 inputs on the CPU in eager mode take a fast path (:func:`_forward_float32`):
  the plain formula in float64 (:mod:`ztbench.loss.screened`), kept at each element
  where a bound on its error (from the sum's condition number) proves it within 2^-28
  relative, so the float32 result is within 0.5 + 1/8 ulp; the careful kernels below
  recompute the other elements (zero crossings, the large-theta and tiny-lam
  cancellations). The derivatives are returned in float32.
- The loss is written so that the large terms cancel analytically (the log of the
  truncation normaliser is split into log w + log(expm1(w)/w), the lgamma and digamma
  differences are taken relative to k log(theta) and k/theta with Stirling and
  asymptotic series, every log(1 + small) is a log1p / log1pmx): see
  :func:`_ztp_kernel` and :func:`_ztnb_kernel`.
- Float64 ZTP results (eager): where the float64 sum cancels (the loss or d/dlam crosses
  zero), the value or derivative is recomputed from terms exact to ~2^-104 and rounded
  once (:mod:`ztbench.loss.dd.ztp`, :func:`_refine_float64`): a few ulp away from the
  float64 nearest a zero crossing.
  Likewise the ZTNB value (a double-double lgamma(k + theta) - lgamma(theta),
  :mod:`ztbench.loss.dd.lgamma`), d/dmu and d/dtheta (:mod:`ztbench.loss.dd.ztnb`).
- ``full=True`` never adds lgamma(k + 1) to a cancelling sum: both families in Loader's
  stirlerr + bd0 form where it applies (:mod:`ztbench.loss.stirlerr`), float64 results
  refined in double-double with lgamma(k + 1) among the summed terms where that form
  (or value + lgamma(k + 1) elsewhere) still cancels (:func:`_refine_full_float64`).
- One autograd node (:class:`_ZTLoss`) returns analytic first derivatives computed in
  the same forward pass, each written as a sum of terms that do not cancel (differences
  such as mu - k are exact by Sterbenz's lemma where they would otherwise cancel).
  Gradients with respect to log-parameters follow by the chain rule through exp (in
  float64); float64 results with log-parameters are moved from the rounded exp(log p)
  to the exact one to first order (:func:`_log_rounding_correction`). The backward is
  differentiable (double backward, Hessians) and the node supports torch.func
  (setup_context, jvp, a vmap rule): see the "autograd" section.
- Invalid input (k < 1, non-integer or non-finite k, parameters that are NaN, not
  positive or not finite): with ``validate=True`` a ``ValueError`` naming the problem in
  eager mode, one ``torch._assert_async`` under torch.compile (no graph break;
  :mod:`ztbench.loss.validation`); with ``validate=False`` NaN in the value and the
  gradients at those positions. ``mask=`` leaves elements out exactly (0 in the value
  and the gradients, whatever their inputs).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from ztbench.loss import primitives as P
from ztbench.loss import screened as S
from ztbench.loss import validation as V
from ztbench.loss.dd import ztnb as dd_ztnb
from ztbench.loss.dd import ztp as dd_ztp
from ztbench.loss.dd.arith import dd_log
from ztbench.loss.dispatch import INDEX, WHERE, Dispatcher
from ztbench.loss.stirlerr import (
    ztnb_full_condition,
    ztnb_full_value,
    ztp_full_condition,
    ztp_full_value,
)

__all__ = ["zt_negbin_nll", "zt_poisson_nll"]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")
_F64 = torch.float64


# --------------------------------------------------------------------------- kernels
# Each kernel is written once, as a function of a dispatcher D (:mod:`ztbench.loss.dispatch`):
# WHERE evaluates every branch on every element with safe inputs where it is not taken
# (traceable, differentiable: torch.compile on a GPU and the differentiable backward use
# it);
# INDEX evaluates each branch on its own elements (the eager path, flat inputs).
# The two give the same bits (tests/loss/test_nll.py).
def _ztp(D: Dispatcher, k: Tensor, lam: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """ZTP loss -k log(lam) + log(expm1(lam)) and its derivative in lam (float64).

    Value: ``h(lam) - (k - 1) log(lam)``, h(x) = log(expm1(x)/x); taking one log(lam)
    out of the truncation term removes the small-lam cancellation (k = 1: the loss ~
    lam/2). h(x) = log1p(sum_{n>=1} x^n/(n+1)!) for x < 1 (no cancellation) and
    x + log1p(-e^-x) - log(x) for x >= 1 (never overflows; at least half the larger
    term, see :func:`~ztbench.loss.primitives.log_expm1_over_x`).

    Derivative ``-k/lam + 1/(1 - e^-lam)``:

    - lam < 1: ``q(lam) - (k - 1)/lam``, q(x) = 1/(1 - e^-x) - 1/x by its Bernoulli series
      (1/2 at k = 1; for k >= 2 the second term dominates q < 0.6 by at least 1/0.6);
    - lam >= 1: ``(lam - k)/lam + 1/expm1(lam)``; lam - k is exact when k/2 <= lam <= 2k
      (Sterbenz), so at k = lam the result is exactly 1/expm1(lam) (tiny, not rounding
      noise of 1 - k/lam).
    """

    def small(k: Tensor, lam: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        value = P._h_small_fn(D)(lam) - (k - 1.0) * torch.log(lam)
        if not need_grad:
            return value
        return value, P._q_small_fn(D)(lam) - (k - 1.0) / lam

    def large(k: Tensor, lam: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        log_lam = torch.log(lam)
        e = torch.exp(-lam)  # underflows to 0 past lam ~ 745, where it no longer matters
        value = (lam + torch.log1p(-e) - log_lam) - (k - 1.0) * log_lam
        if not need_grad:
            return value
        # 1/expm1(lam) = e^-lam / (1 - e^-lam): no overflow of expm1 past lam ~ 709 (the
        # term is then a subnormal that the reference keeps)
        return value, (lam - k) / lam + e / (-torch.expm1(-lam))

    out = D.branch(lam < 1.0, small, large, (k, lam), (None, 0.5), (None, 2.0))
    if not need_grad:
        return out, None  # type: ignore[return-value]
    return out  # type: ignore[return-value]


def _ztnb(
    D: Dispatcher, k: Tensor, mu: Tensor, theta: Tensor, need_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """ZTNB loss and its derivatives in mu and theta (float64).

    With x = mu/theta, lx = log1p(x), w = theta lx = -log P(0), r = lx/x, h(w) =
    log(expm1(w)/w), D = lgamma(k+theta) - lgamma(theta) - k log(theta) and
    G = D + (k - 1) log(theta) (:func:`~ztbench.loss.primitives.lgamma_excess`),
    the loss lgamma(theta) - lgamma(k+theta) + k log1p(theta/mu) + log(expm1(w)) is

    - x < 1: ``-D - (k - 1) log(mu) + k lx + log(r) + h(w)`` (theta >= 10; for theta < 10
      -D - (k - 1) log(mu) is evaluated as -G - (k - 1) log(x)): no k log(theta) is formed
      and subtracted (the large-theta cancellation); at k = 1 the loss is
      lx + log r + h(w) ~ x/2 + w/2 (the tiny-NLL region) to full relative accuracy;
      log r = log1p(log1pmx(x)/x) (:func:`~ztbench.loss.primitives.log1pmx_over_x`, no
      underflow at tiny x); w = mu r.
    - x >= 1: ``-G + k log1p(1/x) + log(lx) + h(w)`` (log(theta) cancelled analytically
      between lgamma(theta) ~ -log(theta) and log(w), which matters for tiny theta).

    d/dmu = k/(theta+mu) - k/mu + theta/(theta+mu) / (1 - e^-w) = num / (mu (1 + x)):

    - w <= 1: num = (1/r - 1) - (k - 1) + mu q(w), 1/r - 1 = -(log1pmx(x)/x) (x/lx) >= 0;
    - w > 1: num = (mu - k) + mu/expm1(w) (mu - k exact near k, Sterbenz).

    d/dtheta = psi(theta) - psi(k+theta) + k/(theta+mu) + s/(1 - e^-w), s = lx - y,
    y = x/(1+x) (s = -log1pmx(-y) for y <= 1/2); with E = k/theta - (psi(k+theta) -
    psi(theta)) and F = psi(k+theta) - psi(1+theta)
    (:func:`~ztbench.loss.primitives.digamma_excess`):

    - w > 1: ``Dpsi - log1pmx(t) + s/expm1(w)``, t = (k - mu)/(theta + mu),
      Dpsi = psi(theta) - psi(k+theta) + log1p(k/theta)
      (:func:`~ztbench.loss.primitives.digamma_log_difference`): the logs of
      the digamma difference, k/(theta+mu) and s cancel analytically into -log1pmx(t)
      ~ t^2/2, whose k - mu is exact near the mode (the Poisson limit's (k - mu)^2);
      log1pmx(t) = log((k+theta)/(theta+mu)) - t away from t = 0 (1 + t formed from the
      rounded t would cancel when k << mu);
    - w <= 1 and (x < 1 or theta >= 1): ``E - (k - 1) y/theta + log1pmx(x)/((1 + x) w)
      + s q(w)`` (the k/theta parts cancelled analytically; -y/theta + s/w =
      log1pmx(x)/((1+x)w));
    - w <= 1, x >= 1 and theta < 1: ``-F + k/(theta + mu) - x/((1 + x) w) + s q(w)``
      (the 1/theta of psi(theta) cancelled analytically against s/w).
    """
    x = mu / theta
    lx = torch.log1p(x)
    lpm_x = P.log1pmx_over_x(x, D)  # log1pmx(x)/x
    below = x < 1.0
    # safe stand-ins for (x, lx, lpm_x) in a branch not taken: a point of its own domain
    at_half = (0.5, math.log1p(0.5), (math.log1p(0.5) - 0.5) / 0.5)
    at_two = (2.0, math.log(3.0), None)

    def w_below(mu: Tensor, theta: Tensor, x: Tensor, lx: Tensor, lpm_x: Tensor) -> Tensor:
        return mu * (1.0 + lpm_x)  # no subnormal log1p(x) when x is tiny

    def w_above(mu: Tensor, theta: Tensor, x: Tensor, lx: Tensor, lpm_x: Tensor) -> Tensor:
        return theta * lx

    args_w = (mu, theta, x, lx, lpm_x)
    w = D.branch(below, w_below, w_above, args_w, (None, None, *at_half), (None,) * 5)
    h = P.log_expm1_over_x(w, D)  # type: ignore[arg-type]
    d, g = P.lgamma_excess(k, theta, D)

    def v_below(k, mu, theta, x, lx, lpm_x, h, d, g):  # type: ignore[no-untyped-def]
        # -D - (k-1) log(mu) for theta >= 10; for theta < 10 the same as -G - (k-1) log(x)
        # (x = mu/theta is rounded once, so log(x) is accurate to ~1 ulp of |log x|
        # whereas D = G - (k-1) log(theta) and (k-1) log(mu) would each carry ulps of
        # much larger numbers into a cancellation).
        logx = torch.where(x > 1e-300, torch.log(x), torch.log(mu) - torch.log(theta))
        head = torch.where(
            theta >= P.STIRLING_MIN, -d - torch.xlogy(k - 1.0, mu), -g - (k - 1.0) * logx
        )
        v = head + k * lx
        return v + torch.log1p(lpm_x) + h

    def v_above(k, mu, theta, x, lx, lpm_x, h, d, g):  # type: ignore[no-untyped-def]
        return -g + k * torch.log1p(1.0 / x) + torch.log(lx) + h

    args_v = (k, mu, theta, x, lx, lpm_x, h, d, g)
    keep3 = (None, None, None)
    value = D.branch(
        below, v_below, v_above, args_v, (*keep3, *at_half, *keep3), (*keep3, *at_two, *keep3)
    )
    if not need_grad:
        return value, None, None  # type: ignore[return-value]

    def s_of(lx: Tensor, y: Tensor) -> Tensor:
        """s = log1p(x) - x/(1+x), as -log1pmx(-y) for y <= 1/2."""

        def near(lx: Tensor, y: Tensor) -> Tensor:
            return -P.log1pmx(-y, D)

        def far(lx: Tensor, y: Tensor) -> Tensor:
            return lx - y

        return D.branch(y <= 0.5, near, far, (lx, y), (None, 0.25), (None, None))  # type: ignore[return-value]

    def g_wsmall(k, mu, theta, x, lx, lpm_x, w):  # type: ignore[no-untyped-def]
        q = P.inv1mexp_minus_inv(w, D)
        one_x = 1.0 + x
        d_mu = (-lpm_x * (x / lx) - (k - 1.0) + mu * q) / (mu * one_x)
        y = x / one_x
        sq = s_of(lx, y) * q
        e, f = P.digamma_excess(k, theta, D)
        # log1pmx(x)/((1 + x) w) as (log1pmx(x)/x) (x/w)/(1 + x): no x^2 to underflow
        t_l = e - (k - 1.0) * y / theta + lpm_x * (x / w) / one_x + sq
        t_s = -f + k / (theta + mu) - x / (one_x * w) + sq
        return d_mu, torch.where((x < 1.0) | (theta >= 1.0), t_l, t_s)

    def g_wlarge(k, mu, theta, x, lx, lpm_x, w):  # type: ignore[no-untyped-def]
        one_x = 1.0 + x
        em1 = -torch.expm1(-w)  # 1 - e^-w; mu/expm1(w) = exp(log(mu) - w)/(1 - e^-w)
        d_mu = ((mu - k) + torch.exp(torch.log(mu) - w) / em1) / (mu * one_x)
        s = s_of(lx, x / one_x)
        # w > 1: psi(theta) - psi(k+theta) + k/(theta+mu) + s + s/expm1(w), regrouped
        # around t = (k - mu)/(theta + mu)
        t = (k - mu) / (theta + mu)

        def lpm_near(t: Tensor, k: Tensor, theta: Tensor, mu: Tensor) -> Tensor:
            return P.log1pmx(t, D)

        def lpm_far(t: Tensor, k: Tensor, theta: Tensor, mu: Tensor) -> Tensor:
            return torch.log((k + theta) / (theta + mu)) - t

        lpm_t = D.branch(
            t.abs() <= 0.5, lpm_near, lpm_far, (t, k, theta, mu), (0.0, *keep3), (None, *keep3)
        )
        s_pos = torch.where(s > 0, s, torch.ones_like(s))  # type: ignore[arg-type]
        s_em1 = torch.where(s > 0, torch.exp(torch.log(s_pos) - w) / em1, 0.0 * s)  # type: ignore[operator]
        return d_mu, P.digamma_log_difference(k, theta, D) - lpm_t + s_em1

    args_g = (k, mu, theta, x, lx, lpm_x, w)
    d_mu, d_theta = D.branch(
        w <= 1.0, g_wsmall, g_wlarge, args_g, (None,) * 6 + (0.5,), (None,) * 6 + (1.0,)
    )
    return value, d_mu, d_theta  # type: ignore[return-value]


def _ztp_kernel(k: Tensor, lam: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """:func:`_ztp` with every branch everywhere (traced by torch.compile, autograd)."""
    return _ztp(WHERE, k, lam, need_grad)


def _ztnb_kernel(
    k: Tensor, mu: Tensor, theta: Tensor, need_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """:func:`_ztnb` with every branch everywhere (traced by torch.compile, autograd)."""
    return _ztnb(WHERE, k, mu, theta, need_grad)


def _ztp_fast(k: Tensor, lam: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """:func:`_ztp`, eager, each branch on its own elements."""
    v, g = _ztp(INDEX, k.reshape(-1), lam.reshape(-1), need_grad)
    return v.reshape(lam.shape), None if g is None else g.reshape(lam.shape)


def _ztnb_fast(
    k: Tensor, mu: Tensor, theta: Tensor, need_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """:func:`_ztnb`, eager, each branch on its own elements."""
    outs = _ztnb(INDEX, k.reshape(-1), mu.reshape(-1), theta.reshape(-1), need_grad)
    return tuple(None if o is None else o.reshape(mu.shape) for o in outs)  # type: ignore[return-value]


def _idx(mask: Tensor) -> Tensor:
    """The indices of the True elements of a flat mask."""
    return mask.nonzero().squeeze(1)


# --------------------------------------------------------------------------- autograd
# family -> (where-based kernel, eager fast path); each kernel maps
# (k, *params, need_grad) to (value, *d_params) in float64
_KERNELS = {
    "ztpoisson": (_ztp_kernel, _ztp_fast),
    "ztnb": (_ztnb_kernel, _ztnb_fast),
}


def _replace_flagged(out: Tensor, flag: Tensor, fn, *args: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    """A copy of ``out`` with fn(*args at the flagged elements) there (``out`` if none)."""
    idx = _idx(flag.reshape(-1))
    if not idx.numel():
        return out
    flat = out.clone().reshape(-1)
    flat[idx] = fn(*(a.reshape(-1)[idx] for a in args))
    return flat.reshape(out.shape)


def _refine_float64(family: str, k: Tensor, params: list[Tensor], value: Tensor,
                    grads: list[Tensor | None]) -> tuple[Tensor, list[Tensor | None]]:  # fmt: skip
    """Float64 results only, eager only: where the kernel's float64 sum cancels (the
    quantity crosses zero), recompute it from terms exact to ~2^-104 and round once.

    - ZTP value and d/dlam (:mod:`ztbench.loss.dd.ztp`: flags from the kernel's own results);
    - ZTNB value (:func:`~ztbench.loss.dd.ztnb.ztnb_value_dd`, the lgamma difference in
      double-double), d/dmu and d/dtheta (:mod:`ztbench.loss.dd.ztnb`).

    Narrower outputs do not need it: the float64 kernel is already far inside half an ulp
    of float32 there. The error-free transforms need every product rounded on its own,
    which torch.compile's fused code does not promise, so the compiled path keeps the
    kernel's values (a separate target anyway).
    """
    if family == "ztpoisson":
        (lam,) = params
        (d_lam,) = grads
        flag_v, flag_g = dd_ztp.ztp_cancellation(k, lam, value, d_lam)
        value = _replace_flagged(value, flag_v, dd_ztp.ztp_value_dd, k, lam)
        if d_lam is not None and flag_g is not None:
            d_lam = _replace_flagged(d_lam, flag_g, dd_ztp.ztp_grad_dd, k, lam)
        return value, [d_lam]
    mu, theta = params
    d_mu, d_theta = grads
    x = mu / theta
    flag = dd_ztnb.ztnb_value_cancellation(k, mu, theta, value) & ~_ztnb_tiny_loss(k, x)
    value = _replace_flagged(value, flag, dd_ztnb.ztnb_value_dd, k, mu, theta)
    if d_mu is not None and d_theta is not None:
        flag = dd_ztnb.ztnb_dmu_cancellation(k, mu, theta, d_mu)
        d_mu = _replace_flagged(d_mu, flag, dd_ztnb.ztnb_dmu_dd, k, mu, theta)
        flag = dd_ztnb.ztnb_dtheta_cancellation(k, mu, theta, d_theta) & (x >= _DD_DTHETA_X_MIN)
        d_theta = _replace_flagged(d_theta, flag, dd_ztnb.ztnb_dtheta_dd, k, mu, theta)
    return value, [d_mu, d_theta]


# Where the double-double ZTNB forms cannot help, and the kernel needs no help:
# - the value at k = 1 and x = mu/theta below _DD_VALUE_X_MIN: the loss (~ (x + w)/2) is
#   below 2^-100 of the double-double formula's terms (log1p(theta/mu) ~ |log x| and
#   the lgamma difference), beyond its ~2^-104 reach, while the kernel's k = 1 form
#   lx + log r + h(w) has no cancellation (h >= 0, |log r| <= lx/1.8 for x < 1);
# - d/dtheta below _DD_DTHETA_X_MIN, where log1pmx(x) ~ -x^2/2 in double-double
#   underflows, while the kernel takes log1pmx(x)/x without forming x^2.
_DD_VALUE_X_MIN = 1e-25
_DD_DTHETA_X_MIN = 1e-100


def _ztnb_tiny_loss(k: Tensor, x: Tensor) -> Tensor:
    """Where the ZTNB value is the kernel's k = 1 tiny-x form (no refinement)."""
    return (k == 1.0) & (x < _DD_VALUE_X_MIN)


# Float64 results with log-parameters: the kernels see p = exp(log p) rounded to float64,
# the exact loss at a parameter up to an ulp away from the one the caller means. Where
# the loss or a derivative cancels, that ulp is many ulp of the result; a first-order
# correction by the kernel's own derivatives removes it (_log_rounding_correction).
def _log_rounding_correction(family: str, need: bool, k: Tensor, params: list[Tensor],
                             logs: list[Tensor], is_log: list[bool]
                             ) -> list[Tensor | None]:  # fmt: skip
    """:func:`_log_rounding_terms` in :func:`_in_chunks` (the where-based kernel and its
    tangents hold dozens of temporaries per element)."""
    m = len(params)

    def terms(k: Tensor, *rest) -> list[Tensor | None]:  # type: ignore[no-untyped-def]
        *ts, need_ = rest
        return _log_rounding_terms(family, need_, k, list(ts[:m]), list(ts[m:]), is_log)

    return _in_chunks(terms, need, k, *params, extra=tuple(logs))


def _log_rounding_terms(family: str, need: bool, k: Tensor, params: list[Tensor],
                        logs: list[Tensor], is_log: list[bool]) -> list[Tensor | None]:  # fmt: skip
    """What to add to the float64 value (and, with ``need``, to the derivatives in the
    natural parameters) computed at ``params`` = exp(``logs``) rounded, to get them at the
    exact exp(``logs``), to first order (the second order is ~2^-106 relative).

    With d_l = log(p_l) - log_l (in double-double, ``dd_log``: about an ulp of exp's
    rounding; 0 for a natural parameter) and g_j = dL/dp_j:

        value:  - sum_l d_l p_l g_l
        g_j:    - d_j g_j [log j] - sum_l d_l dg_j/dlog p_l

    (the second line is p_true,j g_j(p_true) / p_j: the caller's chain rule multiplies by
    the rounded p_j). Near a zero crossing of a derivative, sum_l d_l dg_j/dlog p_l is as
    large as the result itself, so it must be accurate to a few ulp: it is the
    forward-mode derivative (``torch.func.jvp``, tangent d) of the where-based kernel's
    derivatives, which also give g. ``k``, ``params``, ``logs``: float64, one shape;
    ``logs`` holds the caller's log-parameters where ``is_log`` (elsewhere the natural
    parameter, unused). Eager code (double-double arithmetic); compiled callers use
    :func:`_log_rounding_opaque`. Non-finite terms (an overflowing kernel) are dropped."""
    deltas = []
    for p, lg, is_lg in zip(params, logs, is_log, strict=True):
        if is_lg:
            hi, lo = dd_log(p)
            deltas.append((hi - lg) + lo)  # hi - lg: exact (Sterbenz) or both ~0
        else:
            deltas.append(torch.zeros_like(p))

    def derivatives(*ps: Tensor) -> tuple[Tensor, ...]:
        natural = [torch.exp(t) if is_lg else t for t, is_lg in zip(ps, is_log, strict=True)]
        _, *grads = _KERNELS[family][0](k, *natural, True)
        return tuple(grads)

    # contiguous: a broadcast (stride-0) input cannot carry a tangent
    primals = tuple((lg if is_lg else p).contiguous()
                    for p, lg, is_lg in zip(params, logs, is_log, strict=True))  # fmt: skip
    grads, moved = torch.func.jvp(derivatives, primals, tuple(deltas))
    out = [-sum(d * p * g for d, p, g in zip(deltas, params, grads, strict=True))]
    if need:
        out += [-(d * g if is_lg else 0.0) - dg
                for d, g, dg, is_lg in zip(deltas, grads, moved, is_log, strict=True)]  # fmt: skip
    finite = [torch.where(torch.isfinite(t), t, torch.zeros_like(t)) for t in out]  # type: ignore[arg-type]
    return finite if need else [finite[0], *([None] * len(params))]


# The dispatch keys an eager call runs with, captured at import (an eager context): a
# compiled graph runs custom operators with the autograd and functorch keys excluded,
# and the forward-mode derivative inside _log_rounding_correction needs them back.
_EAGER_KEYS = (torch._C._dispatch_tls_local_include_set(),
               torch._C._dispatch_tls_local_exclude_set())  # fmt: skip


@torch.library.custom_op("ztbench::zt_loss_log_rounding", mutates_args=())
def _log_rounding_opaque(family: str, need: bool, k: Tensor, params: list[Tensor],
                         logs: list[Tensor], is_log: list[bool]) -> list[Tensor]:  # fmt: skip
    """:func:`_log_rounding_correction` as one opaque operator for torch.compile (its
    error-free transforms need every product rounded on its own), run with eager mode's
    dispatch keys."""
    with torch._C._ForceDispatchKeyGuard(*_EAGER_KEYS):
        terms = _log_rounding_correction(family, need, k, params, logs, is_log)
    return [t for t in terms if t is not None]


@_log_rounding_opaque.register_fake
def _(family: str, need: bool, k: Tensor, params: list[Tensor], logs: list[Tensor],
      is_log: list[bool]) -> list[Tensor]:  # fmt: skip
    return [torch.empty_like(k) for _ in range(1 + (len(params) if need else 0))]


# Elements per thread and call of an eager kernel: the eager path makes dozens of passes
# over its float64 temporaries, and 2^15 elements per thread (256 KiB per temporary)
# keep them in a core's L2 cache, which is faster than one call over 10^6 elements;
# much smaller slices pay per-operation overhead instead. A call takes EAGER_CHUNK
# elements per intra-op thread, so that each operation still spreads over every thread
# (torch splits an operation into pieces of 2^15 elements at least).
EAGER_CHUNK = 2**15


def _chunk_size() -> int:
    """Elements per eager call: EAGER_CHUNK per intra-op thread."""
    return EAGER_CHUNK * max(1, torch.get_num_threads())


def _in_chunks(kernel, need: bool, k: Tensor, *params: Tensor,  # type: ignore[no-untyped-def]
               extra: tuple[Tensor, ...] = ()) -> list[Tensor | None]:  # fmt: skip
    """kernel(k, *params, *extra, need) on slices of :func:`_chunk_size` elements on the
    CPU (elementwise: the same bits as one call), the outputs (the value, then one per
    parameter when ``need``) written into full-size tensors. ``extra``: further inputs of
    the same shape, sliced alongside, with no output of their own."""
    shape = k.shape
    flat = [t.reshape(-1) for t in (k, *params, *extra)]
    n = flat[0].numel()
    chunk = _chunk_size()
    if n <= chunk or k.device.type != "cpu":  # a GPU wants one large launch per op
        outs = list(kernel(*flat, need))
    else:
        outs = [torch.empty_like(flat[0])]
        outs += [torch.empty_like(flat[0]) if need else None for _ in params]
        for start in range(0, n, chunk):
            part = kernel(*(t[start : start + chunk] for t in flat), need)
            for out, res in zip(outs, part, strict=True):
                if out is not None:
                    out[start : start + chunk] = res
    return [None if o is None else o.reshape(shape) for o in outs]


def _screened_kernel(family: str, need: bool, full: bool, out_dtype: torch.dtype,
                     d_dtype: torch.dtype, k: Tensor, params: list[Tensor],
                     is_log: tuple[bool, ...]) -> tuple[Tensor, list[Tensor]] | None:  # fmt: skip
    """(value in ``out_dtype``, derivatives in ``d_dtype`` and the caller's
    parametrisation) for results of float32 precision or less, on flat inputs; None
    when an element is invalid (k not an integer >= 1, a parameter not finite and > 0,
    or a log-parameter whose exp leaves float32's positive range).

    In chunks of :func:`_chunk_size` elements, the plain formula in float64
    (:mod:`ztbench.loss.screened`, natural parameters: exp of a log-parameter in
    float64), which certifies that its result is within 2^-28 relative of the exact one
    (so a float32 result is within 0.5 + 1/8 ulp): ZTP against one bound from the
    inputs' extremes (which the validity checks compute anyway), ZTNB element by
    element. The elements it does not certify (near zero crossings, the large-theta and
    tiny-lam cancellations) are recomputed by the careful kernel
    (:func:`_recompute_at`). On realistic inputs
    nearly every element is certified, and the plain formula costs a fraction of the
    careful one.
    """

    n = k.numel()
    if n == 0:
        empty = [torch.empty(0, dtype=d_dtype) for _ in params] if need else []
        return torch.empty(0, dtype=out_dtype), empty
    # validity and the extremes the ZTP bound takes, once over the inputs as given
    k_min, k_max = _extremes(k)
    if not V.all_valid_k(k, k_min, k_max):
        return None
    ranges = []
    for t, lg in zip(params, is_log, strict=True):
        lo, hi = _extremes(t)
        if lg:
            if not hi <= _LOG_NAT_MAX:  # math.exp would overflow (False at NaN)
                return None
            # exp is increasing; math.exp and torch.exp may differ in the last bit, which
            # the bound's slack covers
            lo, hi = math.exp(lo), math.exp(hi)
        if not (lo > 0.0 and hi < (_NAT_MAX if lg else math.inf)):  # False at NaN
            return None
        ranges.append((lo, hi))
    if family == "ztnb":  # w = theta log1p(mu/theta) increases in mu and in theta
        (mu_min, _), (theta_min, _) = ranges
        w_min = theta_min * math.log1p(mu_min / theta_min)
    value = torch.empty(n, dtype=out_dtype)
    derivs = [torch.empty(n, dtype=d_dtype) for _ in params] if need else []
    rejected: list[Tensor] = []
    chunk = _chunk_size()
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        k64 = k[part].to(_F64)
        ps = [_to64(t[part], lg) for t, lg in zip(params, is_log, strict=True)]
        if family == "ztpoisson":
            v, *ds, rej = S.ztp_screened_chunk(k64, ps[0], need, full, k_max, *ranges[0])
        else:
            v, *ds, margin = S.ztnb_screened(k64, *ps, need, full, w_min)
            rej = _idx(S.certified(margin).logical_not_())
        value[part] = v
        for out, d in zip(derivs, _chain_rule(ds, ps, is_log) if need else [], strict=True):
            out[part] = d
        if rej.numel():
            rejected.append(rej.add_(start))
    if rejected:
        _recompute_at(family, need, full, is_log, k, params, torch.cat(rejected),
                      [value, *derivs])  # fmt: skip
    return value, derivs


def _chain_rule(ds: list[Tensor], ps: list[Tensor], is_log: tuple[bool, ...] | list[bool]
                ) -> list[Tensor]:  # fmt: skip
    """Derivatives in natural parameters to the caller's: d/dlog p = p d/dp."""
    return [d * p if lg else d for d, p, lg in zip(ds, ps, is_log, strict=True)]


def _recompute_at(family: str, need: bool, full: bool, is_log: tuple[bool, ...] | list[bool],
                  k: Tensor, params: list[Tensor], idx: Tensor,
                  outs: list[Tensor]) -> None:  # fmt: skip
    """Overwrite ``outs`` (flat: the value, then the derivatives in the caller's
    parametrisation when ``need``, each in its own dtype) at the positions ``idx`` with
    the careful kernel's results (:func:`_in_chunks` of the INDEX kernel, then
    :func:`_apply_full` with ``full``). ``k`` and ``params``: flat, as the caller gave
    them (log-parameters where ``is_log``); only the elements at ``idx`` are converted."""
    k_r = k.index_select(0, idx).to(_F64)
    p_r = [_to64(t.index_select(0, idx), lg) for t, lg in zip(params, is_log, strict=True)]
    v, *ds = _in_chunks(_KERNELS[family][1], need, k_r, *p_r)
    if full:
        v = _apply_full(family, k_r, p_r, v)  # type: ignore[arg-type]
    results = [v, *(_chain_rule(ds, p_r, is_log) if need else [])]  # type: ignore[arg-type]
    for out, res in zip(outs, results, strict=True):
        out.index_copy_(0, idx, res.to(out.dtype))  # type: ignore[union-attr]


def _extremes(t: Tensor) -> tuple[float, float]:
    """(min, max) of a tensor as Python floats (NaN if it holds a NaN)."""
    lo, hi = torch.aminmax(t)
    return float(lo), float(hi)


def _forward_float32(family: str, full: bool, need: bool, out_dtype: torch.dtype, k: Tensor,
                     params: tuple[Tensor, ...], is_log: tuple[bool, ...],
                     mask: Tensor | None) -> tuple[Tensor, list[Tensor]] | None:  # fmt: skip
    """The eager forward for float32 parameters on the CPU: (value in ``out_dtype``,
    float32 derivatives in the caller's parametrisation) by :func:`_screened_kernel` on
    the kept elements (all without ``mask``; masked-out ones get exactly 0 in every
    output), or None when a kept element is invalid or a log-parameter is out of
    float32's range (the general path then raises or puts NaN there). Inputs stay
    float32 until each chunk is converted (no full-size float64 copies).
    """
    cols = torch.broadcast_tensors(k, *params, *(() if mask is None else (mask,)))
    shape = cols[0].shape
    flat = [t.reshape(-1) for t in cols]
    keep = None
    if mask is not None:
        keep = _idx(flat.pop().to(torch.bool))
        flat = [t.index_select(0, keep) for t in flat]
    res = _screened_kernel(family, need, full, out_dtype, torch.float32, flat[0], flat[1:],
                           is_log)  # fmt: skip
    if res is None:
        return None
    value, derivs = res
    if keep is not None:
        total = shape.numel()
        value = torch.zeros(total, dtype=out_dtype).index_copy_(0, keep, value)
        derivs = [torch.zeros(total, dtype=torch.float32).index_copy_(0, keep, d) for d in derivs]
    return value.reshape(shape), [d.reshape(shape) for d in derivs]


# the largest natural parameter the float32 fast path takes from a log-parameter (exp in
# float64 of a float32 log-parameter stays inside float32's range, so every float64
# term of the plain formulas stays finite, see ztbench.loss.screened)
_NAT_MAX = 2.0**128
_LOG_NAT_MAX = math.log(_NAT_MAX)


def _apply_full(family: str, k: Tensor, params: list[Tensor], value: Tensor,
                refine: bool = False) -> Tensor:  # fmt: skip
    """``full=True``: -log P(X = k) from the loss ``value`` (float64, at the kernel's inputs)
    in Loader's stirlerr + bd0 form where it applies (:func:`ztbench.loss.stirlerr.ztp_full_value`,
    :func:`~ztbench.loss.stirlerr.ztnb_full_value`: lgamma(k + 1) is never added to the
    cancelling -k log(lam) + lam, resp. -lgamma(k + theta)), else value + lgamma(k + 1);
    ``refine`` (float64 results, eager): :func:`_refine_full_float64`."""
    if family == "ztpoisson":
        full = ztp_full_value(k, params[0], value)
    else:
        full = ztnb_full_value(k, params[0], params[1], value)
    return _refine_full_float64(family, k, params, full) if refine else full


def _refine_full_float64(family: str, k: Tensor, params: list[Tensor], full: Tensor) -> Tensor:
    """The full value recomputed in double-double where its float64 form cancels: ZTP where
    Loader's bd0 is evaluated with cancellation (:func:`~ztbench.loss.stirlerr.ztp_full_condition`),
    ZTNB where Loader's form cancels or, where it does not apply, value + lgamma(k + 1)
    does (:func:`~ztbench.loss.dd.ztnb.ztnb_value_cancellation`); lgamma(k + 1) is then one
    of the summed terms (:func:`~ztbench.loss.dd.ztp.ztp_full_value_dd`,
    :func:`~ztbench.loss.dd.ztnb.ztnb_full_value_dd`). Eager only, as :func:`_refine_float64`.
    """
    if family == "ztpoisson":
        (lam,) = params
        flag = ztp_full_condition(k, lam, full) > dd_ztp.FULL_CANCEL_FACTOR
        return _replace_flagged(full, flag, dd_ztp.ztp_full_value_dd, k, lam)
    mu, theta = params
    cond = ztnb_full_condition(k, mu, theta, full)
    flag = torch.where(
        cond.isinf(),
        dd_ztnb.ztnb_value_cancellation(k, mu, theta, full, True),
        cond > dd_ztnb.FULL_CANCEL_FACTOR,
    ) & ~_ztnb_tiny_loss(k, mu / theta)  # lgamma(k + 1) = 0 at k = 1: the loss itself
    return _replace_flagged(full, flag, dd_ztnb.ztnb_full_value_dd, k, mu, theta)


# --------------------------------------------------------------------------- autograd
# One autograd node per call (:class:`_ZTLoss`). Its forward returns the elementwise loss
# and, as extra outputs marked non-differentiable, its first derivatives in the caller's
# parametrisation (float64, computed in the same pass). First-order backward and jvp are
# those derivatives times the incoming (co)tangent. Where the backward or the jvp is itself
# differentiated (create_graph=True, torch.func transforms, nested forward AD), the
# derivatives are recomputed as a differentiable graph of the where-based kernels
# (:func:`_derivatives_graph`): their values stay the saved ones (the graph enters as
# d_saved + (d - d.detach()), exactly d_saved), their derivatives are the kernels' own,
# so Hessian-vector products, gradient penalties and gradgradcheck see every term.
def _fill(x: Tensor, run: Tensor, keep: Tensor | None) -> Tensor:
    """x where the element was computed; NaN at invalid kept elements (NaN in, NaN out),
    exactly 0 at masked-out ones."""
    nan = torch.full_like(x, float("nan"))
    if keep is None:
        return torch.where(run, x, nan)
    return torch.where(run, x, torch.where(keep, nan, torch.zeros_like(x)))


def _prepare(
    k: Tensor, mask: Tensor | None, params: tuple[Tensor, ...], is_log: tuple[bool, ...]
) -> tuple[Tensor, list[Tensor], Tensor, Tensor | None]:
    """(k, natural parameters) in float64 broadcast to the loss's shape, the elements to
    compute (valid and kept), and the broadcast mask (None without one)."""
    dev = params[0].device
    k = k.to(dev)
    p64 = [_to64(p, lg) for p, lg in zip(params, is_log, strict=True)]
    # validity in the inputs' own dtypes where that is exact (exp of a log-parameter can
    # over/underflow only in float64)
    ok = V.valid_k(k)
    for p, p_64, lg in zip(params, p64, is_log, strict=True):
        ok = ok & V.valid_param(p_64 if lg or not p.is_floating_point() else p)
    keep = None if mask is None else mask.to(dev, torch.bool)
    if keep is None:
        k64, *p64 = torch.broadcast_tensors(k.to(_F64), *p64)
        run = ok.expand(k64.shape)
    else:
        k64, *p64, keep = torch.broadcast_tensors(k.to(_F64), *p64, keep)
        run = ok.expand(k64.shape) & keep
    return k64, p64, run, keep


def _safe(run: Tensor, k64: Tensor, p64: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Inputs with 1 at the elements not computed (a point every kernel branch accepts)."""
    one = torch.ones_like(k64)
    return torch.where(run, k64, one), [torch.where(run, p, one) for p in p64]


def _derivatives_graph(family: str, is_log: tuple[bool, ...], k: Tensor, mask: Tensor | None,
                       params: tuple[Tensor, ...]) -> list[Tensor]:  # fmt: skip
    """The first derivatives (caller's parametrisation, float64) as a differentiable graph
    of the where-based kernel (safe inputs everywhere: no NaN from a branch not taken)."""
    k64, p64, run, keep = _prepare(k, mask, params, is_log)
    k_in, p_in = _safe(run, k64, p64)
    _, *grads = _KERNELS[family][0](k_in, *p_in, True)
    return [_fill(d, run, keep) for d in _chain_rule(grads, p_in, is_log)]


def _transform_active() -> bool:
    """A torch.func transform is running (its levels wrap the tensors we see)."""
    return torch._C._functorch.maybe_current_level() is not None


def _derivatives(ctx, differentiable: bool) -> list[Tensor]:  # type: ignore[no-untyped-def]
    """The saved derivatives; with ``differentiable``, the same values carrying the
    kernels' derivatives (see the section comment)."""
    k, mask, *rest = ctx.saved_tensors
    params, saved = tuple(rest[: ctx.n]), rest[ctx.n :]
    if not differentiable and saved:
        return list(saved)
    if not differentiable:  # derivatives were not needed at forward time (no_grad caller)
        with torch.no_grad():
            return _derivatives_graph(ctx.family, ctx.is_log, k, mask, params)
    graph = _derivatives_graph(ctx.family, ctx.is_log, k, mask, params)
    if not saved:
        return graph
    return [s + (d - d.detach()) for s, d in zip(saved, graph, strict=True)]


_N_CONST = 8  # family, is_log, full, out_dtype, need, labels, k, mask precede the parameters


def _eager_kernel(family: str, need: bool, refine: bool, k: Tensor,
                  *params: Tensor) -> list[Tensor | None]:  # fmt: skip
    """The eager kernel (INDEX dispatch, in chunks), float64 results refined where they
    cancel (``refine``): (value, *derivatives or None). Without ``refine`` (results of
    float32 precision or less) the screened plain formula first
    (:func:`_screened_kernel`; CPU only: a GPU wants one launch per operation)."""
    if not refine and k.device.type == "cpu":
        flat = [p.reshape(-1) for p in params]
        res = _screened_kernel(family, need, False, _F64, _F64, k.reshape(-1), flat,
                               (False,) * len(params))  # fmt: skip
        assert res is not None, "the general path passes valid (safe) inputs only"
        value, derivs = res
        if not need:
            return [value.reshape(k.shape), *([None] * len(params))]
        return [value.reshape(k.shape), *(d.reshape(k.shape) for d in derivs)]
    fast = _KERNELS[family][1]
    if not refine:
        return _in_chunks(fast, need, k, *params)

    def refined(k: Tensor, *params_and_need) -> list[Tensor | None]:  # type: ignore[no-untyped-def]
        # kernel and refinement chunk by chunk: the refinement's passes stay in cache
        *ps, need_ = params_and_need
        value, *grads = fast(k, *ps, need_)
        value, grads = _refine_float64(family, k, list(ps), value, grads)
        return [value, *grads]

    return _in_chunks(refined, need, k, *params)


@torch.library.custom_op("ztbench::zt_loss_kernel", mutates_args=())
def _opaque_kernel(
    family: str, need: bool, refine: bool, k: Tensor, params: list[Tensor]
) -> list[Tensor]:
    """:func:`_eager_kernel` as one opaque operator for torch.compile on the CPU.

    Traced, the where-based kernels make a graph of thousands of nodes (every branch of
    every series everywhere): minutes of cold compilation, and the compiled code runs
    every branch on every element. As an operator, the kernel is one node: compiling the
    loss costs about what compiling the naive formula costs, the compiled loss runs the
    eager kernel (each branch on its own elements), and compiled results are those of
    eager mode, bit for bit (double-double refinement included). Inputs: float64 tensors
    of one shape (k, then the parameters); outputs: the value, then the derivatives when
    ``need``.
    """
    return [t.clone() if t is k or any(t is p for p in params) else t
            for t in _eager_kernel(family, need, refine, k, *params) if t is not None]  # fmt: skip


@_opaque_kernel.register_fake
def _(family: str, need: bool, refine: bool, k: Tensor, params: list[Tensor]) -> list[Tensor]:
    return [torch.empty_like(k) for _ in range(1 + (len(params) if need else 0))]


@torch.library.custom_op("ztbench::zt_loss_recompute_rejected", mutates_args=("outs",))
def _recompute_rejected(family: str, need: bool, full: bool, is_log: list[bool], k: Tensor,
                        params: list[Tensor], outs: list[Tensor],
                        rejected: Tensor) -> None:  # fmt: skip
    """Overwrite ``outs`` (the flat value, then the derivatives in the caller's
    parametrisation when ``need``, each in its own dtype) with the careful kernel's
    results where the flat ``rejected`` (float32: 1 to recompute, 0 to keep) is 1.

    The compiled counterpart of :func:`_screened_kernel`'s :func:`_recompute_at`: an
    opaque operator, because which elements (and how many) are rejected is known only at
    run time. ``k`` and ``params`` are the inputs as the caller gave them (log-parameters
    where ``is_log``), broadcast here."""
    if not float(rejected.amax()) > 0.0:  # one read pass: nothing to recompute
        return
    # the positions of the 1.0s: nonzero on the bits (0.0 is all-zero bits), a pass
    # cheaper than comparing first
    idx = _idx(rejected.view(torch.int32))
    k_f, *p_f = (t.reshape(-1) for t in torch.broadcast_tensors(k, *params))
    _recompute_at(family, need, full, is_log, k_f, p_f, idx, outs)


@_recompute_rejected.register_fake
def _(family: str, need: bool, full: bool, is_log: list[bool], k: Tensor,
      params: list[Tensor], outs: list[Tensor], rejected: Tensor) -> None:  # fmt: skip
    return None


def _screened_traced(family: str, is_log: tuple[bool, ...], full: bool,
                     out_dtype: torch.dtype, need: bool, k: Tensor, params: tuple[Tensor, ...],
                     k64: Tensor, p64: list[Tensor], run: Tensor,
                     keep: Tensor | None) -> tuple[Tensor, ...]:  # fmt: skip
    """The forward's outputs (value in ``out_dtype``, *derivatives) for results of
    float32 precision or less under torch.compile on the CPU.

    The screened plain formula (:mod:`ztbench.loss.screened`, element-wise test) as
    traced operations on the float64 inputs ``k64``, ``p64`` (no safe stand-ins needed:
    whatever an invalid or masked-out element computes, NaN included, is replaced and
    never recomputed), with the chain rule for log-parameters, NaN / 0 at invalid /
    masked-out elements and the rounding to the outputs' dtypes: torch.compile fuses all
    of it into one pass that reads the inputs and writes the outputs (no float64 tensor
    in memory). Then one opaque call,
    :func:`_recompute_rejected`, on the valid kept elements it does not certify. The
    guarantee of the eager :func:`_screened_kernel` holds (the bound's error model covers
    the compiled elementary functions, see tests/loss/test_screened.py), not its bits.
    Derivatives are in the parameter's dtype when it has the loss's shape (as in eager
    mode), else float64 (summed over the broadcast dimensions in float64 by backward).
    """
    shape = k64.shape
    flat = [t.reshape(-1) for t in (k64, *p64)]
    run_f = run.reshape(-1)
    keep_f = None if keep is None else keep.reshape(-1)
    screened = S.ztp_screened if family == "ztpoisson" else S.ztnb_screened
    value, *ds, margin = screened(*flat, need, full)
    # 1 where the careful kernel recomputes (not certified; valid and kept elements only),
    # as float32: compiled CPU code stores floats several times faster than booleans
    rejected = torch.where(S.certified(margin) | ~run_f, 0.0, 1.0).to(torch.float32)
    outs = [_fill(value, run_f, keep_f).to(out_dtype)]
    if need:
        for d, p in zip(_chain_rule(ds, flat[1:], is_log), params, strict=True):
            d_dtype = p.dtype if p.shape == shape else _F64
            outs.append(_fill(d, run_f, keep_f).to(d_dtype))
    _recompute_rejected(family, need, full, list(is_log), k, list(params), outs,
                        rejected)  # fmt: skip
    return tuple(o.reshape(shape) for o in outs)


class _ZTLossCompiled(torch.autograd.Function):
    """The loss node as torch.compile traces it (Dynamo does not trace a custom jvp).

    Under torch.compile on the CPU: for results of float32 precision or less the
    screened plain formula traced and fused, with the elements it does not certify
    recomputed by one opaque operator (:func:`_screened_traced`); for float64 results
    :func:`_opaque_kernel` (one node, eager bits, double-double refinement included).
    Elsewhere the where-based kernel (traced and fused)."""

    @staticmethod
    def forward(  # type: ignore[override]
        family: str,
        is_log: tuple[bool, ...],
        full: bool,
        out_dtype: torch.dtype,
        need: bool,
        labels: tuple[str, ...] | None,
        k: Tensor,
        mask: Tensor | None,
        *params: Tensor,
    ) -> tuple[Tensor, ...]:
        """(loss rounded to ``out_dtype``, *derivatives if ``need``).

        k and the parameters to float64 (exp of a log-parameter), broadcast; elements that
        are invalid or masked out get safe inputs (on the CPU in eager mode only when
        there is one) and then NaN (invalid) or 0 (masked out) in every output;
        ``full`` adds lgamma(k + 1). The derivatives are float64, already in the caller's
        parametrisation (d/dlog p = p d/dp); float64 results are refined where they
        cancel (:func:`_refine_float64`). ``labels`` (the parameters' names), when given,
        asks for ``validate=True``'s checks: here, where a torch.func transform has
        unwrapped the tensors, so that its host checks see plain tensors.
        """
        compiling = torch.compiler.is_compiling()
        f32 = all(p.dtype == torch.float32 and p.device == k.device for p in params)
        f32 = f32 and (mask is None or mask.device == k.device)
        if not compiling and k.device.type == "cpu" and f32:
            fast = _forward_float32(family, full, need, out_dtype, k, params, is_log, mask)
            if fast is not None:
                return (fast[0], *fast[1])
        k64, p64, run, keep = _prepare(k, mask, params, is_log)
        # on the CPU a host check is free (no device to wait for): skip the masking when
        # every element is computed, the common case; elsewhere mask without synchronising
        masked = compiling or run.device.type != "cpu" or not bool(run.all())
        # validate=True costs nothing more when every element is computed (run holds the
        # same rules); otherwise the checks find the message (masked-out elements pass)
        if labels is not None and masked:
            V.check_inputs(k.to(run.device), list(zip(labels, params, is_log, strict=True)), keep)
        refine = _float_dtype(*params) == _F64
        if compiling and run.device.type == "cpu" and not refine:
            return _screened_traced(family, is_log, full, out_dtype, need, k, params,
                                    k64, p64, run, keep)  # fmt: skip
        k_in, p_in = _safe(run, k64, p64) if masked else (k64, p64)
        if not compiling:
            value, *grads = _eager_kernel(family, need, refine, k_in, *p_in)
        elif run.device.type == "cpu":
            # one opaque call to the eager kernel (see _opaque_kernel)
            value, *rest = _opaque_kernel(family, need, refine, k_in, list(p_in))
            grads = rest if need else [None] * len(p_in)
        else:  # a GPU: every branch everywhere, traced and fused by torch.compile
            value, *grads = _KERNELS[family][0](k_in, *p_in, need)
        if full:  # refined in double-double in eager mode only (as the kernel)
            value = _apply_full(family, k_in, p_in, value, refine and not compiling)
        if refine and any(is_log):  # float64 results at the caller's exact exp(log p)
            logs = [p.to(_F64).expand(k_in.shape) if lg else p_n
                    for p, p_n, lg in zip(params, p_in, is_log, strict=True)]  # fmt: skip
            if masked:  # the safe stand-in of a log-parameter is 0 (= log 1)
                logs = [torch.where(run, lg, 0.0) if is_lg else lg
                        for lg, is_lg in zip(logs, is_log, strict=True)]  # fmt: skip
            correct = _log_rounding_opaque if compiling else _log_rounding_correction
            delta = correct(family, need, k_in, list(p_in), logs, list(is_log))
            value = value + delta[0]  # type: ignore[operator]
            if need:
                grads = [g + d for g, d in zip(grads, delta[1:], strict=True)]  # type: ignore[operator]
        if masked:
            value = _fill(value, run, keep)
        derivs = _chain_rule(grads, p_in, is_log) if need else []  # type: ignore[arg-type]
        if masked:
            derivs = [_fill(d, run, keep) for d in derivs]
        return (value.to(out_dtype), *derivs)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def, override]
        family, is_log, _, out_dtype, _, _, k, mask, *params = inputs
        _, *derivs = output
        ctx.mark_non_differentiable(*derivs)
        ctx.save_for_backward(k, mask, *params, *derivs)
        ctx.family, ctx.is_log, ctx.n, ctx.out_dtype = family, is_log, len(params), out_dtype
        ctx.shapes = [(p.shape, p.dtype) for p in params]

    @staticmethod
    def backward(ctx, grad: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        """grad (to float64) x derivative, summed to the parameter's shape (broadcasting),
        rounded once to its dtype; differentiable when the backward is differentiated."""
        if torch.compiler.is_compiling():
            differentiable = torch.is_grad_enabled()
        else:
            differentiable = torch.is_grad_enabled() or _transform_active()
        derivs = _derivatives(ctx, differentiable)
        out: list[Tensor | None] = [None] * _N_CONST
        for i, (d, (shape, dtype)) in enumerate(zip(derivs, ctx.shapes, strict=True)):
            if not ctx.needs_input_grad[_N_CONST + i]:
                out.append(None)
            elif d.dtype == dtype and d.shape == shape:
                # a derivative already rounded to the parameter's dtype (the float32 fast
                # path) and nothing to sum: one product in that dtype (one more rounding)
                out.append(grad.to(dtype) * d)
            else:
                out.append((grad.to(_F64) * d).sum_to_size(shape).to(dtype))
        return tuple(out)


class _ZTLoss(_ZTLossCompiled):
    """The loss node in eager mode: adds forward-mode AD (torch.func.jvp, jacfwd) and a
    vmap rule (the loss is elementwise: the batch dimension becomes a leading dimension
    of one call)."""

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def, override]
        _ZTLossCompiled.setup_context(ctx, inputs, output)
        _, _, _, _, _, _, k, mask, *params = inputs
        _, *derivs = output
        ctx.save_for_forward(k, mask, *params, *derivs)

    @staticmethod
    def jvp(ctx, *tangents: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        derivs = _derivatives(ctx, True)
        tv: Tensor | None = None
        for d, t in zip(derivs, tangents[_N_CONST:], strict=True):
            if t is not None:
                term = d * t.to(_F64)
                tv = term if tv is None else tv + term
        if tv is not None:
            tv = tv.to(ctx.out_dtype)
        n_derivs = len(ctx.saved_tensors) - 2 - ctx.n
        return (tv, *([None] * n_derivs))

    @staticmethod
    def vmap(info, in_dims, *args):  # type: ignore[no-untyped-def, override]
        consts, tensors, dims = args[:6], args[6:], in_dims[6:]
        logical = [
            t.shape if d is None else t.shape[:d] + t.shape[d + 1 :]
            for t, d in zip(tensors, dims, strict=True)
            if t is not None
        ]
        ndim = len(torch.broadcast_shapes(*logical))

        def lead(t: Tensor | None, d: int | None) -> Tensor | None:
            # batch dimension first, then padded so that it broadcasts in front of the rest
            if t is None or d is None:
                return t
            t = t.movedim(d, 0)
            return t.reshape(t.shape[0], *([1] * (ndim - t.dim() + 1)), *t.shape[1:])

        out = _ZTLoss.apply(*consts, *(lead(t, d) for t, d in zip(tensors, dims, strict=True)))
        return out, tuple(0 for _ in out)


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


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")


def _to64(t: Tensor, is_log: bool) -> Tensor:
    t64 = t.to(_F64)
    return torch.exp(t64) if is_log else t64


def _needs_derivatives(params: tuple[Tensor, ...]) -> bool:
    """Whether the forward should compute the derivatives too: autograd will ask for them,
    or a torch.func transform or forward-mode AD may."""
    grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
    if grad or torch.compiler.is_compiling():
        return grad
    if _transform_active():
        return True
    return any(fwAD.unpack_dual(p).tangent is not None for p in params)


def _apply(family: str, k: Tensor, params: tuple[Tensor, ...], is_log: tuple[bool, ...],
           reduction: str, full: bool, mask: Tensor | None, weight: Tensor | None,
           labels: tuple[str, ...] | None) -> Tensor:  # fmt: skip
    """The loss node, weights, then the reduction (in float64) and one rounding to the
    output dtype. The mean divides by the number of kept elements (the sum of the kept
    weights with ``weight=``)."""
    out_dtype = _float_dtype(*params)
    direct = reduction == "none" and weight is None
    node = _ZTLossCompiled if torch.compiler.is_compiling() else _ZTLoss
    need = _needs_derivatives(params)
    inner = out_dtype if direct else _F64
    args = (family, is_log, full, inner, need, labels, k, mask, *params)
    if torch.compiler.is_compiling() and not need:
        # no gradient to carry: the forward alone, traced as it is (torch.compile's
        # no-grad handling of autograd.Function.apply passes a context argument to a
        # forward with *args whenever the call has more than one parameter)
        value = _ZTLossCompiled.forward(*args)[0]
    else:
        value = node.apply(*args)[0]
    if direct:
        return value
    if weight is not None:
        value = value * weight.to(value.device, _F64)
    if reduction == "none":
        return value.to(out_dtype)
    total = value.sum()
    if reduction == "sum":
        return total.to(out_dtype)
    if mask is None and weight is None:
        return (total / value.numel()).to(out_dtype)
    count = torch.ones_like(value)
    if weight is not None:
        count = count * weight.to(value.device, _F64)
    if mask is not None:
        count = torch.where(mask.to(value.device, torch.bool), count, torch.zeros_like(count))
    return (total / count.sum()).to(out_dtype)


# --------------------------------------------------------------------------- public API
_COMMON_ARGS = """reduction: "mean" (default), "sum" or "none" (elementwise, broadcast shape).
        full: add lgamma(k + 1), the constant that makes it -log P(X = k).
        validate: check the input (k >= 1, integer-valued and finite; every parameter
            finite and > 0). Eager: ``ValueError`` naming the problem (host checks).
            Under torch.compile: one ``torch._assert_async`` inside the graph (no graph
            break), which fails the call when an element is invalid. With False no check:
            an invalid element gives NaN in the value and in the gradients (NaN in, NaN
            out, as torch's own losses), which the reduction propagates.
        mask: boolean tensor broadcastable to the loss, True where an element counts.
            A masked-out element contributes exactly 0 to the value and to every gradient,
            even when its inputs are invalid (k = 0, NaN), and is not validated; "mean"
            divides by the number of kept elements (NaN when none is kept, as torch's mean
            of an empty tensor: where a batch can hold no kept element, take "sum" and
            divide by ``mask.sum().clamp(min=1)``). To fit the nonzero counts of a count
            matrix ``x``: ``loss(x, ..., mask=x > 0)`` (``loss * (x > 0)`` would give NaN,
            since NaN * 0 = NaN).
        weight: tensor broadcastable to the loss: each element's loss is multiplied by
            its weight; "mean" divides by the sum of the kept weights. A zero weight does
            not mask: NaN * 0 is NaN (use ``mask``).
"""


def zt_poisson_nll(
    k: Tensor,
    lam: Tensor | float | None = None,
    *,
    log_lam: Tensor | float | None = None,
    reduction: Reduction = "mean",
    full: bool = False,
    validate: bool = True,
    mask: Tensor | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    """Zero-truncated Poisson negative log-likelihood.

    loss = -k log(lam) + log(e^lam - 1)  (+ lgamma(k + 1) with ``full=True``).

    Args:
        k: counts >= 1 (integer-valued, integer or floating tensor).
        lam: the mean of the untruncated Poisson, > 0; or ``log_lam`` = log(lam) (give
            exactly one). Gradients flow to whichever is given. The truncated law's mean
            is lam / (1 - e^-lam).
        {common}
    Returns:
        A tensor of the floating dtype of the parameter (float64 for float64 input;
        float32 / bfloat16 / float16 inputs are computed in float64 and rounded once).
    """
    _check_reduction(reduction)
    label, p, is_log = _param("lam", lam, log_lam, k.device if isinstance(k, Tensor) else None)
    k = _as_tensor(k, p.device)
    V.check_types(k, [(label, p)], mask, weight)
    labels = (label,) if validate else None
    return _apply("ztpoisson", k, (p,), (is_log,), reduction, full, mask, weight, labels)


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
    mask: Tensor | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    """Zero-truncated negative binomial negative log-likelihood (NB2: mean mu, size theta).

    loss = lgamma(theta) - lgamma(k + theta) - theta log(theta)
           + log((theta + mu)^theta - theta^theta) - k log(mu) + k log(theta + mu)
           (+ lgamma(k + 1) with ``full=True``).

    Args:
        k: counts >= 1 (integer-valued).
        mu / log_mu: the mean of the untruncated law (> 0), or its log (exactly one). The
            truncated law's mean is mu / (1 - (theta / (theta + mu))^theta).
        theta / log_theta: the inverse dispersion (> 0), or its log (exactly one).
        {common}
    Returns:
        A tensor of the promoted floating dtype of the parameters (computed in float64).
    """
    _check_reduction(reduction)
    dev = k.device if isinstance(k, Tensor) else None
    mlabel, pm, m_log = _param("mu", mu, log_mu, dev)
    tlabel, pt, t_log = _param("theta", theta, log_theta, pm.device)
    k = _as_tensor(k, pm.device)
    V.check_types(k, [(mlabel, pm), (tlabel, pt)], mask, weight)
    pt = pt.to(pm.device)
    labels = (mlabel, tlabel) if validate else None
    return _apply("ztnb", k, (pm, pt), (m_log, t_log), reduction, full, mask, weight, labels)


for _fn in (zt_poisson_nll, zt_negbin_nll):
    _fn.__doc__ = (_fn.__doc__ or "").replace("{common}", _COMMON_ARGS.rstrip() + "\n")
