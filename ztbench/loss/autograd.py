"""The loss's autograd node: one ``torch.autograd.Function`` per call, its constants in one
frozen record (:class:`LossSpec`).

Its forward computes the elementwise loss on the path :func:`~ztbench.loss.paths.choose_path`
picks and returns, as extra outputs marked non-differentiable, the first derivatives in
the caller's parametrisation (float64, or float32 on ``EAGER_SCREENED_F32``), computed in
the same pass. First-order backward and jvp are those derivatives times the incoming
(co)tangent. Where the backward or the jvp is itself differentiated (create_graph=True,
torch.func transforms, nested forward AD), the derivatives are recomputed as a
differentiable graph of the where-based kernels (:func:`derivatives_graph`): their values
stay the saved ones (the graph enters as d_saved + (d - d.detach()), exactly d_saved),
their derivatives are the kernels' own, so Hessian-vector products, gradient penalties and
gradgradcheck see every term.

:class:`ZTLoss` is the node torch.compile traces (Dynamo does not trace a custom jvp);
:class:`ZTLossEager`, the node of eager calls, is the same Function with forward-mode AD
(torch.func.jvp, jacfwd) and a vmap rule added.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ztbench.loss import eager, fused, ops
from ztbench.loss import screened as S
from ztbench.loss import validation as V
from ztbench.loss.kernels import F64, KERNELS, chain_rule
from ztbench.loss.paths import NARROW_DTYPES, Path, choose_path, note, recording, result_dtype
from ztbench.loss.refine import apply_full, log_rounding_correction
from ztbench.loss.second_order import first_derivative_graph

__all__ = ["LossSpec", "ZTLoss", "ZTLossEager", "derivatives_graph", "float64_forward",
           "forward_on", "transform_active"]


@dataclass(frozen=True)
class LossSpec:
    """The constants of one loss call (everything but its tensors).

    ``family``: "ztpoisson" (parameter lam) or "ztnb" (mu, theta). ``is_log``: per
    parameter, whether the caller gave log p. ``full``: add lgamma(k + 1). ``out_dtype``:
    the dtype the value is rounded to. ``need``: compute the derivatives in the forward
    (autograd, a torch.func transform or forward-mode AD will ask for them). ``labels``:
    the parameters' names for ``validate=True``'s messages (None: no checks).
    """

    family: str
    is_log: tuple[bool, ...]
    full: bool
    out_dtype: torch.dtype
    need: bool
    labels: tuple[str, ...] | None


_N_LEADING = 3  # spec, k and mask come before the parameters in the node's inputs

# The eager computation of each eager path but EAGER_SCREENED_F32 (on float64 inputs)
_EAGER = {
    Path.EAGER_SCREENED: eager.screened,
    Path.EAGER_INDEXED: eager.indexed,
    Path.EAGER_REFINED: eager.refined,
}


def _safe(run: Tensor, k64: Tensor, p64: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Inputs with 1 at the elements not computed (a point every kernel branch accepts)."""
    one = torch.ones_like(k64)
    return torch.where(run, k64, one), [torch.where(run, p, one) for p in p64]


def _rounded_outputs(spec: LossSpec, params: tuple[Tensor, ...], shape: torch.Size,
                     value: Tensor, derivs: list[Tensor], run: Tensor,
                     keep: Tensor | None) -> list[Tensor]:  # fmt: skip
    """The compiled screen's flat outputs: NaN / 0 at invalid / masked-out elements
    (:func:`_fill`), the value in ``spec.out_dtype``, each derivative in its parameter's
    dtype when the parameter has the loss's shape, else float64."""
    outs = [eager.fill_not_computed(value, run, keep).to(spec.out_dtype)]
    for d, p in zip(derivs, params if spec.need else (), strict=True):
        outs.append(eager.fill_not_computed(d, run, keep).to(p.dtype if p.shape == shape else F64))
    return outs


def _compiled_screen(spec: LossSpec, k: Tensor, params: tuple[Tensor, ...], k64: Tensor,
                     p64: list[Tensor], run: Tensor,
                     keep: Tensor | None) -> tuple[Tensor, ...]:  # fmt: skip
    """``COMPILED_SCREENED`` without the fused kernel (with it, the forward is one opaque
    call, :func:`ztbench.loss.ops.fused_forward`): the forward's outputs (value in
    ``spec.out_dtype``, *derivatives) for results of float32 precision or less under
    torch.compile on the CPU.

    The screened plain formula (:mod:`ztbench.loss.screened`, element-wise test) as
    traced operations on the float64 inputs ``k64``, ``p64`` (no safe stand-ins needed:
    whatever an invalid or masked-out element computes, NaN included, is replaced and
    never recomputed), with the chain rule for log-parameters, NaN / 0 at invalid /
    masked-out elements and the rounding to the outputs' dtypes: torch.compile fuses all
    of it into one pass that reads the inputs and writes the outputs (no float64 tensor
    in memory). Then one opaque call, :func:`ztbench.loss.ops.recompute_rejected`, on the
    valid kept elements it does not certify. The guarantee of the eager screen holds (the
    bound's error model covers the compiled elementary functions, see
    tests/loss/test_screened.py), not its bits. Derivatives are in the parameter's dtype
    when it has the loss's shape (as in eager mode), else float64 (summed over the
    broadcast dimensions in float64 by backward).
    """
    shape = k64.shape
    run_f = run.reshape(-1)
    keep_f = None if keep is None else keep.reshape(-1)
    flat = [t.reshape(-1) for t in (k64, *p64)]
    screened = S.ztp_screened if spec.family == "ztpoisson" else S.ztnb_screened
    value, *ds, margin = screened(*flat, spec.need, spec.full)
    # 1 where the careful kernel recomputes (not certified; valid and kept elements only),
    # as float32: compiled CPU code stores floats several times faster than booleans
    rejected = torch.where(S.certified(margin) | ~run_f, 0.0, 1.0).to(torch.float32)
    ds = chain_rule(ds, flat[1:], spec.is_log) if spec.need else []
    outs = _rounded_outputs(spec, params, shape, value, ds, run_f, keep_f)
    ops.recompute_rejected(spec.family, spec.need, spec.full, list(spec.is_log), k,
                           list(params), outs, rejected)  # fmt: skip
    return tuple(o.reshape(shape) for o in outs)


def derivatives_graph(family: str, is_log: tuple[bool, ...], k: Tensor, mask: Tensor | None,
                      params: tuple[Tensor, ...]) -> list[Tensor]:  # fmt: skip
    """The first derivatives (caller's parametrisation, float64) as a differentiable graph
    of the where-based forms of :mod:`ztbench.loss.second_order`, written so that their
    derivatives are accurate (safe inputs everywhere: no NaN from a branch not taken)."""
    k64, p64, run, keep = eager.prepare_inputs(k, mask, params, is_log)
    k_in, p_in = _safe(run, k64, p64)
    grads = first_derivative_graph(family, k_in, p_in, is_log)
    return [eager.fill_not_computed(d, run, keep) for d in grads]


def transform_active() -> bool:
    """A torch.func transform is running (its levels wrap the tensors we see)."""
    return torch._C._functorch.maybe_current_level() is not None


def _derivatives(ctx, differentiable: bool) -> list[Tensor]:  # type: ignore[no-untyped-def]
    """The saved derivatives; with ``differentiable``, the same values carrying the
    kernels' derivatives (see the module docstring)."""
    k, mask, *rest = ctx.saved_tensors
    params, saved = tuple(rest[: ctx.n]), rest[ctx.n :]
    family, is_log = ctx.spec.family, ctx.spec.is_log
    if not differentiable and saved:
        return list(saved)
    if not differentiable:  # derivatives were not needed at forward time (no_grad caller)
        with torch.no_grad():
            return derivatives_graph(family, is_log, k, mask, params)
    graph = derivatives_graph(family, is_log, k, mask, params)
    if not saved:
        return graph
    return [s + (d - d.detach()) for s, d in zip(saved, graph, strict=True)]


def _compact(grad: Tensor) -> Tensor:
    """One element of a gradient that is one value everywhere (a reduced loss: sum or mean
    expands a scalar, every stride 0), else ``grad`` itself: the products below then read
    one number instead of converting a full-size expanded tensor first."""
    if grad.dim() == 0 or grad.numel() == 0 or any(st != 0 for st in grad.stride()):
        return grad
    return grad.reshape(-1)[:1]


def forward_on(spec: LossSpec, path: Path, k: Tensor, mask: Tensor | None,
               params: tuple[Tensor, ...], compiling: bool) -> tuple[Tensor, ...]:
    """The forward's outputs (:meth:`ZTLoss.forward`) on ``path``, the compiled paths but
    the two opaque forwards of :mod:`ztbench.loss.ops` (which run this in eager mode
    where their kernel does not apply); calls not ``compiling`` are recorded
    (:func:`~ztbench.loss.paths.note`)."""
    family, is_log, need = spec.family, spec.is_log, spec.need
    if path is Path.EAGER_SCREENED_F32:
        fast = eager.forward_float32(family, spec.full, need, spec.out_dtype, k, params,
                                     is_log, mask)  # fmt: skip
        if fast is not None:
            note(path)
            return (fast[0], *fast[1])
        path = Path.EAGER_SCREENED  # an invalid element: raise, or NaN there
    if path is Path.EAGER_REFINED and not compiling:
        fast64 = eager.forward_float64(family, spec.full, need, k, params, is_log, mask)
        if fast64 is not None:
            note(path)
            return (fast64[0], *fast64[1])
    if not compiling:
        note(path)
    k64, p64, run, keep = eager.prepare_inputs(k, mask, params, is_log)
    # on the CPU a host check is free (no device to wait for): skip the masking when
    # every element is computed, the common case; elsewhere mask without synchronising
    masked = compiling or run.device.type != "cpu" or not bool(run.all())
    # validate=True costs nothing more when every element is computed (run holds the
    # same rules); otherwise the checks find the message (masked-out elements pass)
    if spec.labels is not None and masked:
        V.check_inputs(k.to(run.device), list(zip(spec.labels, params, is_log, strict=True)),
                       keep)  # fmt: skip
    if path is Path.COMPILED_SCREENED:
        return _compiled_screen(spec, k, params, k64, p64, run, keep)
    k_in, p_in = _safe(run, k64, p64) if masked else (k64, p64)
    if path is Path.COMPILED_OPAQUE:  # one opaque call to the eager refined kernel
        value, *rest = ops.opaque_kernel(family, need, k_in, list(p_in))
        grads = rest if need else [None] * len(p_in)
    elif path is Path.COMPILED_TRACED:  # every branch everywhere, traced and fused
        value, *grads = KERNELS[family].traced(k_in, *p_in, need)
    else:
        value, *grads = _EAGER[path](family, need, k_in, *p_in)
    if spec.full and compiling:  # traced: no double-double (as the kernel)
        value = apply_full(family, k_in, p_in, value, False)
    elif spec.full:  # eager: in slices (bounded memory), refined for float64 results
        value = eager.full_form(family, k_in, p_in, value, path is Path.EAGER_REFINED)
    refine = result_dtype(*params) == F64
    if refine and any(is_log):  # float64 results at the caller's exact exp(log p)
        logs = [p.to(F64).expand(k_in.shape) if lg else p_n
                for p, p_n, lg in zip(params, p_in, is_log, strict=True)]  # fmt: skip
        if masked:  # the safe stand-in of a log-parameter is 0 (= log 1)
            logs = [torch.where(run, lg, 0.0) if is_lg else lg
                    for lg, is_lg in zip(logs, is_log, strict=True)]  # fmt: skip
        correct = ops.log_rounding_opaque if compiling else log_rounding_correction
        delta = correct(family, need, k_in, list(p_in), logs, list(is_log))
        value = value + delta[0]  # type: ignore[operator]
        if need:
            grads = [g + d for g, d in zip(grads, delta[1:], strict=True)]  # type: ignore[operator]
    if masked:
        value = eager.fill_not_computed(value, run, keep)
    derivs = chain_rule(grads, p_in, is_log) if need else []  # type: ignore[arg-type]
    if masked:
        derivs = [eager.fill_not_computed(d, run, keep) for d in derivs]
    return (value.to(spec.out_dtype), *derivs)


@torch.library.custom_op("ztbench::zt_loss_float64_forward", mutates_args=())
def float64_forward(family: str, need: bool, full: bool, labels: str, k: Tensor,
                    params: list[Tensor]) -> list[Tensor]:  # fmt: skip
    """The custom operator ``ztbench::zt_loss_float64_forward`` (beside the forward it
    wraps; the others are in :mod:`ztbench.loss.ops`): ``Path.COMPILED_OPAQUE`` where
    :func:`ztbench.loss.eager.float64_kernel_applies` (natural float64 parameters of k's
    shape, no mask, CPU): eager mode's forward as one node, so that the compiled loss
    runs what the eager one runs, bit for bit.

    Outputs: the float64 value, then the float64 derivatives when ``need``. By the fused
    float64 kernel (:func:`ztbench.loss.eager.forward_float64`); where it does not run (an
    invalid element, the kernel not built), by eager mode's general path, which gives
    NaN at invalid elements, or with ``labels`` (``validate=True``: the parameters' names,
    comma-separated) raises the RuntimeError of compiled validation
    (:data:`~ztbench.loss.validation.ASYNC_MESSAGE`, with eager mode's detail)."""
    n = len(params)
    res = eager.forward_float64(family, full, need, k, tuple(params), (False,) * n, None)
    if res is not None:
        outs = [res[0], *res[1]]
    else:
        spec = LossSpec(family=family, is_log=(False,) * n, full=full, out_dtype=F64,
                        need=need, labels=tuple(labels.split(",")) if labels else None)
        try:
            with recording():  # a compiled call: not recorded
                outs = list(forward_on(spec, Path.EAGER_REFINED, k, None, tuple(params),
                                       False))  # fmt: skip
        except ValueError as exc:
            raise RuntimeError(f"{V.ASYNC_MESSAGE}: {exc}") from None
    # an output may not alias an input
    return [t.clone() if t is k or any(t is p for p in params) else t for t in outs]


@float64_forward.register_fake
def _(family: str, need: bool, full: bool, labels: str, k: Tensor,
      params: list[Tensor]) -> list[Tensor]:  # fmt: skip
    return [torch.empty_like(k, dtype=torch.float64)
            for _ in range(1 + (len(params) if need else 0))]  # fmt: skip


class ZTLoss(torch.autograd.Function):
    """The loss node as torch.compile traces it: forward, setup_context, backward."""

    @staticmethod
    def forward(spec: LossSpec, k: Tensor, mask: Tensor | None,  # type: ignore[override]
                *params: Tensor) -> tuple[Tensor, ...]:  # fmt: skip
        """(loss rounded to ``spec.out_dtype``, *derivatives if ``spec.need``).

        k and the parameters to float64 (exp of a log-parameter), broadcast; elements that
        are invalid or masked out get safe inputs (on the CPU in eager mode only when
        there is one) and then NaN (invalid) or 0 (masked out) in every output;
        ``spec.full`` adds lgamma(k + 1). The derivatives are already in the caller's
        parametrisation (d/dlog p = p d/dp); float64 results are refined where they
        cancel (:mod:`ztbench.loss.refine`). ``spec.labels``, when given, asks for
        ``validate=True``'s checks: here, where a torch.func transform has unwrapped the
        tensors, so that its host checks see plain tensors.
        """
        compiling = torch.compiler.is_compiling()
        path = choose_path(k, params, mask, compiling=compiling)
        labels = ",".join(spec.labels or ())
        if path is Path.COMPILED_SCREENED and fused.active():
            # the eager float32 forward as one opaque node (with its own checks)
            return tuple(ops.fused_forward(spec.family, spec.need, spec.full,
                                           list(spec.is_log), spec.out_dtype, labels, k, mask,
                                           list(params)))  # fmt: skip
        if path is Path.COMPILED_OPAQUE and eager.float64_kernel_applies(k, params,
                                                                         spec.is_log, mask):
            # the eager float64 forward as one opaque node (no conversions or checks traced
            # around it)
            return tuple(float64_forward(spec.family, spec.need, spec.full, labels, k,
                                         list(params)))  # fmt: skip
        return forward_on(spec, path, k, mask, params, compiling)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def, override]
        spec, k, mask, *params = inputs
        _, *derivs = output
        ctx.mark_non_differentiable(*derivs)
        # the derivatives' outputs get no gradient: None, not a tensor of zeros per call
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(k, mask, *params, *derivs)
        ctx.spec, ctx.n = spec, len(params)
        ctx.shapes = [(p.shape, p.dtype) for p in params]

    @staticmethod
    def backward(ctx, grad: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        """grad (to float64) x derivative, summed to the parameter's shape (broadcasting),
        rounded once to its dtype; differentiable when the backward is differentiated."""
        out: list[Tensor | None] = [None] * _N_LEADING
        if grad is None:  # the loss itself got no gradient (only the extra outputs were used)
            return (*out, *([None] * ctx.n))
        if torch.compiler.is_compiling():
            differentiable = torch.is_grad_enabled()
        else:
            differentiable = torch.is_grad_enabled() or transform_active()
            if not differentiable:
                grad = _compact(grad)
        derivs = _derivatives(ctx, differentiable)
        for i, (d, (shape, dtype)) in enumerate(zip(derivs, ctx.shapes, strict=True)):
            if not ctx.needs_input_grad[_N_LEADING + i]:
                out.append(None)
            elif d.dtype == dtype and d.shape == shape:
                # a derivative already rounded to the parameter's dtype (the float32 fast
                # path) and nothing to sum: one product in that dtype (one more rounding)
                out.append(d * grad.to(dtype))
            elif d.dtype == torch.float32 and dtype in NARROW_DTYPES and d.shape == shape:
                # bfloat16 / float16 parameters on the float32 path: the product in float32,
                # rounded to their dtype as it is stored (within 2^-15 ulp of one rounding)
                product = torch.empty(shape, dtype=dtype, device=d.device)
                out.append(torch.mul(d, grad.to(torch.float32), out=product))
            else:
                out.append((grad.to(F64) * d).sum_to_size(shape).to(dtype))
        return tuple(out)


class ZTLossEager(ZTLoss):
    """The loss node in eager mode: adds forward-mode AD (torch.func.jvp, jacfwd) and a
    vmap rule (the loss is elementwise: the batch dimension becomes a leading dimension
    of one call)."""

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def, override]
        ZTLoss.setup_context(ctx, inputs, output)
        _, k, mask, *params = inputs
        _, *derivs = output
        ctx.save_for_forward(k, mask, *params, *derivs)

    @staticmethod
    def jvp(ctx, *tangents: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        derivs = _derivatives(ctx, True)
        tv: Tensor | None = None
        for d, t in zip(derivs, tangents[_N_LEADING:], strict=True):
            if t is not None:
                term = d * t.to(F64)
                tv = term if tv is None else tv + term
        if tv is not None:
            tv = tv.to(ctx.spec.out_dtype)
        n_derivs = len(ctx.saved_tensors) - 2 - ctx.n
        return (tv, *([None] * n_derivs))

    @staticmethod
    def vmap(info, in_dims, spec, *tensors):  # type: ignore[no-untyped-def, override]
        dims = in_dims[1:]
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

        out = ZTLossEager.apply(spec, *(lead(t, d) for t, d in zip(tensors, dims, strict=True)))
        return out, tuple(0 for _ in out)
