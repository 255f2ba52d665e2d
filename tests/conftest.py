"""Shared test setup: hermetic reference cache.

Every test sees ``$ZTBENCH_CACHE_DIR`` pointing at a fresh directory of this test
session, never the user's cache: a stale or corrupt entry left there by another version
cannot decide whether a test passes. One directory per session (not per test) keeps the
suites' references computed once per run; tests that exercise the cache itself pass
their own ``cache_dir``. Subprocesses started by tests inherit the variable.

``$ZTBENCH_SCHEDULER`` is unset for the session too: the tests choose where references
run (the local pool unless a test starts a cluster).
"""

from __future__ import annotations

import os

import pytest

from ztbench.executor import ENV_VAR as SCHEDULER_VAR
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
