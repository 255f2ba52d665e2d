"""Helpers shared by the fault tests and the fuzz harness: the CLI run in-process, the
one-line promise checked, files listed."""

from __future__ import annotations

import contextlib
import io
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

from ztbench.cli import main

# Suites small enough that a verb runs in seconds.
TINY_SUITE = """
dtypes = ["float64"]
[candidates]
include = ["ztpoisson/stable"]
[families.ztpoisson]
edges = [[1, 1.0], [3, 2.0], [2, 1e-8]]
"""


@dataclass
class Run:
    rc: int
    out: str
    err: list[str]
    exc: BaseException | None = None  # an exception that escaped main: a traceback


def run_cli(argv: list[str]) -> Run:
    """``ztbench.cli.main(argv)`` in-process with stdout/stderr captured.

    argparse's errors (SystemExit) give their exit code; any other exception escaping
    main is returned in ``exc`` (the user would have seen a traceback).
    """
    out, err = io.StringIO(), io.StringIO()
    exc: BaseException | None = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        except Exception as e:
            rc, exc = -1, e
    return Run(rc, out.getvalue(), [ln for ln in err.getvalue().splitlines() if ln.strip()], exc)


def traceback_of(run: Run) -> str:
    """The traceback the user would have seen (for assertion messages)."""
    if run.exc is None:
        return ""
    return "".join(traceback.format_exception(run.exc)[-6:])


def assert_one_line(run: Run, *needles: str, rc: int = 2) -> str:
    """The run ended with exit code ``rc`` and one stderr line holding every needle."""
    assert run.exc is None, traceback_of(run)
    assert run.rc == rc, (run.rc, run.err)
    assert len(run.err) == 1, run.err
    for needle in needles:
        assert needle in run.err[0], (needle, run.err[0])
    return run.err[0]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root`` (relative path -> bytes for files, None for dirs)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            try:
                out[os.path.relpath(p, root)] = Path(p).read_bytes()
            except OSError:
                out[os.path.relpath(p, root)] = b"<unreadable>"
    return out


def temporaries(root: Path) -> list[str]:
    """Temporary files of the atomic writer left under ``root``."""
    return [p for p in tree(root) if Path(p).name.startswith(".") and p.endswith(".tmp")]
