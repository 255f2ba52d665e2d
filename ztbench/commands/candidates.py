"""``ztbench candidates``: the table of registered candidates and their metadata."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from ztbench.candidates import list_candidates, load_suite
from ztbench.core.families import FAMILIES
from ztbench.core.textfmt import format_table
from ztbench.io.errors import UserError

COLUMNS = ("id", "family", "form", "inputs", "dtypes", "description", "provenance")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE.toml", nargs="?", default=None,
                   help="also list the suite's own [[candidates.external]] (loads and "
                   "probes them: this imports their code)")  # fmt: skip
    p.add_argument("--family", default=None, help=f"only this family ({', '.join(FAMILIES)})")


def rows(family: str | None = None, external: Iterable[Any] = ()) -> list[dict[str, str]]:
    """One dict per candidate (the built-in ones, then ``external``) with the table's
    columns as text."""

    out = []
    extra = [c for c in external if family is None or c.family == family]
    for c in [*list_candidates(family), *extra]:
        dtypes = ",".join(c.dtypes)
        if c.kind == "peer":
            dtypes += " (cpu, no grad)"
        desc = c.description
        if c.threshold is not None:
            desc += f" [threshold {c.threshold:g}]"
        out.append(
            {
                "id": c.id,
                "family": c.family,
                "form": c.form,
                "inputs": ",".join(c.columns),
                "dtypes": dtypes,
                "description": desc,
                "provenance": c.provenance,
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    if args.family is not None and args.family not in FAMILIES:
        raise UserError(f"unknown family {args.family!r} (known: {', '.join(FAMILIES)})")
    external = load_suite(args.suite).external.values() if args.suite else ()
    table = rows(args.family, external)
    print("\n".join(format_table(COLUMNS, ([r[c] for c in COLUMNS] for r in table))))
    return 0
