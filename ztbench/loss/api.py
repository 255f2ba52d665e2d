"""The public functions of the shipped loss: argument handling, the autograd node, weights
and reductions.

``from ztbench.loss import zt_poisson_nll, zt_negbin_nll``::

    loss = zt_poisson_nll(k, log_lam=eta)                     # mean over elements
    loss = zt_negbin_nll(k, log_mu=eta, log_theta=phi, reduction="sum", full=True)
    loss = zt_negbin_nll(x, log_mu=eta, log_theta=phi, mask=x > 0)  # nonzero counts of x

Design (each part in its own module):

- Every input is computed in **float64** internally and the result rounded once to the
  input's floating dtype (float32, bfloat16, float16 inputs): one rounding of a value
  that is accurate to a few float64 ulp is within about half an ulp of the correctly
  rounded result in the narrower format.
- The loss is written so that the large terms cancel analytically (the log of the
  truncation normaliser is split into log w + log(expm1(w)/w), the lgamma and digamma
  differences are taken relative to k log(theta) and k/theta with Stirling and
  asymptotic series, every log(1 + small) is a log1p / log1pmx): the careful kernels,
  :mod:`ztbench.loss.kernels`.
- How a call computes is one of seven paths (:class:`~ztbench.loss.paths.Path`, chosen by
  :func:`~ztbench.loss.paths.choose_path` from the mode, the device and the dtypes).
  Float32 inputs on the CPU in eager mode take the float32 screen
  (:mod:`ztbench.loss.eager`): the plain formula in float64 (:mod:`ztbench.loss.screened`),
  kept at each element where a bound on its error proves the float32 result within
  0.5 + 1/8 ulp; the careful kernels recompute the other elements.
- Float64 results (eager): where the float64 sum cancels (the loss or a derivative
  crosses zero), the value or derivative is recomputed from terms exact to ~2^-104 and
  rounded once (:mod:`ztbench.loss.refine`, :mod:`ztbench.loss.dd`).
- ``full=True`` never adds lgamma(k + 1) to a cancelling sum: Loader's stirlerr + bd0
  form where it applies (:mod:`ztbench.loss.stirlerr`), refined in double-double for
  float64 results where it still cancels (:func:`~ztbench.loss.refine.apply_full`).
- One autograd node (:mod:`ztbench.loss.autograd`) returns analytic first derivatives
  computed in the same forward pass, each written as a sum of terms that do not cancel.
  Gradients with respect to log-parameters follow by the chain rule through exp (in
  float64); float64 results with log-parameters are moved from the rounded exp(log p)
  to the exact one to first order. The backward is differentiable (double backward,
  Hessians) and the node supports torch.func (jvp, a vmap rule).
- Under torch.compile, what must not be traced runs as custom operators
  (:mod:`ztbench.loss.ops`).
- The domain is every finite parameter > 0 (and every integer k >= 1): x = mu/theta
  overflowing float64 (theta < mu/DBL_MAX, e.g. mu = 1e300, theta = 1e-300) is computed
  from log(mu) - log(theta) (:func:`ztbench.loss.kernels.ztnb`), a float64 refinement
  whose double-double products overflow keeps the kernel's value.
- Invalid input (k < 1, non-integer or non-finite k, parameters that are NaN, not
  positive or not finite, weights that are negative, NaN or infinite): with
  ``validate=True`` a ``ValueError`` naming the problem in eager mode, one
  ``torch._assert_async`` under torch.compile (no graph break;
  :mod:`ztbench.loss.validation`); with ``validate=False`` NaN in the value and the
  gradients at those positions (a weight is used as given). ``mask=`` leaves elements
  out exactly (0 in the value and the gradients, whatever their inputs). Meta tensors
  raise ``ValueError`` (the computation reads values).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from ztbench.loss import validation as V
from ztbench.loss.autograd import LossSpec, ZTLoss, ZTLossEager, transform_active
from ztbench.loss.kernels import F64
from ztbench.loss.paths import result_dtype

__all__ = ["Reduction", "check_reduction", "zt_negbin_nll", "zt_poisson_nll"]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


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


def check_reduction(reduction: str) -> None:
    """Raise ``ValueError`` unless ``reduction`` is "mean", "sum" or "none"."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")


def _needs_derivatives(params: tuple[Tensor, ...]) -> bool:
    """Whether the forward should compute the derivatives too: autograd will ask for them,
    or a torch.func transform or forward-mode AD may."""
    grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
    if grad or torch.compiler.is_compiling():
        return grad
    if transform_active():
        return True
    return any(fwAD.unpack_dual(p).tangent is not None for p in params)


def _apply(family: str, k: Tensor, params: tuple[Tensor, ...], is_log: tuple[bool, ...],
           reduction: str, full: bool, mask: Tensor | None, weight: Tensor | None,
           labels: tuple[str, ...] | None) -> Tensor:  # fmt: skip
    """The loss node, weights, then the reduction (in float64) and one rounding to the
    output dtype. The mean divides by the number of kept elements (the sum of the kept
    weights with ``weight=``)."""
    out_dtype = result_dtype(*params)
    direct = reduction == "none" and weight is None
    node = ZTLoss if torch.compiler.is_compiling() else ZTLossEager
    need = _needs_derivatives(params)
    # without a reduction or weights the node rounds to the output dtype itself;
    # otherwise the float64 loss is weighted and reduced first, then rounded once
    spec = LossSpec(family=family, is_log=is_log, full=full,
                    out_dtype=out_dtype if direct else F64, need=need, labels=labels)  # fmt: skip
    if torch.compiler.is_compiling() and not need:
        # no gradient to carry: the forward alone, traced as it is (torch.compile's
        # no-grad handling of autograd.Function.apply passes a context argument to a
        # forward with *args whenever the call has more than one parameter)
        value = ZTLoss.forward(spec, k, mask, *params)[0]
    else:
        value = node.apply(spec, k, mask, *params)[0]
    if direct:
        return value
    if weight is not None:
        value = value * weight.to(value.device, F64)
    if reduction == "none":
        return value.to(out_dtype)
    total = value.sum()
    if reduction == "sum":
        return total.to(out_dtype)
    if mask is None and weight is None:
        return (total / value.numel()).to(out_dtype)
    count = torch.ones_like(value)
    if weight is not None:
        count = count * weight.to(value.device, F64)
    if mask is not None:
        count = torch.where(mask.to(value.device, torch.bool), count, torch.zeros_like(count))
    return (total / count.sum()).to(out_dtype)


_COMMON_ARGS = """reduction: "mean" (default), "sum" or "none" (elementwise, broadcast shape).
        full: add lgamma(k + 1), the constant that makes it -log P(X = k).
        validate: check the input (k >= 1, integer-valued and finite; every parameter
            finite and > 0; every weight finite and >= 0, masked-out positions included).
            Eager: ``ValueError`` naming the problem (host checks).
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
        weight: tensor broadcastable to the loss, finite and >= 0: each element's loss
            is multiplied by its weight; "mean" divides by the sum of the kept weights. A
            zero weight does not mask: NaN * 0 is NaN (use ``mask``). ``validate=True``
            raises ``ValueError`` naming ``weight`` at a negative, NaN or infinite weight
            (a negative one could make "mean" divide by a sum near 0: -inf, NaN); with
            False it is used as given (NaN in, NaN out).
        Meta tensors (``device="meta"``) raise ``ValueError``: the computation reads the
        inputs' values (path, branches, refinement), so it has no shape-only form.
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
    check_reduction(reduction)
    label, p, is_log = _param("lam", lam, log_lam, k.device if isinstance(k, Tensor) else None)
    k = _as_tensor(k, p.device)
    V.check_not_meta("zt_poisson_nll", [k, p, mask, weight])
    V.check_types(k, [(label, p)], mask, weight)
    if validate:
        V.check_weight(weight)
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
        theta / log_theta: the inverse dispersion (> 0), or its log (exactly one). Any
            finite mu, theta > 0 in float64, mu/theta beyond the float64 range included
            (e.g. mu = 1e300, theta = 1e-300). A Python float is converted to the
            default dtype (float32 unless changed): give such values as float64 tensors.
        {common}
    Returns:
        A tensor of the promoted floating dtype of the parameters (computed in float64).
    """
    check_reduction(reduction)
    dev = k.device if isinstance(k, Tensor) else None
    mlabel, pm, m_log = _param("mu", mu, log_mu, dev)
    tlabel, pt, t_log = _param("theta", theta, log_theta, pm.device)
    k = _as_tensor(k, pm.device)
    V.check_not_meta("zt_negbin_nll", [k, pm, pt, mask, weight])
    V.check_types(k, [(mlabel, pm), (tlabel, pt)], mask, weight)
    if validate:
        V.check_weight(weight)
    pt = pt.to(pm.device)
    labels = (mlabel, tlabel) if validate else None
    return _apply("ztnb", k, (pm, pt), (m_log, t_log), reduction, full, mask, weight, labels)


for _fn in (zt_poisson_nll, zt_negbin_nll):
    _fn.__doc__ = (_fn.__doc__ or "").replace("{common}", _COMMON_ARGS.rstrip() + "\n")
