"""The environment block recorded with every result (env.json).

Numerics depend on the torch version, the device and the thread count, so every result
file carries them. ``device_kind`` is the part of the environment the regression gate
compares (with ``torch``): "cpu" when only the CPU was used, else the CUDA device name.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ztbench import __version__
from ztbench.core.schema import CPU_CAPABILITIES

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


def supported_capabilities() -> tuple[str, ...]:
    """The CPU capabilities torch can run here: on x86 every one of
    :data:`~ztbench.core.schema.CPU_CAPABILITIES` up to the current one, elsewhere
    ``default`` and the current one."""
    now = cpu_capability()
    if now in CPU_CAPABILITIES:
        return CPU_CAPABILITIES[: CPU_CAPABILITIES.index(now) + 1]
    return ("default", now) if now != "default" else ("default",)


def _affinity() -> int | None:
    """Number of CPUs this process may run on (None where the OS does not say)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


# What each stage records of its own in env.json, beside the run's environment at the top
STAGE_KEYS: tuple[str, ...] = ("devices", "device_kind", "torch_threads", "torch_interop_threads")
STAGES: tuple[str, ...] = ("accuracy", "throughput", "impact")


def stage_env_text(
    out: Path, stage: str, env: dict[str, Any], section: dict[str, Any] | None = None
) -> str:
    """The text of ``out/env.json`` once ``stage`` has run: one file for every stage.

    At the top, the run's environment (versions, machine, suite): the one already in the
    file when there is one (so the accuracy stage's, for a bench run), else ``env``. Under
    ``"stages"``, one section per stage that ran (see :data:`STAGES`): its own devices and
    thread counts (:data:`STAGE_KEYS` of ``env``) and ``section``; the sections of the
    other stages are kept from the file. A file that cannot be read as a JSON object is
    replaced. Writers put the text into their own atomic set of files.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})")
    previous: Any = None
    path = Path(out) / "env.json"
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            previous = None
    if not isinstance(previous, dict) or stage == "accuracy":
        previous = {}
    top = {k: v for k, v in (previous or env).items() if k != "stages"}
    stages = previous.get("stages") if isinstance(previous.get("stages"), dict) else {}
    stages = {k: v for k, v in stages.items() if k in STAGES and k != stage}
    stages[stage] = {**{k: env[k] for k in STAGE_KEYS if k in env}, **(section or {})}
    top["stages"] = {k: stages[k] for k in STAGES if k in stages}
    return json.dumps(top, indent=2, sort_keys=True) + "\n"


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
