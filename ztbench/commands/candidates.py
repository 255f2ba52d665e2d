"""``ztbench candidates``: the table of registered candidates and their metadata."""

from __future__ import annotations

import argparse

from ztbench.errors import UserError
from ztbench.families import FAMILIES
from ztbench.textfmt import format_table

HELP = "list the candidate formulations: id, family, form, dtypes, description, provenance"

COLUMNS = ("id", "family", "form", "dtypes", "description", "provenance")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", default=None, help=f"only this family ({', '.join(FAMILIES)})")


def rows(family: str | None = None) -> list[dict[str, str]]:
    """One dict per candidate with the table's columns as text."""
    from ztbench.candidates import list_candidates

    out = []
    for c in list_candidates(family):
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
                "dtypes": dtypes,
                "description": desc,
                "provenance": c.provenance,
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    if args.family is not None and args.family not in FAMILIES:
        raise UserError(f"unknown family {args.family!r} (known: {', '.join(FAMILIES)})")
    table = rows(args.family)
    print("\n".join(format_table(COLUMNS, ([r[c] for c in COLUMNS] for r in table))))
    return 0
