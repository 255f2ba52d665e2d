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
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import platformdirs

from ztbench.atomic import atomic_write_bytes

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

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.ztref"

    def load(self, key: str, nq: int, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The (values, certified) arrays stored under ``key``, or None when absent or bad."""
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            print(
                f"ztbench: cannot read cache file {path}: {exc.strerror}; recomputing",
                file=sys.stderr,
            )
            return None
        problem = _check(blob)
        if problem is None:
            try:
                with np.load(io.BytesIO(blob[len(MAGIC) + 32 :]), allow_pickle=False) as npz:
                    values, certified = npz["values"], npz["certified"]
                if values.shape != (nq, n) or values.dtype != np.float64:
                    problem = f"values of shape {values.shape}, expected {(nq, n)}"
                elif certified.shape != (n,) or certified.dtype != np.bool_:
                    problem = f"certified flags of shape {certified.shape}, expected {(n,)}"
            except (ValueError, KeyError, OSError) as exc:
                problem = f"unreadable payload ({exc})"
        if problem is not None:
            print(
                f"ztbench: cache file {path} is corrupt ({problem}); recomputing", file=sys.stderr
            )
            path.unlink(missing_ok=True)
            return None
        return values, certified

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
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).digest() + payload)


def _check(blob: bytes) -> str | None:
    if not blob.startswith(MAGIC):
        return "bad header"
    digest = blob[len(MAGIC) : len(MAGIC) + 32]
    if len(digest) < 32 or hashlib.sha256(blob[len(MAGIC) + 32 :]).digest() != digest:
        return "checksum mismatch"
    return None
