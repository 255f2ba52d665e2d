"""Missing reference chunks on a Dask cluster: same bytes as the local pool, faults handled.

One LocalCluster of 2 worker processes (``--scheduler local:2``) serves the module; the
test that kills one of its workers runs after the others that use it.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ztbench.candidates import load_suite
from ztbench.cli import main
from ztbench.io.errors import UserError
from ztbench.io.executors import (
    CONNECT_TIMEOUT_S,
    DaskExecutor,
    LocalPool,
    active_executor,
    scheduler_scope,
)
from ztbench.reference import CHUNK_POINTS, compute_references
from ztbench.reference.cache import MAGIC, ReferenceCache

pytest.importorskip("distributed")

# 16 chunks on 2 workers: tasks of 2 chunks (DaskExecutor.items_per_task)
N_CHUNKS = 16


def _points(n: int, seed: int = 5) -> pd.DataFrame:
    """Log-uniform over the whole ztnb domain (k integer in [1, 1e7])."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "k": np.floor(np.exp(rng.uniform(0, np.log(1e7), n))),
            "mu": np.exp(rng.uniform(np.log(1e-30), np.log(1e9), n)),
            "theta": np.exp(rng.uniform(np.log(1e-12), np.log(1e10), n)),
        }
    )


@pytest.fixture(scope="module")
def points() -> pd.DataFrame:
    return _points(N_CHUNKS * CHUNK_POINTS)


@pytest.fixture(scope="module")
def pooled(points) -> pd.DataFrame:
    """The local process pool's references: what every cluster run must reproduce."""
    return compute_references("ztnb", points, cache_dir=False, progress=False, workers=2)


@pytest.fixture(scope="module")
def cluster():
    executor = DaskExecutor("local:2")
    executor.start("ztbench.reference")
    yield executor
    executor.close()


def _bytes(df: pd.DataFrame) -> dict[str, bytes]:
    return {c: df[c].to_numpy().tobytes() for c in df.columns}


def _check_cache(cache: Path, n_entries: int) -> None:
    """Exactly ``n_entries`` whole, checksummed entries and no temporary file."""
    files = sorted(p for p in cache.rglob("*") if p.is_file())
    assert [p for p in files if p.suffix != ".ztref"] == []
    assert len(files) == n_entries
    store = ReferenceCache(cache)
    for path in files:
        assert path.read_bytes().startswith(MAGIC)
        assert store.load(path.stem, 4, CHUNK_POINTS) is not None, f"{path} is not whole"


def test_default_pool_never_imports_dask(tmp_path):
    src = tmp_path / "in.csv"
    _points(5 * CHUNK_POINTS).to_csv(src, index=False)
    script = (
        "import sys; from ztbench.cli import main;"
        f"rc = main(['refs', {str(src)!r}, '-o', {str(tmp_path / 'o.csv')!r}, '--family', 'ztnb',"
        " '--no-cache', '--no-progress']);"
        "assert rc == 0, rc;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_local_pool_yields_every_task_once():
    got = list(LocalPool(2).map_unordered(abs, [-3, 1, -2, 5, -8]))
    assert sorted(got) == [(0, 3), (1, 1), (2, 2), (3, 5), (4, 8)]


def test_cluster_tasks_group_chunks_but_keep_every_thread_busy(cluster):
    # 2 worker threads: at least 8 tasks while there are chunks for them, at most 4 chunks
    # per task
    assert [cluster.items_per_task(n) for n in (1, 8, 15, 16, 31, 32, 1000)] == [
        1, 1, 1, 2, 3, 4, 4,
    ]  # fmt: skip


def test_cluster_gives_the_pool_bytes_and_fills_the_cache(points, pooled, cluster, tmp_path):
    cache = tmp_path / "cache"
    got = compute_references("ztnb", points, cache_dir=cache, progress=False, executor=cluster)
    assert _bytes(got) == _bytes(pooled)
    assert got.attrs["reference_stats"]["computed_points"] == len(points)
    _check_cache(cache, N_CHUNKS)
    # the cache it wrote serves a pool run: nothing computed, same bytes
    again = compute_references("ztnb", points, cache_dir=cache, progress=False)
    assert again.attrs["reference_stats"]["computed_points"] == 0
    assert _bytes(again) == _bytes(pooled)


def test_cluster_gives_the_pool_bytes_for_log_parameters(points, cluster):
    sub = points.iloc[: 2 * CHUNK_POINTS]
    logged = pd.DataFrame({"k": sub["k"], "mu": sub["mu"], "log_theta": np.log(sub["theta"])})
    kwargs = {"cache_dir": False, "progress": False, "log_params": ("theta",)}
    pool = compute_references("ztnb", logged, executor=LocalPool(2), **kwargs)
    got = compute_references("ztnb", logged, executor=cluster, **kwargs)
    assert "d_log_theta" in got.columns
    assert _bytes(got) == _bytes(pool)


def test_refs_verb_on_a_scheduler_address_writes_the_pool_file(points, cluster, tmp_path):
    sub = points.iloc[: 3 * CHUNK_POINTS].astype({"k": "int64"})
    src = tmp_path / "in.csv"
    sub.to_csv(src, index=False)
    argv = ["refs", str(src), "--family", "ztnb", "--no-cache", "--no-progress"]
    address = cluster.client().scheduler.address
    assert main([*argv, "-o", str(tmp_path / "dask.csv"), "--scheduler", address]) == 0
    assert main([*argv, "-o", str(tmp_path / "pool.csv")]) == 0
    assert (tmp_path / "dask.csv").read_bytes() == (tmp_path / "pool.csv").read_bytes()
    assert active_executor() is None  # the verb's scope is closed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_line_and_exit_2(tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text("k,mu,theta\n1,2,3\n")
    out = tmp_path / "out.csv"
    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    rc = main(["refs", str(src), "-o", str(out), "--family", "ztnb", "--no-cache",
               "--scheduler", address])  # fmt: skip
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith(f"ztbench refs: error: scheduler {address}")
    assert "cannot reach" in err
    assert elapsed < CONNECT_TIMEOUT_S + 5
    assert not out.exists()


def test_bad_scheduler_option_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["refs", "in.csv", "-o", "o.csv", "--family", "ztnb", "--scheduler", "local:0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'local:0': expected local:N with N >= 1" in err


def test_bad_scheduler_variable_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZTBENCH_SCHEDULER", "local:two")
    rc = main(["refs", "in.csv", "-o", "o.csv", "--family", "ztnb"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == "ztbench refs: error: $ZTBENCH_SCHEDULER: 'local:two': expected local:N with " \
        "N >= 1 worker processes\n"


def test_scope_reads_the_environment_and_pool_overrides_it(monkeypatch):
    monkeypatch.setenv("ZTBENCH_SCHEDULER", "tcp://127.0.0.1:1")
    with scheduler_scope(None) as ex:
        assert isinstance(ex, DaskExecutor) and active_executor() is ex
    with scheduler_scope("pool") as ex:
        assert ex is None and active_executor() is None


def test_interrupt_cancels_the_futures_and_keeps_the_cache_whole(
    points, pooled, cluster, tmp_path, monkeypatch
):
    """Ctrl-C while results arrive: the rest is cancelled, stored chunks are whole."""
    cache = tmp_path / "cache"
    store = ReferenceCache.store
    calls = []

    def store_then_interrupt(self, key, values, certified):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(key)
        store(self, key, values, certified)

    monkeypatch.setattr(ReferenceCache, "store", store_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        compute_references("ztnb", points, cache_dir=cache, progress=False, executor=cluster)
    monkeypatch.setattr(ReferenceCache, "store", store)
    scheduler = cluster._cluster.scheduler
    deadline = time.monotonic() + 10
    while scheduler.tasks and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not scheduler.tasks, f"{len(scheduler.tasks)} tasks left on the scheduler"
    _check_cache(cache, 2)

    resumed = compute_references("ztnb", points, cache_dir=cache, progress=False)
    assert resumed.attrs["reference_stats"]["cached_points"] == 2 * CHUNK_POINTS
    assert _bytes(resumed) == _bytes(pooled)


def test_killed_worker_is_replaced_and_its_chunks_rerun(points, pooled, cluster, tmp_path):
    """SIGKILL one worker once the first chunk is stored: the run completes, same bytes."""
    client = cluster.client()
    pids = client.run(os.getpid)
    victim = next(iter(pids.values()))
    cache = tmp_path / "cache"
    killed_at: list[int] = []

    def kill_after_first_chunk() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = len(list(cache.rglob("*.ztref"))) if cache.exists() else 0
            if done:
                os.kill(victim, signal.SIGKILL)
                killed_at.append(done)
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_after_first_chunk)
    t0 = time.time()
    killer.start()
    try:
        got = compute_references("ztnb", points, cache_dir=cache, progress=False, executor=cluster)
    finally:
        killer.join()
    assert killed_at and killed_at[0] < N_CHUNKS, "the worker was not killed mid-run"
    assert victim not in client.run(os.getpid).values()
    # the scheduler put at least one task on a second worker after the first one died
    starts: dict[str, int] = {}
    for event in cluster._cluster.scheduler.transition_log:
        # (key, start, finish, recommendations, stimulus id, time); earlier tests' runs of
        # the same chunks are in the log too
        if event[-1] >= t0 and str(event[0]).startswith("ztref-") and event[2] == "processing":
            starts[event[0]] = starts.get(event[0], 0) + 1
    assert len(starts) == N_CHUNKS // 2  # two chunks per task
    assert max(starts.values()) >= 2, "no task was rerun"
    assert _bytes(got) == _bytes(pooled)
    _check_cache(cache, N_CHUNKS)


class _OtherVersion(LocalPool):
    """In-process executor whose 'worker' reports another engine version."""

    def map_unordered(self, fn, tasks, keys=None):
        for i, (_, chunks) in super().map_unordered(fn, tasks, keys):
            yield i, ("python-flint-0.0.1/alg-1", chunks)


def test_worker_with_other_engine_version_stops_the_run_and_caches_nothing(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="install the same versions on the workers"):
        compute_references("ztnb", _points(10), cache_dir=cache, executor=_OtherVersion(1))
    assert not cache.exists() or not list(cache.rglob("*.ztref"))


def test_dense_suite_validates():
    suite = load_suite(Path(__file__).resolve().parents[3] / "suites" / "dense.toml")
    assert list(suite.families) == ["ztnb"] and suite.dtypes == ("float64", "float32")
