"""Atomic file writes: a temporary file in the target's directory, then a rename.

A reader (or a run resumed after kill -9) sees the old file or the whole new one, never a
half-written file. Every file ztbench writes goes through here, so this is also where
write failures become one line (:class:`~ztbench.io.errors.UserError`, exit code 2): a full
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

from ztbench.io.errors import UserError, WriteError, is_no_space, write_error

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


def _read_only(path: Path) -> bool:
    """True when ``path`` is on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_output_dir(path: Path | str) -> None:
    """Fail early (before a long run) when ``path`` cannot become an output directory."""
    path = Path(path)
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UserError(f"{path}: cannot be a directory ({base} is a file)")
    if not os.access(base, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only(base) else "permission denied"
        raise UserError(f"{path}: cannot write there ({base}: {why})")


def _refuse_special(path: Path) -> None:
    """An output replaces a regular file or nothing: a link (its target would keep its old
    content), a directory, a FIFO (a reader would block), a device or a socket is refused."""
    if path.is_symlink():
        raise WriteError(f"{path}: is a symbolic link; give the path of a regular file")
    if path.is_dir():
        raise WriteError(f"{path}: is a directory, not a file")
    if path.exists() and not path.is_file():
        raise WriteError(f"{path}: is not a regular file (a FIFO, device or socket)")


def check_output_file(path: Path | str, inputs: Iterable[Path | str] = ()) -> None:
    """Fail early when ``path`` cannot be written as a file, or is one of ``inputs``.

    Writing over an input would lose the user's data if anything went wrong, and replaces
    it with something else if nothing did: refused.
    """
    path = Path(path)
    _refuse_special(path)
    for src in inputs:
        src = Path(src)
        same = path.absolute() == src.absolute()
        if not same and path.exists() and src.exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(path, src)
        if same:
            raise UserError(f"{path}: is also an input file; choose another output path")
    check_output_dir(path.parent)


def _new_temporary(path: Path) -> Path:
    """An empty temporary next to ``path`` (after removing stale ones of killed runs)."""
    ensure_dir(path.parent)
    _refuse_special(path)
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
    return Path(tmp)


def sync_file(tmp: Path) -> None:
    """Flush a written temporary to disk: a full disk shows here at the latest (delayed
    allocation), before anything is renamed."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_paths(*paths: Path | str) -> Iterator[list[Path]]:
    """Temporaries for a set of files, renamed over them together when the body succeeds.

    For writers that want a file name (pandas ``to_csv``/``to_parquet``, matplotlib
    ``savefig``). The temporaries are all written (body) and flushed before the first
    rename, so a failure while writing any of them (a full disk included) leaves every
    previous file as it was and no temporary. An OSError becomes a one-line
    :class:`~ztbench.io.errors.WriteError` naming the file.
    """
    targets = [Path(p) for p in paths]
    tmps: list[Path] = []
    current = targets[0] if targets else Path(".")
    try:
        for p in targets:
            current = p
            tmps.append(_new_temporary(p))
        yield list(tmps)
        for tmp, p in zip(tmps, targets, strict=True):
            current = p
            sync_file(tmp)
        for tmp, p in zip(tmps, targets, strict=True):
            current = p
            os.replace(tmp, p)
    except BaseException as exc:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, WriteError):
            raise
        if isinstance(exc, OSError) or is_no_space(exc):
            named = getattr(exc, "filename", None)
            for tmp, p in zip(tmps, targets, strict=False):  # a writer's error names its temp
                if named is not None and str(named) == str(tmp):
                    current = p
            raise write_error(current, exc) from None
        raise


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path`` (one
    file of :func:`atomic_paths`: on any failure ``path`` is untouched)."""
    with atomic_paths(path) as (tmp,):
        yield tmp


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsynced before the rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
