"""Input checks of the shipped losses: which elements are valid, and the errors raised.

Two forms of the same rules (k >= 1, finite and integer-valued; every parameter finite
and > 0, after exp for a log-parameter):

- :func:`valid_k` / :func:`valid_param`: elementwise boolean tensors, traced as tensor
  operations (no host synchronisation), used by the autograd node to put NaN at invalid
  elements.
- :func:`check_inputs`: ``validate=True``. In eager mode each rule is one host check that
  raises ``ValueError`` naming the problem; under torch.compile (where a host check is a
  graph break) one ``torch._assert_async`` on the conjunction of the rules, which the
  compiled graph evaluates without leaving it and which fails the call with the message
  below when an element is invalid.

Elements left out by ``mask=`` are never checked: a masked-out k = 0 is no error.
:func:`check_weight` (``validate=True``) checks every weight, finite and >= 0.

:func:`check_types` runs whatever ``validate`` says: a wrong dtype (complex or boolean
numbers, a mask that is not boolean) is a programming error, found from the dtypes alone
(no host synchronisation, nothing traced).
"""

from __future__ import annotations

import torch
from torch import Tensor

_F64 = torch.float64
WEIGHT_MESSAGE = "invalid weight in a zero-truncated loss: every weight must be finite and >= 0"
ASYNC_MESSAGE = (
    "invalid input to a zero-truncated loss: k must be an integer >= 1 and every "
    "parameter finite and > 0 (exp of a log-parameter in float64 range)"
)


def check_types(k: Tensor, params: list[tuple[str, Tensor]], mask: Tensor | None,
                weight: Tensor | None) -> None:  # fmt: skip
    """Raise ``ValueError`` unless k, the parameters (``(label, tensor)``) and the weight
    hold real numbers (not complex, not boolean) and the mask is boolean."""
    named = [("k", k), *params, *([] if weight is None else [("weight", weight)])]
    for label, t in named:
        if t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{label} must be a real tensor, got {t.dtype}")
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"mask must be a boolean tensor (e.g. k > 0), got {mask.dtype}")


def check_not_meta(fn: str, tensors: list[Tensor | None]) -> None:
    """Raise ``ValueError`` when a tensor is on the meta device (whatever ``validate``
    says): the loss's path, its checks and its careful kernels read values (which
    elements take which branch, which are refined), so there is no shape-only form."""
    if torch.compiler.is_compiling():  # fake tensors report their real device
        return
    if any(t is not None and t.device.type == "meta" for t in tensors):
        raise ValueError(
            f"{fn}: meta tensors are not supported (the loss reads its inputs' values to "
            "choose how each element is computed); pass real tensors"
        )


def check_weight(weight: Tensor | None) -> None:
    """``validate=True``: raise ``ValueError`` unless every weight is finite and >= 0
    (zero included: it weights an element out of a weighted sum and mean).

    Every position is checked, masked-out ones included: the loss there is exactly 0,
    but 0 * NaN = NaN and 0 * inf = NaN would still reach the sum. Eager: one pass
    (``aminmax``, which propagates NaN) in the common valid case, the message found only
    on failure; under torch.compile one ``torch._assert_async`` (no graph break).
    """
    if weight is None:
        return
    if torch.compiler.is_compiling():
        w = weight.to(_F64)
        torch._assert_async(((w >= 0.0) & (w < float("inf"))).all(), WEIGHT_MESSAGE)
        return
    if weight.numel() == 0:
        return
    lo, hi = (float(t) for t in torch.aminmax(weight))
    if lo >= 0.0 and hi < float("inf"):  # False at NaN
        return
    w = weight if weight.is_floating_point() else weight.to(_F64)
    if bool(torch.isnan(w).any()):
        raise ValueError("weight contains NaN")
    if lo < 0.0:
        raise ValueError(f"weight must be >= 0, got min {lo}")
    raise ValueError("weight must be finite, got inf")


def valid_k(k: Tensor) -> Tensor:
    """k >= 1, finite and integer-valued (in k's own dtype: an integer tensor needs no
    floor; NaN fails every comparison)."""
    if not k.is_floating_point():
        return k >= 1
    return (k >= 1.0) & (k < float("inf")) & (torch.floor(k) == k)


def valid_param(p: Tensor) -> Tensor:
    """0 < p < inf (NaN fails both)."""
    return (p > 0.0) & (p < float("inf"))


def all_valid_k(k: Tensor, k_min: float, k_max: float) -> bool:
    """Every element of ``k`` passes :func:`valid_k`, given its extremes (eager host
    check, no boolean temporaries): k_min >= 1, k_max finite, and frac(k) is 0 exactly
    at integers (NaN at inf and NaN, which max |frac| propagates)."""
    if not (k_min >= 1.0 and k_max < float("inf")):  # False at NaN
        return False
    return not k.is_floating_point() or bool(torch.frac(k).abs_().amax() == 0.0)


def _kept(t: Tensor, keep: Tensor | None) -> Tensor:
    """The elements of t at kept positions (t broadcast against the mask)."""
    if keep is None:
        return t
    shape = torch.broadcast_shapes(t.shape, keep.shape)
    return t.expand(shape)[keep.expand(shape)]


def _check_k(k: Tensor) -> None:
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


def check_inputs(
    k: Tensor,
    params: list[tuple[str, Tensor, bool]],
    keep: Tensor | None,
) -> None:
    """Raise on the first invalid kept element (``validate=True``).

    ``params``: (label for messages, the tensor given, whether it is a log-parameter).
    ``keep``: the boolean mask (True = the element counts) or None.
    """
    if torch.compiler.is_compiling():
        ok = valid_k(k)
        for _, p, is_log in params:
            p64 = p.to(_F64)
            ok = ok & valid_param(torch.exp(p64) if is_log else p64)
        if keep is not None:
            ok = ok | ~keep
        torch._assert_async(ok.all(), ASYNC_MESSAGE)
        return
    _check_k(_kept(k, keep))
    for label, p, is_log in params:
        raw = _kept(p, keep)
        raw64 = raw.to(_F64)
        _check_param(label, raw, torch.exp(raw64) if is_log else raw64, is_log)
