"""Reading and writing point tables (CSV) for the CLI verbs.

Input: a header row, the family's columns (``k`` and its parameters) in any order, other
columns carried through untouched. Rows are reported by their line number in the file
(the header is line 1). Output floats are written with ``repr``, so they read back as the
same float64 bit for bit; files are written atomically.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from ztbench.atomic import atomic_path
from ztbench.errors import UserError
from ztbench.families import Family, to_natural, validate_points


def read_header(path: Path | str) -> list[str]:
    """The column names of a CSV file's header row (UserError if unreadable)."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            return [c.strip() for c in next(csv.reader(fh), [])]
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: not a readable CSV file ({type(exc).__name__})") from None


def read_points_csv(
    path: Path | str, family: Family, log_params: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Read and validate a point table; UserError naming the file, line and problem.

    The columns are the family's (``k, lam`` / ``k, mu, theta``), or with ``log_params``
    that parameterisation's (``k, mu, log_theta``: validated as theta = exp(log_theta)).
    They come back as float64; other columns stay as text.
    """
    columns = family.columns_for(log_params)
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable CSV file ({first})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)} for family {family.name} "
            f"(expected {', '.join(columns)})"
        )
    if df.empty:
        raise UserError(f"{path}: no data rows")
    for col in columns:
        text = df[col].str.strip()
        num = pd.to_numeric(text, errors="coerce")
        bad = num.isna() & ~text.str.lower().isin(["nan", "+nan", "-nan"])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserError(f"{path}: line {i + 2}: {col} = {df[col].iloc[i]!r} is not a number")
        # numpy's parser rounds decimal strings correctly (pandas' fast path may not)
        df[col] = np.asarray(text.to_numpy(dtype=str), dtype=np.float64)
    try:
        validate_points(family, to_natural(family, df, log_params) if log_params else df)
    except ValueError as exc:
        raise UserError(f"{path}: {_line_of(str(exc))}") from None
    return df


def _line_of(message: str) -> str:
    """Turn validate_points' 0-based 'row N' into the file's 'line N+2'."""
    head, sep, rest = message.partition(": row ")
    if not sep:
        return message
    row, _, tail = rest.partition(":")
    return f"line {int(row) + 2}:{tail} ({head})"


def write_csv(df: pd.DataFrame, path: Path | str) -> None:
    """Write ``df`` atomically; float columns as repr (exact round trip), bools as true/false."""
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        series = df[col]
        if pd.api.types.is_bool_dtype(series.dtype):
            out[col] = np.where(series.to_numpy(), "true", "false")
        elif pd.api.types.is_float_dtype(series.dtype):
            out[col] = [repr(x) for x in series.astype(np.float64).tolist()]
        else:
            out[col] = series
    try:
        with atomic_path(path) as tmp:
            out.to_csv(tmp, index=False)
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror})") from None
