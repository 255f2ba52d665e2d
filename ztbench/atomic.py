"""Atomic file writes: a temporary file in the target's directory, then a rename.

A reader (or a run resumed after kill -9) sees the old file or the whole new one, never a
half-written file. Every file ztbench writes goes through here, so this is also where
write failures become one line (:class:`~ztbench.errors.UserError`, exit code 2): a full
disk names the path and the free space; a directory where a file belongs, or a file where
a directory belongs, says so. A failed write leaves the previous file and no temporary.

Temporary files are named ``.<name>.<host>-<pid>.<random>.tmp``. A run killed with
kill -9 cannot remove its own; the next write of the same file removes those whose
process is gone (same host), and any older than a day (another host sharing the
directory, or a name from an older ztbench), so debris never accumulates.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ztbench.errors import UserError, WriteError, is_no_space, write_error

_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
_STALE_FOREIGN_S = 86400.0  # a temporary we cannot attribute to a live process: one day


def _tag() -> str:
    return f"{_HOST}-{os.getpid()}"  # per call: a forked worker has its own pid


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: Path | str) -> int:
    """Remove temporaries of ``path`` left by killed runs (see the module docstring).

    Returns how many were removed. Never touches a live process's temporary on this host.
    """
    path = Path(path)
    prefix, n = f".{path.name}.", 0
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        tag = name[len(prefix) : -len(".tmp")].rpartition(".")[0]
        host, _, pid = tag.rpartition("-")
        if host == _HOST and pid.isdigit():
            stale = not _pid_alive(int(pid))
        else:
            try:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > _STALE_FOREIGN_S
            except OSError:
                continue
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                n += 1
    return n


def ensure_dir(path: Path | str) -> Path:
    """Create directory ``path`` (and parents); UserError when a file is in the way or the
    directory cannot be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(f"{path}: is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise WriteError(f"{path}: cannot create the directory (a file is in the way)") from None
    except OSError as exc:
        raise write_error(path, exc, "cannot create the directory") from None
    return path


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: Path | str) -> None:
    """Fail early (before a long run) when ``path`` cannot become an output directory."""
    path = Path(path)
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UserError(f"{path}: cannot be a directory ({base} is a file)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{path}: cannot write there ({base}: permission denied)")


def check_output_file(path: Path | str, inputs: Iterable[Path | str] = ()) -> None:
    """Fail early when ``path`` cannot be written as a file, or is one of ``inputs``.

    Writing over an input would lose the user's data if anything went wrong, and replaces
    it with something else if nothing did: refused.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a file")
    for src in inputs:
        src = Path(src)
        same = path.absolute() == src.absolute()
        if not same and path.exists() and src.exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(path, src)
        if same:
            raise UserError(f"{path}: is also an input file; choose another output path")
    check_output_dir(path.parent)


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    For writers that want a file name (pandas ``to_csv``/``to_parquet``, matplotlib
    ``savefig``). On any exception the temporary file is removed and ``path`` is untouched;
    an OSError (full disk, permission, wrong kind of path) becomes a one-line
    :class:`~ztbench.errors.WriteError`.
    Nest several (:class:`contextlib.ExitStack`) to write a set of files all or none.
    """
    path = Path(path)
    ensure_dir(path.parent)
    if path.is_dir():
        raise WriteError(f"{path}: is a directory, not a file")
    remove_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_tag()}.", suffix=".tmp")
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    # mkstemp creates 0600 files; give the result the usual permissions (0666 & ~umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) or is_no_space(exc):
            raise write_error(path, exc) from None
        raise


@contextmanager
def atomic_paths(*paths: Path | str) -> Iterator[list[Path]]:
    """Temporaries for a set of files, renamed over them together when the body succeeds:
    a failure while writing any of them leaves all the previous files as they were."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(p)) for p in paths]


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsynced before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
