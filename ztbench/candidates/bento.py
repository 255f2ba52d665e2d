"""The published package itself as candidates: bento-sc's ``bento_sc.loss`` (MIT licence).

``ztpoisson/bento-sc`` calls ``PoissonNLL(zero_truncated=True, omit_last_term=True,
reduction="none").loss(lam, k)`` and ``ztnb/bento-sc`` calls
``NegativeBinomialNLL(zero_truncated=True, omit_last_term=True, reduction="none")
.loss(mu, log_theta, k)``: the loss form, in the package's own parameterisation (mu and
log theta, as its model head produces them). The package writes into its inputs
(``log_thetas += eps``, ``mus += eps``), so it is given clones (through which autograd
still reaches the candidate's inputs).

bento-sc is installed without its dependencies (``pip install --no-deps bento-sc==0.0.8``:
its loss module needs torch only). Where it cannot be imported, the candidates raise
:class:`~ztbench.candidates.base.Unsupported` ("bento-sc not installed"): their rows read
``unsupported: bento-sc not installed``, never a crash. The transcriptions
``ztpoisson/published`` and ``ztnb/published-code`` match it bit for bit
(tests/candidates/test_bento_sc.py).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from ztbench.candidates.base import Unsupported, register_torch

NOT_INSTALLED = "bento-sc not installed"
PROVENANCE = "bento-sc 0.0.8 (PyPI), bento_sc/loss.py: the published package itself"


@functools.cache
def _losses() -> tuple[Any, Any]:
    """(PoissonNLL, NegativeBinomialNLL) modules in zero-truncated loss mode, built once.

    Their (unused) output heads are built under a fixed seed on a forked RNG, so building
    them neither depends on nor moves the global torch RNG.
    """
    try:
        from bento_sc import loss as bl
    except ImportError:
        raise Unsupported(NOT_INSTALLED) from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ztp = bl.PoissonNLL(1, zero_truncated=True, omit_last_term=True, reduction="none")
        ztnb = bl.NegativeBinomialNLL(
            1, zero_truncated=True, omit_last_term=True, reduction="none"
        )
    return ztp, ztnb


def available() -> bool:
    """True when bento-sc's loss module can be imported."""
    try:
        _losses()
    except Unsupported:
        return False
    return True


def ztpoisson_bento(k: Tensor, lam: Tensor, threshold: float | None = None) -> Tensor:
    """``PoissonNLL.loss(lam, k)`` of the installed bento-sc (on a clone of lam)."""
    return _losses()[0].loss(lam.clone(), k)


def ztnb_bento(k: Tensor, mu: Tensor, log_theta: Tensor, threshold: float | None = None) -> Tensor:
    """``NegativeBinomialNLL.loss(mu, log_theta, k)`` of the installed bento-sc (on clones)."""
    return _losses()[1].loss(mu.clone(), log_theta.clone(), k)


register_torch(
    "ztpoisson",
    "bento-sc",
    ztpoisson_bento,
    "loss",
    "bento_sc.loss.PoissonNLL(zero_truncated=True).loss itself: log(exp(min(lam,10)) - 1 "
    "+ 1e-8) for lam < 10, lam from 10 on, - k log(lam + 1e-8).",
    PROVENANCE,
)
register_torch(
    "ztnb",
    "bento-sc",
    ztnb_bento,
    "loss",
    "bento_sc.loss.NegativeBinomialNLL(zero_truncated=True).loss itself, on (mu, log theta).",
    PROVENANCE,
    log_params=("theta",),
)
