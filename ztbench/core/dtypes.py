"""Target floating-point formats: names, torch dtypes, format constants, input rounding.

Values move between stages as float64 numpy arrays; a value "in dtype T" is a float64
array whose entries are exactly representable in T (see :func:`round_to`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from ztbench.core.schema import DTYPE_NAMES, member

if TYPE_CHECKING:
    import torch


class FloatFormat(StrEnum):
    """A binary floating-point format, named as its dtype: a member *is* its name's string
    (``FloatFormat.float32 == "float32"``), so it can stand wherever the name does (result
    columns, file names, messages) while carrying its constants to every stage below the
    one that resolved it (``FloatFormat("float32")`` or :func:`get_format`, once).

    ``mant_bits`` counts the significand bits including the implicit one (p), so
    eps = 2**(1 - p); ``min_exp`` is the exponent of the smallest normal (tiny = 2**min_exp).
    """

    mant_bits: int
    min_exp: int
    max: float

    def __new__(cls, name: str, mant_bits: int, min_exp: int, max_: float) -> FloatFormat:
        member = str.__new__(cls, name)
        member._value_ = name
        member.mant_bits, member.min_exp, member.max = mant_bits, min_exp, max_
        return member

    float64 = ("float64", 53, -1022, float(np.finfo(np.float64).max))
    float32 = ("float32", 24, -126, float(np.finfo(np.float32).max))
    bfloat16 = ("bfloat16", 8, -126, 3.3895313892515355e38)  # (2 - 2**-7) * 2**127
    float16 = ("float16", 11, -14, 65504.0)

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
        import torch  # core stays torch-free: only the stages that run torch ask for this

        return getattr(torch, self.value)


FORMATS: dict[str, FloatFormat] = {f.value: f for f in FloatFormat}
assert tuple(FORMATS) == DTYPE_NAMES


def get_format(name: str) -> FloatFormat:
    """The format called ``name`` (a format is returned as it is); ValueError listing the
    known ones otherwise."""
    return member(FloatFormat, name, "dtype")


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to ``dtype`` (round to nearest, ties to even), back as float64.

    Values beyond the format's range become +-inf and values below half its smallest
    subnormal become 0, exactly as a cast in torch does.
    """
    fmt = get_format(dtype)
    arr = np.asarray(x, dtype=np.float64)
    if fmt.name == "float64":
        return arr.copy()
    import torch  # torch's own cast is the rounding measured; core stays torch-free on import

    # torch.tensor copies, so read-only inputs (pandas' arrays) are fine
    return torch.tensor(arr, dtype=torch.float64).to(fmt.torch_dtype).to(torch.float64).numpy()
