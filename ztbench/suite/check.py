"""Validation helpers: one-line UserErrors naming the file and the key path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from ztbench.io.errors import UserError

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def child(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    part = key if _BARE_KEY.match(key) else f'"{key}"'
    return f"{prefix}.{part}" if prefix else part


class Checker:
    """Validation helpers that raise one-line UserErrors naming the file and key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, problem: str) -> UserError:
        text = f"{self.file}: {key}: {problem}" if key else f"{self.file}: {problem}"
        return UserError(" ".join(text.split()))

    def table(
        self,
        value: Any,
        key: str,
        allowed: Iterable[str],
        required: Iterable[str] = (),
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {type_name(value)}")
        allowed = tuple(allowed)
        for k in value:
            if k not in allowed:
                raise self.fail(child(key, k), f"unknown key (allowed: {', '.join(allowed)})")
        for k in required:
            if k not in value:
                raise self.fail(child(key, k), "missing required key")
        return value

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {type_name(value)}")
        x = float(value)
        if not math.isfinite(x):
            raise self.fail(key, f"must be finite, got {value!r}")
        return x

    def integer(self, value: Any, key: str, lo: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {value!r}")
        if value < lo:
            raise self.fail(key, f"must be >= {lo}, got {value}")
        return int(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {type_name(value)}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {type_name(value)}")
        return value

    def list_of(self, value: Any, key: str, *, allow_empty: bool = False) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list, got {type_name(value)}")
        if not value and not allow_empty:
            raise self.fail(key, "is empty")
        return value

    def strings(
        self, value: Any, key: str, choices: Iterable[str] | None = None, what: str = "value"
    ) -> tuple[str, ...]:
        items = self.list_of(value, key)
        out: list[str] = []
        choices = tuple(choices) if choices is not None else None
        for i, v in enumerate(items):
            s = self.string(v, child(key, i))
            if choices is not None and s not in choices:
                raise self.fail(key, f"unknown {what} {s!r} (known: {', '.join(choices)})")
            if s in out:
                raise self.fail(key, f"{what} {s!r} listed twice")
            out.append(s)
        return tuple(out)

    def numbers(self, value: Any, key: str) -> tuple[float, ...]:
        items = self.list_of(value, key)
        return tuple(self.number(v, child(key, i)) for i, v in enumerate(items))


def type_name(value: Any) -> str:
    return {
        dict: "a table",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


