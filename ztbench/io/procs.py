"""Worker processes that die with their parent, and SIGTERM that behaves like Ctrl-C.

A pooled run killed with kill -9 or SIGTERM used to leave its workers (hundreds of MB
each) blocked on a queue nobody would fill again. Three things prevent it:

- :func:`worker_init`, the pool's initializer: on Linux the worker asks the kernel for
  SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``, through ctypes), and exits at
  once if the parent is already gone; it ignores SIGINT (Ctrl-C reaches the whole process
  group: the parent alone decides, and the workers print no tracebacks) and takes SIGTERM's
  default action (a fork inherits the parent's handler).
- :func:`process_pool`: a ProcessPoolExecutor that, when the body raises (Ctrl-C, SIGTERM,
  an error), cancels what is queued and kills its workers instead of waiting for them.
- :func:`signals_as_interrupt`: the CLI's SIGINT and SIGTERM handler raises
  KeyboardInterrupt, so SIGTERM takes the Ctrl-C path: one line, workers stopped, files
  consistent (every write is atomic); it records the signal, so that a KeyboardInterrupt
  raised by a user's code is not taken for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def worker_init(parent_pid: int) -> None:
    """Pool initializer (see the module docstring); ``parent_pid``: the pool's owner."""
    _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    # ProcessPoolExecutor has no public way to stop running tasks before Python 3.14
    # (terminate_workers); its _processes map is stable across 3.8-3.13.
    procs = dict(getattr(pool, "_processes", None) or {})
    for proc in procs.values():
        with contextlib.suppress(Exception):
            proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs.values():
        with contextlib.suppress(Exception):
            proc.join(timeout=5)


@contextmanager
def process_pool(max_workers: int, mp_context: Any = None) -> Iterator[ProcessPoolExecutor]:
    """A ProcessPoolExecutor whose workers die with their parent and are killed (not
    awaited) when the body raises."""
    pool = ProcessPoolExecutor(
        max_workers=max_workers,
        mp_context=mp_context,
        initializer=worker_init,
        initargs=(os.getpid(),),
    )
    try:
        yield pool
    except BaseException:
        _kill_workers(pool)
        raise
    pool.shutdown(wait=True)


@dataclass
class Interrupts:
    """What :func:`signals_as_interrupt` saw: the last signal that raised KeyboardInterrupt
    in its body, or None. A KeyboardInterrupt with no signal behind it was raised by code
    (a user's module), and is reported as such, not as Ctrl-C."""

    signum: int | None = None


@contextmanager
def signals_as_interrupt() -> Iterator[Interrupts]:
    """Within the body, SIGINT (unless it is ignored) and SIGTERM raise KeyboardInterrupt
    (main thread only), and the yielded record notes which one did."""
    seen = Interrupts()

    def _raise(signum: int, frame: Any) -> None:
        seen.signum = signum
        raise KeyboardInterrupt

    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            # a SIGINT ignored by whoever started us (a background job of a script) stays
            # ignored: Ctrl-C meant for the foreground must not stop this run
            if sig != signal.SIGTERM and signal.getsignal(sig) == signal.SIG_IGN:
                continue
            previous[sig] = signal.signal(sig, _raise)
    except ValueError:  # not the main thread: leave signals alone
        yield seen
        return
    try:
        yield seen
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


class TimeLimitExceeded(TimeoutError):
    """The body of :func:`time_limit` ran past its limit."""


@contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Within the body, raise :class:`TimeLimitExceeded` naming ``what`` once ``seconds``
    have passed (main thread, POSIX; elsewhere, or for ``seconds <= 0``, no limit).

    The alarm interrupts Python code (a loop that never ends); a call that blocks inside C
    code is interrupted when it returns to Python.
    """
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeLimitExceeded(f"{what}: no result within {seconds:g} s")

    try:
        previous = signal.signal(signal.SIGALRM, expire)
    except ValueError:  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
