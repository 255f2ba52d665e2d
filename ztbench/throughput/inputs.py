"""What is timed: the seeded inputs, the candidate and copy calls.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ztbench.candidates.base import Candidate
from ztbench.candidates.execution import compiled
from ztbench.core.dtypes import get_format
from ztbench.core.families import get_family, is_torch_nb
from ztbench.core.schema import (
    INPUT_KINDS,
    MODES,
    PASSES,
    REALISTIC_LOG_MEAN,
    REALISTIC_LOG_THETA,
)


def _seed(seed: int, family: str, size: int) -> int:
    return zlib.crc32(f"{seed}/{family}/{size}".encode()) ^ (seed & 0x7FFFFFFF)


def timing_inputs(
    family: str, dtype: str, device: str, size: int, seed: int = 0
) -> list[torch.Tensor]:
    """Seeded inputs (k, then the parameters), log-uniform over the family's domain.

    Each column is drawn in float64 on ``device`` and cast to ``dtype``; the domain is
    clipped to the dtype's normal range so every input is finite and non-zero.
    """
    fam = get_family(family)
    fmt = get_format(dtype)
    dev = torch.device(device)
    gen = torch.Generator(device=dev)
    gen.manual_seed(_seed(seed, family, size))
    cols = []
    for col in fam.columns:
        lo, hi = fam.domain[col]
        lo, hi = max(lo, 1.0 if col == "k" else fmt.tiny), min(hi, fmt.max)
        u = torch.rand(size, generator=gen, dtype=torch.float64, device=dev)
        if col == "k":  # log-uniform integer in [1, hi]
            x = torch.floor(torch.exp(u * math.log(hi + 1.0))).clamp_(1.0, math.floor(hi))
        else:
            x = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))).clamp_(lo, hi)
        cols.append(x.to(fmt.torch_dtype))
        del u, x
    return cols


def realistic_inputs(
    family: str, dtype: str, device: str, size: int, seed: int = 0
) -> list[torch.Tensor]:
    """Seeded single-cell-like inputs (k, then the parameters), as
    ``INPUT_KIND_TEXT["realistic"]`` says (:mod:`ztbench.core.schema`); drawn in float64 on
    ``device`` and cast to ``dtype``. Nearly every element is away from the hard regions
    of the domain, as in a model fitted to UMI counts."""
    fmt = get_format(dtype)
    dev = torch.device(device)
    gen = torch.Generator(device=dev)
    gen.manual_seed(_seed(seed, f"{family}/realistic", size))

    def log_uniform(lo: float, hi: float) -> torch.Tensor:
        u = torch.rand(size, generator=gen, dtype=torch.float64, device=dev)
        return torch.exp(lo + (hi - lo) * u)

    mu = log_uniform(*REALISTIC_LOG_MEAN)
    cols = [1.0 + torch.poisson(mu, generator=gen), mu]
    if len(get_family(family).params) == 2:
        cols.append(log_uniform(*REALISTIC_LOG_THETA))
    return [c.to(fmt.torch_dtype) for c in cols]


def make_inputs(
    kind: str, family: str, dtype: str, device: str, size: int, seed: int = 0
) -> list[torch.Tensor]:
    """The inputs of one input kind (:data:`~ztbench.core.schema.INPUT_KINDS`)."""
    if kind == "log-uniform":
        return timing_inputs(family, dtype, device, size, seed)
    if kind == "realistic":
        return realistic_inputs(family, dtype, device, size, seed)
    raise ValueError(f"unknown input kind {kind!r} (known: {', '.join(INPUT_KINDS)})")


def n_outputs(family: str, pass_: str) -> int:
    """Arrays a pass writes at least: the value, plus one gradient per parameter."""
    return 1 + (len(get_family(family).params) if pass_ == "forward+backward" else 0)


def copy_elements(family: str, pass_: str, size: int) -> int:
    """Elements of the copy moving as many bytes as the candidate must (read + write) / 2."""
    moved = len(get_family(family).columns) + n_outputs(family, pass_)
    return (moved * size + 1) // 2


# ------------------------------------------------------------------------------ calls


def own_inputs(candidate: Candidate, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Natural inputs (:func:`timing_inputs`) in the candidate's own parameterisation: the
    log of each parameter it takes as a logarithm, or (total_count, logits) = (theta,
    log mu - log theta) for torch-nb. Computed once, outside the timing."""
    k, *params = inputs
    family = get_family(candidate.family)
    if is_torch_nb(family, candidate.log_params):
        mu, theta = params
        return [k, theta, torch.log(mu) - torch.log(theta)]
    return [k, *(torch.log(p) if n in candidate.log_params else p
                 for n, p in zip(family.params, params, strict=True))]  # fmt: skip


def make_call(
    candidate: Candidate, mode: str, pass_: str, inputs: Sequence[torch.Tensor]
) -> Callable[[], Any]:
    """A no-argument callable running one ``pass_`` of ``candidate`` on ``inputs``.

    ``inputs`` are natural (:func:`timing_inputs`), passed in the candidate's own
    parameterisation (:func:`own_inputs`).

    Torch candidates only (peers: :func:`make_peer_call`). ``compile`` uses
    :func:`compiled` (``dynamic=True``, cached per candidate); run it inside
    :func:`compile_limits` so that dynamo does not silently fall back to eager. ``inputs``
    are natural (:func:`timing_inputs`); parameters the candidate takes as logarithms are
    passed as their logs.
    """
    threshold = candidate.threshold
    if mode == "compile":
        cfn = compiled(candidate)
    elif mode == "eager":
        cfn = candidate.fn
    else:
        raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")

    def fn(k: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return cfn(k, *params, threshold=threshold)

    inputs = own_inputs(candidate, inputs)
    k = inputs[0]
    # a candidate taking log parameters gets their logs (computed once, outside the timing)
    names = get_family(candidate.family).params
    inputs = [k, *(torch.log(p) if n in candidate.log_params else p
                   for n, p in zip(names, inputs[1:], strict=True))]  # fmt: skip
    if pass_ == "forward":
        params = [p.detach() for p in inputs[1:]]

        def forward() -> Any:
            with torch.no_grad():
                return fn(k, *params)

        return forward
    if pass_ == "forward+backward":
        gparams = [p.detach().requires_grad_(True) for p in inputs[1:]]

        def forward_backward() -> Any:
            out = fn(k, *gparams)
            if not out.requires_grad:
                raise RuntimeError("candidate output does not require grad: no backward")
            return torch.autograd.grad(out.sum(), gparams)

        return forward_backward
    raise ValueError(f"unknown pass {pass_!r} (known: {', '.join(PASSES)})")


def make_peer_call(candidate: Candidate, inputs: Sequence[torch.Tensor]) -> Callable[[], Any]:
    """A no-argument callable running a peer forward on float64 CPU copies of ``inputs``."""
    arrays = [np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)
              for t in own_inputs(candidate, inputs)]  # fmt: skip
    threshold = candidate.threshold
    return lambda: candidate.fn(*arrays, threshold=threshold)


def make_copy(n: int, dtype: str, device: str) -> Callable[[], Any]:
    """``dst.copy_(src)`` of ``n`` elements of ``dtype`` on ``device``: the bandwidth floor."""
    tdtype = get_format(dtype).torch_dtype
    src = torch.ones(n, dtype=tdtype, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


