"""``ztbench impact``: refit every gene with each candidate's loss; what it does to the fit.

Writes DIR/impact_genes.csv (one row per dataset, model, family, candidate, dtype and
gene) and DIR/impact_summary.csv (one row per dataset, model, family, candidate and
dtype); see :mod:`ztbench.fit.impact` for the columns. ``--synthetic`` adds the grid of
exact ZTNB samples (dataset "synthetic", with the truth in mu_true and theta_true).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ztbench.commands._options import (
    add_budget_option,
    add_cache_options,
    add_progress_option,
    add_scheduler_option,
)
from ztbench.commands.fit import add_gene_arguments
from ztbench.fit.impact import (
    SYNTHETIC_GRID,
    SYNTHETIC_N,
    SYNTHETIC_SEED,
    impact_genes_frame,
    write_impact,
)
from ztbench.io import budget
from ztbench.io.atomic import check_output_file
from ztbench.io.errors import UserError, nonnegative_int, positive_int, split_list

DEFAULT_DTYPES = "float32,bfloat16"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_gene_arguments(p, dataset_optional=True)
    add_scheduler_option(p)
    p.add_argument(
        "--candidates",
        default=None,
        metavar="LIST",
        help="comma-separated ids or globs (default: every torch candidate of the "
        "family, plus the published head variant)",
    )
    p.add_argument(
        "--dtypes",
        default=DEFAULT_DTYPES,
        metavar="LIST",
        help=f"comma-separated dtypes (default {DEFAULT_DTYPES})",
    )
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="also fit the synthetic-truth grid (exact ZTNB samples)",
    )
    p.add_argument(
        "--synthetic-n",
        type=positive_int,
        default=SYNTHETIC_N,
        metavar="N",
        help=f"nonzero counts per grid cell (default {SYNTHETIC_N})",
    )
    p.add_argument(
        "--synthetic-grid",
        default=SYNTHETIC_GRID,
        metavar="MxT",
        help=f"mu x theta grid points (default {SYNTHETIC_GRID})",
    )
    p.add_argument("--seed", type=nonnegative_int, default=SYNTHETIC_SEED,
                   help="seed of the synthetic grid")  # fmt: skip
    add_budget_option(p)
    p.add_argument(
        "-o",
        "--out",
        default="results/impact",
        metavar="DIR",
        help="output directory (default results/impact)",
    )
    add_cache_options(p)
    add_progress_option(p)


def _grid(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--synthetic-grid: expected MxT such as 9x9, got {text!r}") from None
    if a < 1 or b < 1:
        raise UserError(f"--synthetic-grid: sizes must be >= 1, got {text!r}")
    return a, b


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    for name in ("impact_genes.csv", "impact_summary.csv", "env.json"):
        check_output_file(out / name)  # before the fits, which take minutes
    synthetic = None
    if args.synthetic:
        synthetic = (args.seed, args.synthetic_n, *_grid(args.synthetic_grid))
        problem = budget.excess(synthetic[1] * synthetic[2] * synthetic[3], noun="counts")
        if problem is not None:  # checked before anything is drawn
            raise UserError(f"--synthetic-n x --synthetic-grid {problem}")
    genes, digests = impact_genes_frame(
        args.dataset,
        args.family,
        args.model,
        split_list(args.candidates, "--candidates"),
        split_list(args.dtypes, "--dtypes"),
        False if args.no_cache else args.cache_dir,
        synthetic,
        args.min_nonzero,
        not args.no_progress,
    )
    for p in write_impact(genes, out, digests):
        print(f"wrote {p}")
    return 0
