"""``ztbench fit``: the certified reference fit of every gene of a dataset (fits.parquet)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ztbench.atomic import atomic_path
from ztbench.datasets import DATASETS
from ztbench.errors import UserError
from ztbench.families import FAMILIES
from ztbench.fit.data import MIN_NONZERO, MODELS

HELP = "maximum-likelihood reference fit (float64, certified stationary) of each gene"


def add_gene_arguments(p: argparse.ArgumentParser, *, dataset_optional: bool = False) -> None:
    """DATASET, --family, --model and --min-nonzero: which genes are fitted, and how."""
    p.add_argument(
        "dataset",
        metavar="DATASET",
        nargs="?" if dataset_optional else None,
        help=f"a shipped dataset ({', '.join(DATASETS)}) or a path to an .npz",
    )
    p.add_argument("--family", default="ztnb", help=f"one of: {', '.join(FAMILIES)} (default ztnb)")
    p.add_argument(
        "--model", default="per-gene", help=f"one of: {', '.join(MODELS)} (default per-gene)"
    )
    p.add_argument(
        "--min-nonzero",
        type=int,
        default=MIN_NONZERO,
        metavar="N",
        help=f"fit genes with at least N nonzero cells (default {MIN_NONZERO})",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_gene_arguments(p)
    p.add_argument(
        "-o",
        "--out",
        default="results/fit",
        metavar="DIR",
        help="output directory (default results/fit)",
    )
    p.add_argument(
        "--cache-dir", help="cache directory (default $ZTBENCH_CACHE_DIR or the user cache dir)"
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")


def check_choices(family: str, model: str, min_nonzero: int = MIN_NONZERO) -> None:
    """UserError for an unknown family or model or a bad --min-nonzero."""
    if family not in FAMILIES:
        raise UserError(f"--family: unknown family {family!r} (known: {', '.join(FAMILIES)})")
    if model not in MODELS:
        raise UserError(f"--model: unknown model {model!r} (known: {', '.join(MODELS)})")
    if min_nonzero < 1:
        raise UserError(f"--min-nonzero must be >= 1, got {min_nonzero}")


def run(args: argparse.Namespace) -> int:
    from ztbench.datasets import load
    from ztbench.fit.data import from_dataset
    from ztbench.fit.run import reference_fit

    check_choices(args.family, args.model, args.min_nonzero)
    data = from_dataset(load(args.dataset), args.model, args.min_nonzero)
    cache = False if args.no_cache else args.cache_dir
    fits = reference_fit(data, args.family, cache_dir=cache)
    fits.insert(0, "dataset", data.name)
    fits.insert(1, "model", data.model)
    fits.insert(2, "family", args.family)
    path = Path(args.out) / "fits.parquet"
    with atomic_path(path) as tmp:
        fits.to_parquet(tmp, index=False)
    counts = fits["status"].value_counts()
    print(f"ztbench fit: {len(fits)} genes: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    print(f"wrote {path}")
    return 0
