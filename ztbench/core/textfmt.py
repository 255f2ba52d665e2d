"""Plain-text and Markdown formatting of numbers and tables, for messages and reports.

Torch-free and pandas-free at import: the CLI's messages, the gate and the report use it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def fmt_num(x: float) -> str:
    """Short number text for messages: 1e9, 1e-30, 15, 0.5."""
    x = float(x)
    if math.isfinite(x) and x == int(x) and abs(x) < 1e6:
        return str(int(x))
    text = f"{x:g}" if float(f"{x:g}") == x else repr(x)
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m[1] == "-" else "") + m[2], text)


def fmt(x: float, digits: int = 3) -> str:
    """A number for a table: ``inf``, ``—`` for NaN, else ``digits`` significant digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 10**digits:
        return f"{x:.{digits}g}"
    if 10**digits <= abs(x) < 1e5:
        return f"{x:.0f}"
    return f"{x:.{digits - 1}e}".replace("e+0", "e+").replace("e-0", "e-")


def gate_number(x: float | str) -> str:
    """A gated metric for the gate's tables: exact integers, else 4 significant digits."""
    if isinstance(x, str):
        return x
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == int(x) and abs(x) < 1e7:
        return str(int(x))
    return f"{x:.4g}"


def ratio(x: float) -> str:
    """A growth factor: ``2.5x``; ``-`` for NaN."""
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.3g}x"


def format_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()
) -> list[str]:
    """Fixed-width plain-text table: the header, a rule of dashes, the rows (two spaces
    between columns; columns in ``right`` right-aligned). Returns the lines."""
    rows = [list(r) for r in rows]
    right = set(right)
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table of a frame of strings (no index)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        cells = [str(c).replace("|", "\\|").replace("\n", " ") for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def file_name(*parts: object, suffix: str) -> str:
    """A file name made of ``parts`` joined by ``-``, safe whatever the parts hold (names
    read from result files): every character but ASCII letters, digits, ``.``, ``_`` and
    ``-`` becomes ``-``, and no name starts with a dot, so it can never leave its directory."""
    text = "-".join(str(p) for p in parts)
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-._") else "-" for ch in text)
    return (safe.strip("-.") or "unnamed") + suffix
