"""Reading and writing point tables (CSV) for the CLI verbs.

Input: a header row, the family's columns (``k`` and its parameters) in any order, other
columns carried through untouched. Rows are reported by their line number in the file
(the header is line 1). Output floats are written with ``repr``, so they read back as the
same float64 bit for bit; files are written atomically.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ztbench.core.families import Family, to_natural, validate_points
from ztbench.io.atomic import atomic_path
from ztbench.io.errors import UserError, read_input_bytes


def read_header(path: Path | str) -> list[str]:
    """The column names of a CSV file's header row, trimmed (UserError if unreadable)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return [c.strip() for c in next(csv.reader(fh), [])]
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a readable CSV file (not UTF-8: byte {exc.start})") from None
    except (OSError, csv.Error) as exc:
        reason = getattr(exc, "strerror", None) or _first_line(exc)
        raise UserError(f"{path}: not a readable CSV file ({reason})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__


def read_csv_table(
    path: Path | str,
    required: Sequence[str] = (),
    *,
    reserved: Sequence[str] = (),
    infer_types: bool = False,
    complete: bool = False,
    allow_empty: bool = False,
    what: str = "",
) -> pd.DataFrame:
    """Read a CSV file with a header row, strictly; UserError (one line) naming the file.

    Every CSV file ztbench reads comes through here. Refused: a missing, unreadable or
    non-UTF-8 file, a row with more fields than the header (pandas would otherwise read
    the first field as an index and shift the row), a header with an empty or repeated
    name, a missing ``required`` column, a column named like one of ``reserved`` (the
    caller's output columns), no data rows (unless ``allow_empty``), and with ``complete``
    a file that does not end with a newline (cut short: every file ztbench writes ends
    with one). Header names are trimmed of surrounding whitespace. Columns are text unless
    ``infer_types``.
    """
    path = Path(path)
    data = read_input_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a readable CSV file (not UTF-8: byte {exc.start})") from None
    if not text.strip():
        raise UserError(f"{path}: not a readable CSV file (empty: no header row)")
    if complete and not text.endswith("\n"):
        raise UserError(f"{path}: ends inside a row (the file was cut short); rerun what wrote it")
    try:
        raw = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False,
                          index_col=False)  # fmt: skip
    except (pd.errors.EmptyDataError, pd.errors.ParserError, ValueError) as exc:
        raise UserError(f"{path}: not a readable CSV file ({_first_line(exc)})") from None
    names = [str(c).strip() for c in raw.iloc[0].tolist()]
    for i, name in enumerate(names):
        if not name:
            raise UserError(f"{path}: line 1: column {i + 1} has no name")
        if name in names[:i]:
            raise UserError(f"{path}: line 1: column {name!r} appears twice")
    missing = [c for c in required if c not in names]
    if missing:
        expected = f" for {what}" if what else ""
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)}{expected} "
            f"(expected {', '.join(required)}; found {', '.join(names)})"
        )
    clash = [c for c in names if c in reserved]
    if clash:
        raise UserError(
            f"{path}: column(s) {', '.join(clash)} would collide with the output's; "
            "rename or drop them"
        )
    if len(raw) < 2 and not allow_empty:
        raise UserError(f"{path}: no data rows")
    if infer_types:
        return pd.read_csv(io.StringIO(text), header=0, names=names, index_col=False)
    if len(raw) < 2:
        return pd.DataFrame({c: pd.Series([], dtype=str) for c in names})
    df = raw.iloc[1:].reset_index(drop=True)
    df.columns = names
    return df


def read_points_csv(
    path: Path | str,
    family: Family,
    log_params: tuple[str, ...] = (),
    reserved: Sequence[str] = (),
) -> pd.DataFrame:
    """Read and validate a point table; UserError naming the file, line and problem.

    The columns are the family's (``k, lam`` / ``k, mu, theta``), or with ``log_params``
    that parameterisation's (``k, mu, log_theta``: validated as theta = exp(log_theta)).
    They come back as float64; other columns stay as text. ``reserved``: output columns
    of the caller that an input column must not be named like.
    """
    columns = family.columns_for(log_params)
    path = Path(path)
    df = read_csv_table(path, columns, reserved=reserved, what=f"family {family.name}")
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
    """Write ``df`` atomically, as :func:`csv_frame` formats it."""
    with atomic_path(path) as tmp:  # a failed write is a one-line WriteError
        csv_frame(df).to_csv(tmp, index=False)


def csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as written to CSV: float columns as repr (exact round trip), bools as
    true/false, the rest as they are."""
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        series = df[col]
        if pd.api.types.is_bool_dtype(series.dtype):
            out[col] = np.where(series.to_numpy(), "true", "false")
        elif pd.api.types.is_float_dtype(series.dtype):
            out[col] = [repr(x) for x in series.astype(np.float64).tolist()]
        else:
            out[col] = series
    return out
