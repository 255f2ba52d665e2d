"""The options several verbs share, each defined once with its help text.

``--max-points`` (the point budget) and ``--scheduler`` (where references are computed)
are defined beside what they control, in :mod:`ztbench.io.budget` and
:mod:`ztbench.io.executors`; they are re-exported here so that a verb finds every shared
option in one place.
"""

from __future__ import annotations

import argparse

from ztbench.io.budget import add_argument as add_budget_option
from ztbench.io.executors import add_scheduler_option

__all__ = ["add_budget_option", "add_cache_options", "add_progress_option",
           "add_scheduler_option"]  # fmt: skip


def add_cache_options(p: argparse.ArgumentParser, *, no_cache: bool = True) -> None:
    """``--cache-dir DIR`` and (unless ``no_cache=False``) ``--no-cache``."""
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=None,
        help="reference and fit cache directory (default: $ZTBENCH_CACHE_DIR or the user "
        "cache directory)",
    )
    if no_cache:
        p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")


def add_progress_option(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bars (they go to stderr)."""
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
