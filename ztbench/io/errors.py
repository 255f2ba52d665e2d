"""The one exception type that the CLI turns into a single line and exit code 2, and the
few helpers that turn other failures (OS errors, bad numeric flags) into it."""

from __future__ import annotations

import argparse
import errno
import math
import shutil
from pathlib import Path

# A full disk or an exhausted quota: the message names the free space left.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class UserError(Exception):
    """Bad input from the user (file, argument, suite): printed as one line, exit code 2.

    The message must say what is wrong and where (file, row, key).
    """


class WriteError(UserError):
    """A file could not be written (one line); ``no_space`` for a full disk or quota."""

    def __init__(self, message: str, no_space: bool = False) -> None:
        super().__init__(message)
        self.no_space = no_space


def write_error(path: Path | str, exc: BaseException, action: str = "cannot write") -> WriteError:
    """The :class:`WriteError` for an OS error while writing ``path``."""
    return WriteError(os_error_text(path, exc, action), is_no_space(exc))


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else ""


def _free_space(path: Path) -> str:
    """Free bytes on the file system holding ``path`` (its nearest existing ancestor)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = float(shutil.disk_usage(p).free)
    except OSError:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if free < 1000 or unit == "TB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1000
    return "unknown"  # pragma: no cover


def is_no_space(exc: BaseException) -> bool:
    """True for a full disk or quota (ENOSPC/EDQUOT; pyarrow's errors carry only the text)."""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


def os_error_text(path: Path | str, exc: BaseException, action: str = "cannot write") -> str:
    """One line for an OS error on ``path``; a full disk names the free space left."""
    reason = getattr(exc, "strerror", None) or _first_line(str(exc)) or type(exc).__name__
    if is_no_space(exc):
        return f"{path}: {action}: no space left ({_free_space(Path(path))} free there)"
    return f"{path}: {action} ({reason})"


def read_input_bytes(path: Path | str) -> bytes:
    """The bytes of a file the user gave; UserError (one line) when it cannot be read."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(os_error_text(path, exc, "cannot read")) from None


# ----------------------------------------------------------- argparse types (one line each)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``1e6`` accepted when it is an integer)."""
    x = _number(text)
    if not math.isfinite(x) or x < 1 or x != math.floor(x):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(x)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    x = _number(text)
    if not math.isfinite(x) or x < 0 or x != math.floor(x):
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return int(x)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    x = _number(text)
    if not math.isfinite(x) or x <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite positive number")
    return x


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    x = _number(text)
    if not math.isfinite(x) or x < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite non-negative number")
    return x


def grid_shape(text: str) -> tuple[int, int]:
    """``'9x9'`` -> (9, 9): the sizes of an M x T grid, each >= 1; ValueError (the message
    says what was expected) otherwise."""
    try:
        a, b = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected MxT such as 9x9, got {text!r}") from None
    if a < 1 or b < 1:
        raise ValueError(f"sizes must be >= 1, got {text!r}")
    return a, b


def split_list(value: str | None, option: str = "") -> list[str] | None:
    """``'a, b, a'`` -> ['a', 'b']: the items of a comma-separated option, each once, in
    order (None stays None); UserError, naming ``option``, for a list with no item."""
    if value is None:
        return None
    items = list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if not items:
        raise UserError(f"{option + ': ' if option else ''}empty list {value!r}")
    return items
