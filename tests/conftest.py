"""Shared test setup: hermetic reference cache.

Every test sees ``$ZTBENCH_CACHE_DIR`` pointing at a fresh directory of this test
session, never the user's cache: a stale or corrupt entry left there by another version
cannot decide whether a test passes. One directory per session (not per test) keeps the
suites' references computed once per run; tests that exercise the cache itself pass
their own ``cache_dir``. Subprocesses started by tests inherit the variable.
"""

from __future__ import annotations

import os

import pytest

from ztbench.reference.cache import ENV_VAR


@pytest.fixture(scope="session", autouse=True)
def _hermetic_reference_cache(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    previous = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(tmp_path_factory.mktemp("reference-cache"))
    yield
    if previous is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = previous
