"""The forward paths of the loss: one :class:`Path` per way of computing it, and
:func:`choose_path`, the one function that picks it.

The choice depends only on how the call runs, never on the values:

========================  =======================  ========================================
result dtype              eager                    ``torch.compile``
========================  =======================  ========================================
float32 or narrower, CPU  ``EAGER_SCREENED_F32``   ``COMPILED_SCREENED``
                          (float32, bfloat16 or
                          float16 parameters on
                          k's device), else
                          ``EAGER_SCREENED``
float64, CPU              ``EAGER_REFINED``        ``COMPILED_OPAQUE``
float32 or narrower, GPU  ``EAGER_INDEXED``        ``COMPILED_TRACED``
float64, GPU              ``EAGER_REFINED``        ``COMPILED_TRACED``
========================  =======================  ========================================

"GPU" is any device other than the CPU. One choice is made again at run time:
``EAGER_SCREENED_F32`` hands the call to ``EAGER_SCREENED`` when an element it is to
compute is invalid (k not an integer >= 1, a parameter not finite and > 0, a
log-parameter whose exp leaves float32's range), so that the general path raises the
validation error or puts NaN there.

:func:`recording` lets a test see which path each eager call ran (a context manager over
a context variable: nothing outlives the ``with`` block). Compiled calls are not recorded.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

__all__ = ["Path", "choose_path", "note", "recording", "result_dtype"]


class Path(enum.Enum):
    """How the forward computes the loss and its derivatives."""

    EAGER_SCREENED_F32 = "eager_screened_f32"
    """The plain formula in float64 on float32, bfloat16 or float16 inputs, kept where its
    error bound certifies the result; the careful kernels (each branch on its own
    elements) recompute the rest. Float32 derivatives. Run by the fused kernel
    (:mod:`ztbench.loss.fused`) where it is built, else converted chunk by chunk (no
    full-size float64 copies)."""

    EAGER_SCREENED = "eager_screened"
    """The same screen on the float64 inputs of the general path (bfloat16, float16, mixed
    devices, or float32 with an invalid element, which gets a safe stand-in and then NaN)."""

    EAGER_INDEXED = "eager_indexed"
    """The careful kernels, each branch on its own elements; no screen (a GPU wants one
    launch per operation)."""

    EAGER_REFINED = "eager_refined"
    """The careful kernels, each branch on its own elements, then the double-double
    refinement where the float64 sum cancels and, with log-parameters, the correction to
    the exact exp(log p) (:mod:`ztbench.loss.refine`)."""

    COMPILED_SCREENED = "compiled_screened"
    """Where the fused kernel is built (:mod:`ztbench.loss.fused`): ``EAGER_SCREENED_F32``
    as one opaque operator (eager mode's computation, no compiled pass of its own).
    Otherwise the screen's plain formula traced and fused into one pass, and one opaque
    operator recomputing the elements it does not certify (:mod:`ztbench.loss.ops`)."""

    COMPILED_OPAQUE = "compiled_opaque"
    """``EAGER_REFINED`` as one opaque operator: eager mode's bits."""

    COMPILED_TRACED = "compiled_traced"
    """The careful kernels with every branch on every element, traced and fused; float64
    results get the correction to the exact exp(log p), not the double-double
    refinement."""

    @property
    def compiled(self) -> bool:
        """Whether the path runs under torch.compile."""
        return self in (Path.COMPILED_SCREENED, Path.COMPILED_OPAQUE, Path.COMPILED_TRACED)


def result_dtype(*ts: Tensor) -> torch.dtype:
    """The promoted floating dtype of ``ts`` (the default dtype when none is floating):
    the dtype of the loss and the one that decides whether results are refined."""
    dt: torch.dtype | None = None
    for t in ts:
        if t.is_floating_point():
            dt = t.dtype if dt is None else torch.promote_types(dt, t.dtype)
    return torch.get_default_dtype() if dt is None else dt


def choose_path(k: Tensor, params: Sequence[Tensor], mask: Tensor | None = None, *,
                compiling: bool | None = None) -> Path:  # fmt: skip
    """The path a call with counts ``k``, parameters ``params`` (as the caller gave them:
    natural or log) and ``mask`` takes; ``compiling`` defaults to
    ``torch.compiler.is_compiling()``.

    The kernels run on the first parameter's device (``k`` and ``mask`` are moved there);
    the float32 screen runs when every parameter is float32 and ``k``, the parameters and
    the mask are on the CPU together (its inputs stay where they are). Results are float64
    when the parameters promote to float64.
    """
    if compiling is None:
        compiling = torch.compiler.is_compiling()
    on_cpu = params[0].device.type == "cpu"
    float64 = result_dtype(*params) == torch.float64
    if compiling:
        if not on_cpu:
            return Path.COMPILED_TRACED
        return Path.COMPILED_OPAQUE if float64 else Path.COMPILED_SCREENED
    float32 = all(p.dtype in NARROW_DTYPES and p.device == k.device for p in params)
    float32 = float32 and (mask is None or mask.device == k.device)
    if k.device.type == "cpu" and float32:
        return Path.EAGER_SCREENED_F32
    if float64:
        return Path.EAGER_REFINED
    return Path.EAGER_SCREENED if on_cpu else Path.EAGER_INDEXED


# parameter dtypes that float32 holds exactly: the float32 screen takes them as they are
NARROW_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_RAN: ContextVar[list[Path] | None] = ContextVar("ztbench_loss_paths_ran", default=None)


@contextmanager
def recording() -> Iterator[list[Path]]:
    """``with recording() as ran:``: ``ran`` lists the path of each eager loss call made
    inside the block, in order (a nested block records its own calls only)."""
    ran: list[Path] = []
    token = _RAN.set(ran)
    try:
        yield ran
    finally:
        _RAN.reset(token)


def note(path: Path) -> None:
    """Record that an eager call ran ``path`` (nothing outside :func:`recording`)."""
    ran = _RAN.get()
    if ran is not None:
        ran.append(path)
