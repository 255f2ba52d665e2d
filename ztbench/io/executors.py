"""Where independent tasks run: an in-process pool (the default) or a Dask cluster.

An executor maps a picklable function over a list of tasks and yields ``(index, result)``
pairs as tasks finish, in completion order. The reference engine hands it its missing
chunks (:func:`ztbench.reference.compute_references`) and stores each result in the
cache as it arrives: the caller, never a worker, touches the cache, so workers need
neither a shared disk nor ztbench's cache directory. Closing the iterator early (an
exception, Ctrl-C) cancels what has not run yet.

- :class:`LocalPool`: a ``concurrent.futures`` process pool on this machine, or the
  calling process itself for one worker. Dask is not imported.
- :class:`DaskExecutor`: a ``dask.distributed`` cluster, reached at a scheduler address
  (``tcp://host:8786``), or ``local:N``, a LocalCluster of N single-threaded worker
  processes started on first use. The client connects on first use, so a run whose
  chunks are all cached never needs the cluster. A worker that dies mid-task is replaced
  by the scheduler, which reruns its tasks elsewhere (up to Dask's
  ``distributed.scheduler.allowed-failures`` times).

The CLI selects one with ``--scheduler ADDRESS`` or ``$ZTBENCH_SCHEDULER``
(:func:`add_scheduler_option`; :func:`scheduler_scope` makes it the active executor while
a verb runs, :func:`active_executor` returns it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import multiprocessing
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from ztbench.io.errors import UserError
from ztbench.io.procs import process_pool

ENV_VAR = "ZTBENCH_SCHEDULER"
# Seconds to wait for a scheduler that does not answer: an unreachable address must fail
# fast, and a live scheduler answers in milliseconds.
CONNECT_TIMEOUT_S = 3
# Tasks in flight on a cluster: at least this many, and 4 per worker thread, so workers
# never starve while the client and the scheduler hold a bounded number of task inputs.
MIN_IN_FLIGHT = 256
IN_FLIGHT_PER_THREAD = 4
# A chunk of references is ~30 ms of work: 4 of them make the ~100 ms task that Dask's
# best practices suggest, and keep the scheduler's overhead under one per cent.
MAX_ITEMS_PER_TASK = 4
POOL = "pool"
_LOCAL = re.compile(r"local:(\d+)")

T = TypeVar("T")
R = TypeVar("R")

__all__ = [
    "ENV_VAR",
    "DaskExecutor",
    "Executor",
    "LocalPool",
    "active_executor",
    "add_scheduler_option",
    "make_executor",
    "parse_scheduler",
    "release_active",
    "scheduler_scope",
]


class Executor(Protocol):
    """Runs independent tasks; see the module docstring."""

    def map_unordered(
        self, fn: Callable[[T], R], tasks: Sequence[T], keys: Sequence[str] | None = None
    ) -> Iterator[tuple[int, R]]:
        """Yield ``(i, fn(tasks[i]))`` as each task finishes; ``keys`` name the tasks."""
        ...

    def start(self, *modules: str) -> None:
        """Start the workers now and import ``modules`` on each (before timing a run)."""
        ...

    def n_workers(self) -> int:
        """Worker processes (threads, on a cluster) that run tasks at once."""
        ...

    def items_per_task(self, n: int) -> int:
        """How many of ``n`` small, equal work items to group into one task."""
        ...

    def close(self) -> None:
        """Release workers and connections (the executor may be used again afterwards)."""
        ...


class LocalPool:
    """Process pool on this machine (fork on POSIX); in-process for one worker."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1

    def map_unordered(
        self, fn: Callable[[T], R], tasks: Sequence[T], keys: Sequence[str] | None = None
    ) -> Iterator[tuple[int, R]]:
        if self.workers <= 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                yield i, fn(task)
            return
        ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        # workers die with this process (kill -9 included) and are killed, not awaited,
        # when the iterator is closed early (an exception, Ctrl-C, SIGTERM)
        with process_pool(self.workers, ctx) as pool:
            pending = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield pending.pop(fut), fut.result()

    def start(self, *modules: str) -> None:
        pass  # a pool is forked per call, from this process: nothing to start or import

    def n_workers(self) -> int:
        return self.workers

    def items_per_task(self, n: int) -> int:
        return 1  # a pool task costs a pipe round trip: one item each balances best

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"LocalPool(workers={self.workers})"


class DaskExecutor:
    """Tasks on a dask.distributed cluster; connects (or starts ``local:N``) on first use."""

    def __init__(self, address: str) -> None:
        self.address = parse_scheduler(address)
        self._client: Any = None
        self._cluster: Any = None

    def client(self) -> Any:
        """The connected ``distributed.Client`` (UserError when the scheduler is unreachable)."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise UserError(
                f"scheduler {self.address}: dask.distributed is not installed "
                "(pip install 'ztbench[dask]')"
            ) from None
        local = _LOCAL.fullmatch(self.address)
        if local:
            # One thread per worker process: the arb engine runs Python code under the GIL.
            # Port 0 for the diagnostics server: several clusters may run on one machine.
            # Workers inherit an ignored SIGINT: Ctrl-C in a terminal reaches the whole
            # process group, and this process, not each worker, shuts the cluster down.
            with _sigint_ignored():
                self._cluster = LocalCluster(
                    n_workers=int(local.group(1)),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                )
            return Client(self._cluster, set_as_default=False)
        try:
            return Client(self.address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, ValueError, TimeoutError) as exc:
            raise UserError(
                f"scheduler {self.address}: cannot reach it ({exc})"
            ) from None

    def start(self, *modules: str) -> None:
        client = self.client()
        for module in modules:
            client.run(importlib.import_module, module)

    def n_workers(self) -> int:
        return sum(self.client().nthreads().values())

    def items_per_task(self, n: int) -> int:
        """Up to MAX_ITEMS_PER_TASK, while every worker thread still gets 4 tasks or more.

        The scheduler spends up to about a millisecond per task and handles tasks one at a
        time, so on a large cluster one-chunk tasks would make it the bottleneck; few large
        tasks on a small run would leave workers idle at the end.
        """
        per_thread = IN_FLIGHT_PER_THREAD * max(1, self.n_workers())
        return max(1, min(MAX_ITEMS_PER_TASK, n // per_thread))

    def map_unordered(
        self, fn: Callable[[T], R], tasks: Sequence[T], keys: Sequence[str] | None = None
    ) -> Iterator[tuple[int, R]]:
        from distributed import as_completed

        client = self.client()
        threads = sum(client.nthreads().values())
        in_flight = max(MIN_IN_FLIGHT, IN_FLIGHT_PER_THREAD * threads)
        # Explicit keys: a chunk key names the chunk's content, so two clients asking for
        # the same chunk at the same time share one computation.
        names = list(keys) if keys is not None else [None] * len(tasks)
        index: dict[Any, int] = {}  # future key -> task index, for the futures in flight
        futures: dict[Any, Any] = {}

        def submit(i: int) -> Any:
            fut = client.submit(fn, tasks[i], key=names[i], pure=False)
            index[fut.key], futures[fut.key] = i, fut
            return fut

        nxt = min(in_flight, len(tasks))
        # with_results: results are gathered in the background, so a Ctrl-C lands in the
        # wait for the next one rather than in a blocking fetch (distributed logs a spurious
        # error when one of those is interrupted). A task's own exception is raised here.
        first = [submit(i) for i in range(nxt)]
        queue = as_completed(first, loop=client.loop, with_results=True)
        try:
            for fut, result in queue:
                i = index.pop(fut.key)
                del futures[fut.key]
                fut.release()
                if nxt < len(tasks):
                    queue.add(submit(nxt))
                    nxt += 1
                yield i, result
        finally:
            if futures:
                client.cancel(list(futures.values()))

    def close(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def __repr__(self) -> str:
        return f"DaskExecutor({self.address!r})"


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT meanwhile (processes started now inherit it); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def parse_scheduler(text: str) -> str:
    """Check a ``--scheduler`` value: ``pool``, ``local:N`` (N >= 1) or an address."""
    text = text.strip()
    if text.startswith("local"):
        m = _LOCAL.fullmatch(text)
        if not m or int(m.group(1)) < 1:
            raise UserError(f"{text!r}: expected local:N with N >= 1 worker processes")
    elif not text:
        raise UserError("empty scheduler address")
    return text


def make_executor(address: str | None) -> DaskExecutor | None:
    """The executor for a ``--scheduler`` value (None or ``pool``: None, the local pool)."""
    if address is None or address.strip() == POOL:
        return None
    return DaskExecutor(address)


_ACTIVE: ContextVar[Executor | None] = ContextVar("ztbench_executor", default=None)


def active_executor() -> Executor | None:
    """The executor set by :func:`scheduler_scope`, or None (the caller's local pool)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def scheduler_scope(address: str | None) -> Iterator[Executor | None]:
    """Make the executor for ``address`` (default ``$ZTBENCH_SCHEDULER``) the active one.

    Closes it on exit (the client, and a ``local:N`` cluster), whether the body finished,
    failed or was interrupted.
    """
    if address is None:
        address = os.environ.get(ENV_VAR) or None
        if address is not None:
            try:
                parse_scheduler(address)
            except UserError as exc:
                raise UserError(f"${ENV_VAR}: {exc}") from None
    executor = make_executor(address)
    token = _ACTIVE.set(executor)
    try:
        yield executor
    finally:
        _ACTIVE.reset(token)
        if executor is not None:
            executor.close()


def release_active() -> None:
    """Close the active executor's workers now (it reconnects if used again).

    For a verb that goes on to time something after its references: idle cluster
    processes on the same machine are noise.
    """
    executor = _ACTIVE.get()
    if executor is not None:
        executor.close()


def _scheduler_arg(text: str) -> str:
    try:
        return parse_scheduler(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_scheduler_option(p: argparse.ArgumentParser) -> None:
    """Add ``--scheduler ADDRESS`` to a verb; the CLI runs the verb in its scope."""
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        type=_scheduler_arg,
        default=None,
        help=(
            "compute missing references on a Dask cluster: a scheduler address "
            "(tcp://host:8786), local:N (a local cluster of N worker processes) or pool "
            f"(this machine's process pool, the default); default ${ENV_VAR}"
        ),
    )
