"""Running candidates: torch.compile's cache and limits, and one-line failure reasons.

Shared by the accuracy runner (:mod:`ztbench.measure.evaluate`) and the throughput runner, so a
compiled candidate is compiled once per process and a failure reads the same in both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ztbench.candidates.base import Candidate


def is_missing_kernel(exc: BaseException) -> bool:
    """True when ``exc`` says torch has no kernel for this dtype/device (a typed result).
    A meta tensor (no data: "Cannot copy out of meta tensor") is the code's own doing, not
    a missing kernel."""
    msg = str(exc)
    if "meta tensor" in msg:
        return False
    return isinstance(exc, NotImplementedError) or any(
        s in msg
        for s in ("not implemented for", "not supported", "No kernel", "no kernel", "Could not run")
    )


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for one-line status reasons."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


RECOMPILE_LIMIT = 256
_COMPILED: dict[Callable[..., Any], Callable[..., Any]] = {}


def compiled(candidate: Candidate) -> Callable[..., Any]:
    """``torch.compile(candidate.fn, dynamic=True)``, cached per candidate function.

    The candidate's own function is compiled, not a shared wrapper: dynamo caches graphs
    per code object, and a wrapper shared by every candidate reaches the recompile limit
    after a few (candidate, dtype, grad mode) combinations. The cache is keyed by the
    function object, not the id: two suites may declare different user functions under
    one id. Call it inside :func:`compile_limits`.
    """
    fn = _COMPILED.get(candidate.fn)
    if fn is None:
        fn = _COMPILED[candidate.fn] = torch.compile(candidate.fn, dynamic=True)
    return fn


@contextmanager
def compile_limits() -> Iterator[None]:
    """Raise dynamo's recompile limit for a block, and make hitting it an error.

    One graph is compiled per dtype x device x grad mode (and threshold value); past the
    limit dynamo would otherwise fall back to eager silently, and a "compile" result
    would really be an eager one.
    """
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    patch: dict[str, Any] = {name: max(getattr(cfg, name), RECOMPILE_LIMIT)}
    if hasattr(cfg, "fail_on_recompile_limit_hit"):
        patch["fail_on_recompile_limit_hit"] = True
    with cfg.patch(patch):
        yield
