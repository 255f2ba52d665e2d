"""Shared test setup: hermetic reference cache.

Every test sees ``$ZTBENCH_CACHE_DIR`` pointing at a fresh directory of this test
session, never the user's cache: a stale or corrupt entry left there by another version
cannot decide whether a test passes. One directory per session (not per test) keeps the
suites' references computed once per run; tests that exercise the cache itself pass
their own ``cache_dir``. Subprocesses started by tests inherit the variable.

``$ZTBENCH_SCHEDULER`` is unset for the session too: the tests choose where references
run (the local pool unless a test starts a cluster).

The tree mirrors the package's layers (``tests/loss`` for ``ztbench/loss`` and so on).
Markers that describe where a test runs are given by its directory
(:data:`DIRECTORY_MARKERS`), not by the test: ``subprocess`` (starts ztbench or Python in
a process of its own), ``cluster`` (starts a Dask cluster), ``slow`` (takes seconds;
``make test-fast`` leaves it out). A single slow test in a fast directory still carries
its own ``slow`` mark.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ztbench.io.executors import ENV_VAR as SCHEDULER_VAR
from ztbench.reference.cache import ENV_VAR


@pytest.fixture(scope="session", autouse=True)
def _hermetic_reference_cache(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    previous = os.environ.get(ENV_VAR)
    scheduler = os.environ.pop(SCHEDULER_VAR, None)
    os.environ[ENV_VAR] = str(tmp_path_factory.mktemp("reference-cache"))
    yield
    if previous is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = previous
    if scheduler is not None:
        os.environ[SCHEDULER_VAR] = scheduler


TESTS = Path(__file__).resolve().parent
DIRECTORY_MARKERS: dict[str, tuple[str, ...]] = {
    "architecture": ("subprocess",),
    "commands": ("subprocess",),
    "docs": ("subprocess", "slow"),
    "examples": ("subprocess", "slow"),
    "reference/cluster": ("cluster", "slow"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            where = Path(item.path).resolve().parent.relative_to(TESTS).as_posix()
        except ValueError:
            continue
        for directory, markers in DIRECTORY_MARKERS.items():
            if where == directory or where.startswith(directory + "/"):
                for name in markers:
                    item.add_marker(name)
