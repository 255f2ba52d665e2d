"""Content-addressed, checksummed, atomically written cache of reference values.

A cache entry holds the reference quantities of one chunk of input points. Its key is
the SHA-256 of the family, the quantity names, the engine name and version, and the exact
bytes of the chunk's input columns, so any change to any of them is a miss, never a stale
hit. The file layout is::

    b"ZTBREF1\\n" + sha256(payload) (32 bytes) + payload (an .npz without pickles)

and is written to a temporary file in the same directory, then renamed over the final
name: a reader sees a whole file or none. A file whose checksum, layout or shapes do not
match is reported in one line on stderr, removed, and recomputed by the caller.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import platformdirs

from ztbench.io.atomic import atomic_write_bytes, ensure_dir
from ztbench.io.errors import UserError, WriteError

MAGIC = b"ZTBREF1\n"
ENV_VAR = "ZTBENCH_CACHE_DIR"


def default_cache_dir() -> Path:
    """$ZTBENCH_CACHE_DIR if set, else the user cache dir (e.g. ~/.cache/ztbench)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir("ztbench")) / "references"


def chunk_key(
    family: str, quantities: Sequence[str], engine: str, version: str, columns: Sequence[np.ndarray]
) -> str:
    """SHA-256 hex digest identifying one chunk's references."""
    h = hashlib.sha256()
    h.update("|".join([family, ",".join(quantities), engine, version]).encode())
    for col in columns:
        h.update(b"|")
        h.update(np.ascontiguousarray(col, dtype="<f8").tobytes())
    return h.hexdigest()


class ReferenceCache:
    """A directory of cache entries, two-level fan-out by key prefix."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        try:
            ensure_dir(self.root)
        except UserError as exc:
            raise UserError(f"cache directory {exc}") from None
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise UserError(
                f"cache directory {self.root}: cannot read and write there (permission "
                "denied); use --cache-dir DIR or --no-cache"
            )

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.ztref"

    def load(self, key: str, nq: int, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The (values, certified) arrays stored under ``key``, or None when absent or bad."""
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            blob = None
            problem: str | None = "a directory, not a file"
        except OSError as exc:
            self._warn(f"cannot read cache file {path} ({exc.strerror}); recomputing")
            return None
        else:
            problem = _check(blob)
        if problem is None and blob is not None:
            try:
                values, certified = _payload(blob[len(MAGIC) + 32 :])
                if values.shape != (nq, n) or values.dtype != np.float64:
                    problem = f"values of shape {values.shape}, expected {(nq, n)}"
                elif certified.shape != (n,) or certified.dtype != np.bool_:
                    problem = f"certified flags of shape {certified.shape}, expected {(n,)}"
            except Exception as exc:  # any malformed payload is a corrupt entry, recomputed
                text = " ".join(str(exc).split())[:100] or type(exc).__name__
                problem = f"unreadable payload ({text})"
        if problem is not None:
            self._warn(f"cache file {path} is corrupt ({problem}); recomputing")
            _remove(path)
            return None
        return values, certified

    @staticmethod
    def _warn(text: str) -> None:
        """One line on stderr per bad entry; the entry is recomputed, the run goes on."""
        print(f"ztbench: {text}", file=sys.stderr)

    def store(self, key: str, values: np.ndarray, certified: np.ndarray) -> None:
        """Write an entry atomically (temporary file in the same directory, then rename)."""
        buf = io.BytesIO()
        np.savez(
            buf,
            values=np.ascontiguousarray(values, dtype=np.float64),
            certified=np.ascontiguousarray(certified, dtype=bool),
        )
        payload = buf.getvalue()
        path = self.path(key)
        try:
            atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).digest() + payload)
        except WriteError as exc:
            if exc.no_space:  # a full disk ends the run (one line); other entries may fit
                raise
            self._warn(f"{exc}; this entry is not cached")


def _payload(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of an entry's payload: an .npz without pickles holding exactly these two."""
    loaded = np.load(io.BytesIO(data), allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"not an .npz archive ({type(loaded).__name__})")
    with loaded as npz:
        if sorted(npz.files) != ["certified", "values"]:
            raise ValueError(f"holds {', '.join(npz.files) or 'nothing'}")
        return npz["values"], npz["certified"]


def _remove(path: Path) -> None:
    """Remove a corrupt entry (a file, or a directory where a file belongs)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass  # the write that follows reports what is wrong


def _check(blob: bytes) -> str | None:
    if not blob.startswith(MAGIC):
        return "bad header"
    digest = blob[len(MAGIC) : len(MAGIC) + 32]
    if len(digest) < 32 or hashlib.sha256(blob[len(MAGIC) + 32 :]).digest() != digest:
        return "checksum mismatch"
    return None
