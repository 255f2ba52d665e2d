"""The fused CPU kernels (``csrc/``), and which path is active.

- The float32 screen (``csrc/screen.cpp``): :mod:`ztbench.loss.screened` makes dozens of
  passes over float64 temporaries; the same formulas and the same error bound written as
  one vectorised C++ loop read the inputs once and write the outputs once.
- The float64 ZTP kernel (``csrc/ztp_float64.h``, :func:`ztp_float64`): the loss and
  d/dlam from double-double terms, each element certified by an error bound (4 ulp for
  the value, 16 for d/dlam) or flagged for the double-double refinement
  (:mod:`ztbench.loss.dd.ztp`).
- The float64 ZTNB kernel (``csrc/ztnb_float64.h``, :func:`ztnb_float64`): the loss and
  its derivatives in the x87 extended format (11 bits more than float64), certified
  likewise; for k <= 16 the outputs it does not certify are recomputed in double-double
  (``csrc/double_double.h``) and certified by a second bound; the rest is flagged for the
  careful kernels and their refinement. Built in where long double has a 64-bit
  significand and glibc is there.

torch builds them as one library (``torch.utils.cpp_extension``, with torch's own headers
and SLEEF) for the CPU capability torch runs with, the first time it is needed, in
torch's extension cache (``$TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``); later processes load the built library. ``make install``
builds it (by calling :func:`status`).

Where it cannot be built (no C++ compiler, an unsupported platform) the loss uses the
pure-torch screen and careful kernels, with the same accuracy, after one warning.
``ZTBENCH_FUSED=0`` turns the fused kernels off. :func:`status` tells which path is
active and why.
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from dataclasses import dataclass
from decimal import Decimal, localcontext
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from ztbench.loss.primitives import H_COEFFS, Q_COEFFS

__all__ = ["FusedStatus", "active", "load", "log_table", "status", "ztnb_float64",
           "ztp_float64"]

_CSRC = Path(__file__).with_name("csrc")
_SOURCE = _CSRC / "screen.cpp"  # the one translation unit; it includes the headers
# the vector flags of each CPU capability torch reports (ATen's Vectorized<double> needs the
# matching CPU_CAPABILITY macro); the build is named after the capability, so that a
# library built for one is never loaded under another
_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-mfma",
               "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
}  # fmt: skip
_DEFAULT_FLAGS = ["-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"]


@dataclass(frozen=True)
class FusedStatus:
    """Which float32 screen the eager CPU loss runs: ``active`` (the fused kernel) or not,
    the CPU ``capability`` it is (or would be) built for, and ``reason`` in words."""

    active: bool
    capability: str
    reason: str


_loaded: ModuleType | None = None
_failure: str | None = None


def _capability() -> str:
    return torch.backends.cpu.get_cpu_capability()


def _name(capability: str) -> str:
    """The build's name: the capability, torch's version and a digest of the sources' path
    and text (torch rebuilds a name whose sources moved: each checkout gets its own
    build, made once)."""
    version = torch.__version__.split("+")[0].replace(".", "_")
    digest = hashlib.sha256(str(_SOURCE.resolve()).encode())
    for path in sorted(_CSRC.glob("*.[ch]*")):
        digest.update(path.name.encode() + path.read_bytes())
    return f"ztbench_screen_{capability.lower()}_torch{version}_{digest.hexdigest()[:12]}"


def load(verbose: bool = False) -> ModuleType | None:
    """The fused kernel's module, building it on first use; None where it is turned off or
    cannot be built (one warning, the first time, saying why)."""
    global _loaded, _failure
    if _loaded is not None or _failure is not None:
        return _loaded
    if os.environ.get("ZTBENCH_FUSED", "1") == "0":
        _failure = "turned off by ZTBENCH_FUSED=0"
        return None
    cap = _capability()
    try:
        from torch.utils.cpp_extension import load as build

        flags = ["-O3", "-ffp-contract=off", *_FLAGS.get(cap, _DEFAULT_FLAGS)]
        _loaded = build(_name(cap), [str(_SOURCE)], extra_cflags=flags, verbose=verbose)
    except Exception as exc:  # no compiler, a failed build: the pure-torch paths
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        _failure = f"could not be built ({first[:200]})"
        warnings.warn(
            f"ztbench.loss: the fused kernels {_failure}; using the pure-torch "
            "screen and kernels (same accuracy, slower)",
            RuntimeWarning,
            stacklevel=3,
        )
    return _loaded


def active() -> bool:
    """Whether the fused kernel is in use (building it if it was not tried yet); a
    constant to torch.compile, which calls it while tracing."""
    return load() is not None


# what torch.compiler.assume_constant_result marks, set without importing the compiler
# (which `import ztbench.loss` does not load)
active._dynamo_marked_constant = True  # type: ignore[attr-defined]


def status() -> FusedStatus:
    """Whether the fused kernels are active (builds them if that was not tried yet)."""
    cap = _capability()
    if load() is not None:
        return FusedStatus(True, cap, f"fused kernel built for {cap}")
    return FusedStatus(False, cap, f"pure-torch screen: the fused kernel {_failure}")


@functools.cache
def log_table(step: float, offset: int, size: int) -> Tensor:
    """The float64 kernel's log table, (3, size): r_j = 1/(1 + j/step) rounded to float64,
    and -log(r_j) = hi_j + lo_j, for j = -offset .. size - offset - 1.

    -log(r_j) is computed with :mod:`decimal` at 50 digits (correctly rounded), so
    hi + lo is within ~2^-106 relative of it."""
    rows: list[list[float]] = [[], [], []]
    with localcontext() as ctx:
        ctx.prec = 50
        for j in range(-offset, size - offset):
            r = 1.0 / (1.0 + j / step)  # 1 + j/step is exact
            t = -Decimal(r).ln()
            hi = float(t)
            for row, x in zip(rows, (r, hi, float(t - Decimal(hi))), strict=True):
                row.append(x)
    return torch.tensor(rows, dtype=torch.float64)


@functools.cache
def _series() -> tuple[Tensor, Tensor]:
    return (torch.tensor(H_COEFFS, dtype=torch.float64),
            torch.tensor(Q_COEFFS, dtype=torch.float64))  # fmt: skip


def ztp_float64(k: Tensor, lam: Tensor, need: bool) -> list[Tensor] | None:
    """The float64 ZTP kernel (``csrc/ztp_float64.h``) on 1-D contiguous float64 CPU
    tensors: [value, d/dlam (empty without ``need``), positions whose value is not
    certified, positions whose d/dlam is not certified, positions outside the kernel's
    range (lam outside [2^-500, 2^500], k >= 2^53)]; [] where an input is invalid (k not
    an integer >= 1, lam not finite and > 0); None where the fused kernel is not built."""
    mod = load()
    if mod is None:
        return None
    table = log_table(mod.log_table_step, mod.log_table_offset, mod.log_table_size)
    return list(mod.ztp_float64(k, lam, need, table, *_series()))


def ztnb_float64(k: Tensor, mu: Tensor, theta: Tensor, need: bool) -> list[Tensor] | None:
    """The float64 ZTNB kernel (``csrc/ztnb_float64.h``) on 1-D contiguous float64 CPU
    tensors: [value, d/dmu, d/dtheta (both empty without ``need``), positions whose value,
    d/dmu, d/dtheta is not certified]; [] where an input is invalid; None where the fused
    kernel is not built or has no extended precision on this platform."""
    mod = load()
    if mod is None or not mod.ztnb_float64_available:
        return None
    return list(mod.ztnb_float64(k, mu, theta, need))


def _reset() -> None:
    """Forget the load attempt (tests)."""
    global _loaded, _failure
    _loaded = None
    _failure = None
