"""ztbench: numerical accuracy of zero-truncated Poisson and negative binomial losses.

The recommended losses are re-exported lazily (``import ztbench`` does not import torch):
``from ztbench import zt_poisson_nll, zt_negbin_nll`` (see :mod:`ztbench.loss`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "zt_negbin_nll", "zt_poisson_nll"]


def __getattr__(name: str) -> Any:
    if name in ("zt_poisson_nll", "zt_negbin_nll"):
        # lazy: `import ztbench` (the CLI, the gate, the report) must not import torch
        from ztbench import loss

        return getattr(loss, name)
    raise AttributeError(f"module 'ztbench' has no attribute {name!r}")
