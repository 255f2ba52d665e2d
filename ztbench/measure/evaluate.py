"""Evaluate one candidate at a batch of points: value and autograd gradients.

``evaluate(candidate, points, dtype, device, mode, threshold) -> Evaluation``. Points are
float64 arrays of the candidate's own input columns (``k, mu, log_theta`` for a candidate
taking log theta: :attr:`~ztbench.candidates.base.Candidate.columns`) already rounded to
``dtype`` (:func:`candidate_inputs` makes them from natural columns); the
candidate runs on tensors of ``dtype`` on ``device`` (parameters with requires_grad, ``k``
as a float tensor of the same dtype), the gradients come from one backward of
``value.sum()`` (the NLL is elementwise, so they are per point), and everything comes back
as float64 numpy. Whatever a candidate cannot do here (dtype not supported, missing torch
kernel, torch.compile failure, peer on a non-float64 dtype or off CPU, R absent) is a
result, ``status="unsupported"`` with the reason, never an exception.

Determinism: the same inputs give the same bits. Points are processed in fixed-size
chunks (so an element's position in its chunk, which can decide vectorised versus scalar
code paths, depends only on its index), and nothing reduces across points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ztbench.candidates.base import Candidate, Unsupported
from ztbench.candidates.execution import compile_limits, compiled, first_line, is_missing_kernel
from ztbench.core.dtypes import get_format, round_to
from ztbench.core.families import to_own
from ztbench.core.schema import MODES
from ztbench.io.errors import UserError
from ztbench.io.procs import time_limit

CHUNK_POINTS = 1 << 20
# The most one evaluation of the user's own code (an external candidate) may take: a target
# that hangs becomes a row naming it, not a run that never ends.
TARGET_TIMEOUT_S = 600.0



@dataclass
class Evaluation:
    """Result of evaluating a candidate at a batch of points.

    ``value`` (float64, one per point; NaN-filled when unsupported), ``grads`` keyed
    by the candidate's own gradient names, ``d_<param>`` or ``d_log_<param>`` (empty for
    peers: "no gradient"), ``status`` ``"ok"`` or
    ``"unsupported"``, ``reason`` (empty when ok).
    """

    value: np.ndarray
    grads: dict[str, np.ndarray] = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def check_device(device: str) -> str:
    """``device`` when torch can use it here; UserError (exit 2) when it is unknown or absent.

    An explicit device on the command line is the user's request, so a device that does
    not exist (``tpu``, ``cpu:abc``) or is not present (``cuda`` without CUDA) is a usage
    error, not an unsupported candidate.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"--device: unknown device {device!r} (known: cpu, cuda, cuda:N)") from None
    if dev.type == "cpu":
        return device
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device: {device!r} is not available (no CUDA device here)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(
                f"--device: {device!r} is not available ({torch.cuda.device_count()} CUDA "
                "device(s) here)"
            )
        return device
    raise UserError(f"--device: unsupported device {device!r} (known: cpu, cuda)")


def _unsupported(n: int, reason: str) -> Evaluation:
    return Evaluation(np.full(n, np.nan), {}, "unsupported", reason)


def candidate_inputs(
    candidate: Candidate, points: Mapping[str, np.ndarray], dtype: str
) -> dict[str, np.ndarray]:
    """The candidate's own input columns, rounded to ``dtype`` (float64 arrays).

    ``points`` holds either the candidate's own columns (taken as they are) or the
    family's natural ones (``k, lam`` / ``k, mu, theta``), converted first (log_theta =
    log theta in float64); then every column is rounded to ``dtype``. ValueError when
    neither set of columns is complete.
    """
    own = candidate.columns
    if not all(c in points for c in own):
        family = candidate.family
        if not all(c in points for c in family.columns):
            raise ValueError(
                f"{candidate.id}: points need the columns {', '.join(own)} or "
                f"{', '.join(family.columns)}"
            )
        points = to_own(family, points, candidate.log_params)
    return {c: round_to(np.asarray(points[c], dtype=np.float64), dtype) for c in own}


def evaluate(
    candidate: Candidate,
    points: Mapping[str, np.ndarray],
    dtype: str,
    device: str = "cpu",
    mode: str = "eager",
    threshold: float | None = None,
    gradients: bool = True,
) -> Evaluation:
    """Evaluate ``candidate`` at ``points`` in ``dtype`` on ``device`` (eager or compiled).

    ``gradients=False`` computes the value only (``grads`` is then empty): threshold
    sweeps need no gradients and run several times faster without autograd.
    ``threshold`` is for threshold-family candidates (None: their default); ValueError
    if given to another candidate, or on an unknown dtype/mode or missing column.
    ``points`` without the candidate's own columns but with the family's natural ones are
    converted and rounded first (:func:`candidate_inputs`).
    """
    fmt = get_format(dtype)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
    if threshold is not None and not candidate.is_threshold_family:
        raise ValueError(f"{candidate.id} takes no threshold")
    if not all(col in points for col in candidate.columns):
        points = candidate_inputs(candidate, points, dtype)  # natural columns, converted
    arrays = [np.asarray(points[c], dtype=np.float64).reshape(-1) for c in candidate.columns]
    n = arrays[0].shape[0]
    if threshold is None:
        threshold = candidate.threshold

    if dtype not in candidate.dtypes:
        return _unsupported(n, f"{candidate.id} supports {', '.join(candidate.dtypes)} only")
    if candidate.kind == "peer":
        return _evaluate_peer(candidate, arrays, device, mode, threshold)

    try:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            return _unsupported(n, "CUDA is not available")
        torch.empty(0, dtype=fmt.torch_dtype, device=dev)
    except (RuntimeError, ValueError) as exc:
        return _unsupported(n, f"device {device!r}: {first_line(exc)}")

    try:
        base = compiled(candidate) if mode == "compile" else candidate.fn
    except Exception as exc:  # torch.compile itself failing is a result
        return _unsupported(n, f"torch.compile failed: {first_line(exc)}")

    def fn(k: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return base(k, *params, threshold=threshold)

    value = np.empty(n, dtype=np.float64)
    names = candidate.gradients
    grads = {g: np.empty(n, dtype=np.float64) for g in names} if gradients else {}
    lost: set[str] = set()
    limit = TARGET_TIMEOUT_S if candidate.target is not None else 0.0
    try:
        with compile_limits(), time_limit(limit, candidate.target or candidate.id):
            for start in range(0, n, CHUNK_POINTS):
                stop = min(start + CHUNK_POINTS, n)
                _run_chunk(fn, arrays, start, stop, fmt.torch_dtype, dev, value, grads, names, lost)
    except Unsupported as exc:
        return _unsupported(n, exc.reason)
    except (Exception, SystemExit) as exc:  # the user's code may call sys.exit()
        if isinstance(exc, SystemExit) and candidate.target is None:
            raise
        if mode == "compile" and not isinstance(exc, SystemExit):
            return _unsupported(n, f"torch.compile failed: {first_line(exc)}")
        if is_missing_kernel(exc):
            return _unsupported(n, f"missing kernel: {first_line(exc)}")
        if candidate.target is not None:  # the user's code failing is a result, not a crash
            return _unsupported(n, f"{candidate.target}: {first_line(exc)}")
        raise
    for name in lost:  # reported as "no gradient", never as zeros
        del grads[name]
    return Evaluation(value, grads)


def _run_chunk(
    fn: Callable[..., Any],
    arrays: list[np.ndarray],
    start: int,
    stop: int,
    tdtype: torch.dtype,
    dev: torch.device,
    value: np.ndarray,
    grads: dict[str, np.ndarray],
    names: tuple[str, ...],
    lost: set[str],
) -> None:
    """Evaluate points ``start:stop`` into ``value`` and ``grads``; the names of gradients
    autograd cannot reach (the candidate's graph lost the parameter) are added to ``lost``:
    such a gradient is missing, not zero."""
    def tensor(a: np.ndarray, grad: bool) -> torch.Tensor:
        # float64 -> dtype is exact: the points are already rounded to dtype.
        t = torch.from_numpy(np.array(a[start:stop], dtype=np.float64)).to(device=dev, dtype=tdtype)
        return t.requires_grad_(grad)

    k = tensor(arrays[0], False)
    params = [tensor(a, bool(grads)) for a in arrays[1:]]
    with torch.set_grad_enabled(bool(grads)):
        out = fn(k, *params)
    if not isinstance(out, torch.Tensor) or out.shape != k.shape:
        raise RuntimeError(f"candidate returned {type(out).__name__} of wrong shape")
    if out.dtype != tdtype:
        raise RuntimeError(f"candidate returned {out.dtype}, expected {tdtype}")
    value[start:stop] = out.detach().to(torch.float64).cpu().numpy()
    if not grads:
        return
    if out.requires_grad:
        gs = torch.autograd.grad(out.sum(), params, allow_unused=True)
    else:
        gs = (None,) * len(params)
    for name, g in zip(names, gs, strict=True):
        if g is None:
            lost.add(name)
        else:
            grads[name][start:stop] = g.detach().to(torch.float64).cpu().numpy()


def _evaluate_peer(
    candidate: Candidate,
    arrays: list[np.ndarray],
    device: str,
    mode: str,
    threshold: float | None,
) -> Evaluation:
    n = arrays[0].shape[0]
    if device != "cpu":
        return _unsupported(n, f"{candidate.id} is a CPU-only peer (no device {device!r})")
    if mode != "eager":
        return _unsupported(n, f"{candidate.id} is a peer outside torch: no torch.compile")
    limit = TARGET_TIMEOUT_S if candidate.target is not None else 0.0
    try:
        with time_limit(limit, candidate.target or candidate.id):
            out = np.asarray(candidate.fn(*arrays, threshold=threshold), dtype=np.float64)
        if candidate.target is not None and out.shape != (n,):
            raise RuntimeError(f"returned shape {out.shape}, expected ({n},)")
    except Unsupported as exc:
        return _unsupported(n, exc.reason)
    except (Exception, SystemExit) as exc:  # the user's code may call sys.exit()
        if candidate.target is None:
            raise
        return _unsupported(n, f"{candidate.target}: {first_line(exc)}")
    return Evaluation(out.reshape(n), {})
