"""``ztbench adversarial``: search for the worst float64 points of candidates.

Random restarts plus refinement towards the zero crossings of the loss and its
gradients, references from the arb engine (:mod:`ztbench.measure.adversarial`). Prints the worst
point of each (candidate, quantity) with its ulp error and cancellation (bits), and
writes every evaluated point to OUTPUT.csv (atomically) when ``-o`` is given. Longer
searches: more ``--rounds`` and ``--restarts``.
"""

from __future__ import annotations

import argparse

from ztbench.candidates import select_candidates
from ztbench.commands._options import add_cache_options
from ztbench.core.families import FAMILIES
from ztbench.io.errors import UserError, positive_int
from ztbench.io.pointsio import write_csv
from ztbench.measure.adversarial import DEFAULT_CANDIDATES, search, worst_points


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--family",
        action="append",
        default=None,
        help=f"one of: {', '.join(FAMILIES)} (repeatable; default both)",
    )
    p.add_argument(
        "--candidates",
        nargs="+",
        default=None,
        metavar="ID",
        help="candidate ids or globs (default: the shipped loss, loss and full forms)",
    )
    p.add_argument("--rounds", type=positive_int, default=3, help="search rounds (default 3)")
    p.add_argument(
        "--restarts", type=positive_int, default=64, help="random restarts per round (default 64)"
    )
    p.add_argument(
        "--keep",
        type=positive_int,
        default=16,
        help="worst points per (candidate, quantity) seeding the next round (default 16)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=positive_int, default=None, help="reference processes")
    p.add_argument("-o", "--output", default=None, metavar="OUTPUT.csv",
                   help="write every evaluated point here")  # fmt: skip
    add_cache_options(p)


def run(args: argparse.Namespace) -> int:
    # the search needs torch and the reference engines: imported here, so that the CLI's
    # help loads neither
    import pandas as pd

    families = args.family or list(FAMILIES)
    for f in families:
        if f not in FAMILIES:
            raise UserError(f"--family: unknown family {f!r} (known: {', '.join(FAMILIES)})")
    chosen: dict[str, list[str]] = {}
    if args.candidates:
        try:
            cands = select_candidates(args.candidates)
        except ValueError as exc:
            raise UserError(f"--candidates: {exc}") from None
        for c in cands:
            if c.kind != "torch":
                raise UserError(f"--candidates: {c.id} is not a torch candidate")
            if c.family in families:
                chosen.setdefault(c.family, []).append(c.id)
    else:
        chosen = {f: list(DEFAULT_CANDIDATES[f]) for f in families}
    cache = False if args.no_cache else args.cache_dir
    frames = []
    for fam, ids in chosen.items():
        res = search(fam, ids, rounds=args.rounds, restarts=args.restarts, keep=args.keep,
                     seed=args.seed, cache_dir=cache, workers=args.workers)  # fmt: skip
        res.insert(0, "family", fam)
        frames.append(res)
        worst = worst_points(res)
        cols = ["candidate", "quantity", "ulp_err", "cancellation_bits", *res.columns[1:4]]
        cols = [c for c in dict.fromkeys(cols) if c in worst.columns and c != "family"]
        print(f"ztbench adversarial: {fam}: {len(res)} evaluations, worst per quantity:")
        print(worst[cols].to_string(index=False))
    if args.output and frames:
        write_csv(pd.concat(frames, ignore_index=True), args.output)
        print(f"ztbench adversarial: wrote {args.output}")
    return 0
