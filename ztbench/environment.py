"""The environment block recorded with every result (env.json).

Numerics depend on the torch version, the device and the thread count, so every result
file carries them. ``device_kind`` is the part of the environment the regression gate
compares (with ``torch``): "cpu" when only the CPU was used, else the CUDA device name.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import torch

from ztbench import __version__

_PACKAGES = ("torch", "numpy", "pandas", "pyarrow", "python-flint", "mpmath", "scipy",
             "statsmodels", "matplotlib")  # fmt: skip


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """The CPU capability whose vector kernels torch runs (``default``, ``avx2``, ``avx512``
    on x86): it decides the last bits of vectorised results; ``ATEN_CPU_CAPABILITY`` lowers it."""
    return str(torch.backends.cpu.get_cpu_capability()).lower()


def _affinity() -> int | None:
    """Number of CPUs this process may run on (None where the OS does not say)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def environment_info(
    suite_path: Path | str | None = None, devices: Iterable[str] = ("cpu",)
) -> dict:
    """Versions, machine and devices of this run, as a JSON-ready dict.

    Keys: ztbench, python, packages (name -> version, None when not installed: torch,
    numpy, python-flint, mpmath, ...), torch (its full version string), torch_cuda (the
    CUDA version torch was built with, None for CPU builds), platform, cpu (model name from
    /proc/cpuinfo), cpu_capability (see :func:`cpu_capability`), cpu_count (logical CPUs),
    cpu_affinity (CPUs this process may use),
    torch_threads and torch_interop_threads (at the time of the call: set the thread count
    first), cuda_available, cuda_devices (names of every visible CUDA device), devices (those
    asked for), device_kind, and suite_path / suite_sha256 (hash of the suite file's bytes)
    when a suite is given. Every value is JSON-serialisable. Callers may add keys (the
    throughput runner records the thread count it fixed).
    """
    devices = tuple(devices)
    cuda = torch.cuda.is_available()
    cuda_names = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    )
    uses_cuda = cuda and "cuda" in devices
    info = {
        "ztbench": __version__,
        "python": sys.version.split()[0],
        "packages": {p: _version(p) for p in _PACKAGES},
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_capability": cpu_capability(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": _affinity(),
        "torch_cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda_available": cuda,
        "cuda_devices": cuda_names,
        "devices": list(devices),
        "device_kind": f"cpu+{cuda_names[0]}" if uses_cuda else "cpu",
    }
    if suite_path is not None:
        path = Path(suite_path)
        info["suite_path"] = str(path)
        info["suite_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return info
