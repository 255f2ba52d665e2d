"""Formulations under test (the candidates) and their registry.

``from ztbench.candidates import get_candidate, list_candidates, select_candidates``.
Torch candidates live in :mod:`.ztpoisson` and :mod:`.ztnb`, peers from other libraries
in :mod:`.peers`, the published package in :mod:`.bento`, the stable primitives in
:mod:`ztbench.loss.primitives`; the metadata type, registry and :class:`Unsupported`
result in :mod:`.base`.
"""

from __future__ import annotations

from ztbench.candidates import peers, ztnb, ztpoisson  # noqa: F401  (registers candidates)
from ztbench.candidates.base import (
    Candidate,
    Unsupported,
    get_candidate,
    list_candidates,
    select_candidates,
)

__all__ = ["Candidate", "Unsupported", "get_candidate", "list_candidates", "select_candidates"]

# Registered last: the registry's order is the report's order (the published package after
# its transcriptions, the shipped loss last).
from ztbench.candidates import bento, ztbench_nll  # noqa: F401
