"""Target floating-point formats: names, torch dtypes, format constants, input rounding.

Values move between stages as float64 numpy arrays; a value "in dtype T" is a float64
array whose entries are exactly representable in T (see :func:`round_to`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ztbench.core.schema import DTYPE_NAMES


@dataclass(frozen=True)
class FloatFormat:
    """Constants of a binary floating-point format.

    ``mant_bits`` counts the significand bits including the implicit one (p), so
    eps = 2**(1 - p); ``min_exp`` is the exponent of the smallest normal (tiny = 2**min_exp).
    """

    name: str
    mant_bits: int
    min_exp: int
    max: float

    @property
    def eps(self) -> float:
        return 2.0 ** (1 - self.mant_bits)

    @property
    def tiny(self) -> float:
        """Smallest positive normal number."""
        return 2.0**self.min_exp

    @property
    def smallest_subnormal(self) -> float:
        return 2.0 ** (self.min_exp - self.mant_bits + 1)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.name)


FORMATS: dict[str, FloatFormat] = {
    f.name: f
    for f in (
        FloatFormat("float64", 53, -1022, float(np.finfo(np.float64).max)),
        FloatFormat("float32", 24, -126, float(np.finfo(np.float32).max)),
        FloatFormat("bfloat16", 8, -126, float(torch.finfo(torch.bfloat16).max)),
        FloatFormat("float16", 11, -14, 65504.0),
    )
}
assert tuple(FORMATS) == DTYPE_NAMES


def get_format(name: str) -> FloatFormat:
    """Return the format called ``name``; ValueError listing the known ones otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (known: {', '.join(FORMATS)})") from None


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to ``dtype`` (round to nearest, ties to even), back as float64.

    Values beyond the format's range become +-inf and values below half its smallest
    subnormal become 0, exactly as a cast in torch does.
    """
    fmt = get_format(dtype)
    arr = np.asarray(x, dtype=np.float64)
    if fmt.name == "float64":
        return arr.copy()
    # torch.tensor copies, so read-only inputs (pandas' arrays) are fine
    return torch.tensor(arr, dtype=torch.float64).to(fmt.torch_dtype).to(torch.float64).numpy()
