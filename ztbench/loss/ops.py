"""The custom operators (``torch.library``) that compiled code calls: eager computations
that torch.compile must not trace.

- ``ztbench::zt_loss_kernel`` (:func:`opaque_kernel`): ``Path.COMPILED_OPAQUE``, the
  eager refined kernel as one node.
- ``ztbench::zt_loss_recompute_rejected`` (:func:`recompute_rejected`):
  ``Path.COMPILED_SCREENED``'s careful recomputation of the elements the traced screen
  does not certify.
- ``ztbench::zt_loss_fused_forward`` (:func:`fused_forward`): ``Path.COMPILED_SCREENED``
  where the fused kernel is built: the eager float32 forward as one node (faster than
  the traced plain formula, and no compiled pass of its own).
- ``ztbench::zt_loss_log_rounding`` (:func:`log_rounding_opaque`): the correction of
  float64 results with log-parameters to the exact exp(log p).

Why opaque: traced, the careful kernels make a graph of thousands of nodes (every branch
of every series everywhere), minutes of cold compilation and every branch run on every
element; the double-double arithmetic needs every product rounded on its own, which fused
code does not promise; and which elements the screen rejects is known only at run time.
Each operator has a fake (meta) implementation giving its outputs' shapes. One more,
``ztbench::zt_loss_float64_forward``, lives beside the forward it wraps
(:func:`ztbench.loss.autograd.float64_forward`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ztbench.loss import eager
from ztbench.loss import validation as V
from ztbench.loss.kernels import flat_indices
from ztbench.loss.refine import log_rounding_correction

__all__ = ["fused_forward", "log_rounding_opaque", "opaque_kernel", "recompute_rejected"]


@torch.library.custom_op("ztbench::zt_loss_kernel", mutates_args=())
def opaque_kernel(family: str, need: bool, k: Tensor, params: list[Tensor]) -> list[Tensor]:
    """:func:`ztbench.loss.eager.refined` as one opaque operator for torch.compile on the CPU.

    As an operator, the kernel is one node: compiling the loss costs about what compiling
    the naive formula costs, the compiled loss runs the eager kernel (each branch on its
    own elements), and compiled results are those of eager mode, bit for bit
    (double-double refinement included). Inputs: float64 tensors of one shape (k, then
    the parameters); outputs: the value, then the derivatives when ``need``.
    """
    # an output may not alias an input: a kernel that returns its input as is is copied
    return [t.clone() if t is k or any(t is p for p in params) else t
            for t in eager.refined(family, need, k, *params) if t is not None]  # fmt: skip


@opaque_kernel.register_fake
def _(family: str, need: bool, k: Tensor, params: list[Tensor]) -> list[Tensor]:
    return [torch.empty_like(k) for _ in range(1 + (len(params) if need else 0))]


@torch.library.custom_op("ztbench::zt_loss_recompute_rejected", mutates_args=("outs",))
def recompute_rejected(family: str, need: bool, full: bool, is_log: list[bool], k: Tensor,
                       params: list[Tensor], outs: list[Tensor],
                       rejected: Tensor) -> None:  # fmt: skip
    """Overwrite ``outs`` (the flat value, then the derivatives in the caller's
    parametrisation when ``need``, each in its own dtype) with the careful kernel's
    results where the flat ``rejected`` (float32: 1 to recompute, 0 to keep) is 1.

    The compiled counterpart of :func:`ztbench.loss.eager.recompute_at` in the eager
    screen: an opaque operator, because which elements (and how many) are rejected is
    known only at run time. ``k`` and ``params`` are the inputs as the caller gave them
    (log-parameters where ``is_log``), broadcast here."""
    if not float(rejected.amax()) > 0.0:  # one read pass: nothing to recompute
        return
    # the positions of the 1.0s: nonzero on the bits (0.0 is all-zero bits), a pass
    # cheaper than comparing first
    idx = flat_indices(rejected.view(torch.int32))
    k_f, *p_f = (t.reshape(-1) for t in torch.broadcast_tensors(k, *params))
    eager.recompute_at(family, need, full, is_log, k_f, p_f, idx, outs)


@recompute_rejected.register_fake
def _(family: str, need: bool, full: bool, is_log: list[bool], k: Tensor,
      params: list[Tensor], outs: list[Tensor], rejected: Tensor) -> None:  # fmt: skip
    return None


@torch.library.custom_op("ztbench::zt_loss_fused_forward", mutates_args=())
def fused_forward(family: str, need: bool, full: bool, is_log: list[bool],
                  out_dtype: torch.dtype, labels: str, k: Tensor, mask: Tensor | None,
                  params: list[Tensor]) -> list[Tensor]:  # fmt: skip
    """``Path.COMPILED_SCREENED`` where the fused kernel is built: the eager forward of the
    float32 screen (:func:`ztbench.loss.eager.forward_float32`) as one node, so that the
    compiled loss runs what the eager one runs, with no pass of its own over the inputs.

    Inputs as the caller gave them (log-parameters where ``is_log``, any broadcastable
    shapes, ``mask`` or None); outputs of the broadcast shape: the value in ``out_dtype``,
    then the float32 derivatives in the caller's parametrisation when ``need``. Where an
    element is invalid (which compiled code does not raise on), it gets NaN in every
    output and masked-out elements 0, the others the screen on safe stand-ins; with
    ``labels`` (``validate=True``: the parameters' names, comma-separated; an operator
    takes no list of strings) it raises the RuntimeError of compiled validation
    (:data:`~ztbench.loss.validation.ASYNC_MESSAGE`, with eager mode's detail) instead."""
    res = eager.forward_float32(family, full, need, out_dtype, k, tuple(params),
                                tuple(is_log), mask)  # fmt: skip
    if res is None:
        _, _, run, keep = eager.prepare_inputs(k, mask, tuple(params), tuple(is_log))
        if labels:  # the error compiled code raises elsewhere, with eager mode's detail
            names = labels.split(",")
            try:
                V.check_inputs(k, list(zip(names, params, is_log, strict=True)), keep)
            except ValueError as exc:
                raise RuntimeError(f"{V.ASYNC_MESSAGE}: {exc}") from None
        shape = run.shape
        run_f = run.reshape(-1)
        keep_f = None if keep is None else keep.reshape(-1)
        cols = [t.expand(shape).reshape(-1) for t in (k, *params)]  # (a mask may widen it)
        safe = [torch.where(run_f, t, torch.ones_like(t)) for t in cols]
        done = eager.screened_kernel(family, need, full, out_dtype, torch.float32, safe[0],
                                     safe[1:], tuple(is_log))  # fmt: skip
        assert done is not None, "safe stand-ins are valid"
        res = (eager.fill_not_computed(done[0], run_f, keep_f).reshape(shape),
               [eager.fill_not_computed(d, run_f, keep_f).reshape(shape) for d in done[1]])
    value, derivs = res
    # an output may not alias an input
    return [t.clone() if t is k or any(t is p for p in params) else t for t in (value, *derivs)]


@fused_forward.register_fake
def _(family: str, need: bool, full: bool, is_log: list[bool], out_dtype: torch.dtype,
      labels: str, k: Tensor, mask: Tensor | None,
      params: list[Tensor]) -> list[Tensor]:  # fmt: skip
    shapes = [k.shape, *(p.shape for p in params), *(() if mask is None else (mask.shape,))]
    shape = torch.broadcast_shapes(*shapes)
    value = torch.empty(shape, dtype=out_dtype, device=k.device)
    derivs = [torch.empty(shape, dtype=torch.float32, device=k.device)
              for _ in (params if need else ())]  # fmt: skip
    return [value, *derivs]


# The dispatch keys an eager call runs with, captured at import (an eager context): a
# compiled graph runs custom operators with the autograd and functorch keys excluded,
# and the forward-mode derivative inside log_rounding_correction needs them back.
_EAGER_KEYS = (torch._C._dispatch_tls_local_include_set(),
               torch._C._dispatch_tls_local_exclude_set())  # fmt: skip


@torch.library.custom_op("ztbench::zt_loss_log_rounding", mutates_args=())
def log_rounding_opaque(family: str, need: bool, k: Tensor, params: list[Tensor],
                        logs: list[Tensor], is_log: list[bool]) -> list[Tensor]:  # fmt: skip
    """:func:`ztbench.loss.refine.log_rounding_correction` as one opaque operator for
    torch.compile (its error-free transforms need every product rounded on its own), run
    with eager mode's dispatch keys."""
    with torch._C._ForceDispatchKeyGuard(*_EAGER_KEYS):
        terms = log_rounding_correction(family, need, k, params, logs, is_log)
    return [t for t in terms if t is not None]


@log_rounding_opaque.register_fake
def _(family: str, need: bool, k: Tensor, params: list[Tensor], logs: list[Tensor],
      is_log: list[bool]) -> list[Tensor]:  # fmt: skip
    return [torch.empty_like(k) for _ in range(1 + (len(params) if need else 0))]
