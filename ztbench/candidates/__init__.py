"""Formulations under test (the candidates) and their registry.

``from ztbench.candidates import get_candidate, list_candidates, select_candidates``;
:func:`load_suite` reads a suite file against this registry (and imports the user's own
candidates it declares), :func:`candidate_of` gives one of a suite's candidates.
Torch candidates live in :mod:`.ztpoisson` and :mod:`.ztnb`, peers from other libraries
in :mod:`.peers`, the published package in :mod:`.bento`, the stable primitives in
:mod:`ztbench.loss.primitives`; the metadata type, registry and :class:`Unsupported`
result in :mod:`.base`.
"""

from __future__ import annotations

from pathlib import Path

from ztbench.candidates import peers, ztnb, ztpoisson  # noqa: F401  (registers candidates)
from ztbench.candidates.base import (
    Candidate,
    Unsupported,
    get_candidate,
    list_candidates,
    select_candidates,
)
from ztbench.suite import Suite
from ztbench.suite import load_suite as _load_suite_file

__all__ = [
    "Candidate",
    "Unsupported",
    "candidate_of",
    "get_candidate",
    "list_candidates",
    "load_suite",
    "select_candidates",
]

# Registered last: the registry's order is the report's order (the published package after
# its transcriptions, the shipped loss last).
from ztbench.candidates import bento, ztbench_nll  # noqa: F401
from ztbench.candidates.external import from_suite


def load_suite(path: str | Path) -> Suite:
    """Load and validate a suite file against the registry, its external candidates loaded
    and probed; :class:`~ztbench.io.errors.UserError` (one line) on any problem."""
    return _load_suite_file(path, list_candidates(), from_suite)


def candidate_of(suite: Suite, candidate_id: str) -> Candidate:
    """The candidate object of ``candidate_id`` in ``suite``: its external one, else the
    registry's."""
    if candidate_id in suite.external:
        return suite.external[candidate_id]
    return get_candidate(candidate_id)
