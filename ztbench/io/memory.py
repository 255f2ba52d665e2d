"""The process's resident memory (Linux /proc): current size, high-water mark, its reset.

O(1) whatever the number of allocations: the kernel keeps the mark. Off Linux, or where
``/proc/self/clear_refs`` is not writable, the functions raise OSError.
"""

from __future__ import annotations

import resource
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def status_bytes(field: str) -> int:
    """A size field of /proc/self/status in bytes: ``VmRSS`` (resident now), ``VmHWM``
    (resident high-water mark since start or the last :func:`reset_peak`)."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{_STATUS} has no {field}")


def reset_peak() -> None:
    """Reset the high-water mark (``VmHWM``) to the resident size now (writes 5 to
    /proc/self/clear_refs)."""
    _CLEAR_REFS.write_text("5")


def children_peak() -> int:
    """The largest resident high-water mark of any finished child process (bytes; Linux
    reports ru_maxrss in KiB): R, reference workers, subprocess recordings."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
