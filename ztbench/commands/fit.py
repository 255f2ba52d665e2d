"""``ztbench fit``: the certified reference fit of every gene of a dataset (fits.parquet)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ztbench.commands._options import add_cache_options
from ztbench.core.families import FAMILIES
from ztbench.fit.run import reference_fit
from ztbench.io.atomic import atomic_path, check_output_file
from ztbench.io.datasets import DATASETS, load
from ztbench.points.counts import MIN_NONZERO, MODELS, check_choices, from_dataset


def add_gene_arguments(
    p: argparse.ArgumentParser,
    *,
    dataset_optional: bool = False,
    extra_models: dict[str, str] | None = None,
    family_help: str = "",
) -> None:
    """DATASET, --family, --model and --min-nonzero: which genes are fitted, and how.

    ``extra_models`` (name -> what it is) adds models beyond the per-gene fits to
    --model's help (the verb handles them); with any, --family defaults to None (the verb
    fills in ztnb for the per-gene fits) and ``family_help`` says what else it takes.
    """
    p.add_argument(
        "dataset",
        metavar="DATASET",
        nargs="?" if dataset_optional else None,
        help=f"a shipped dataset ({', '.join(DATASETS)}) or a path: .npz, a 10x directory "
        "(matrix.mtx, features.tsv, barcodes.tsv), .mtx, .h5ad or 10x .h5 (these two need "
        "h5py)",
    )
    p.add_argument(
        "--family",
        default=None if extra_models else "ztnb",
        help=f"one of: {', '.join(FAMILIES)} (default ztnb){family_help}",
    )
    extra = "".join(f"; {name}: {what}" for name, what in (extra_models or {}).items())
    p.add_argument(
        "--model",
        default="per-gene",
        help=f"one of: {', '.join([*MODELS, *(extra_models or {})])} (default per-gene){extra}",
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
    add_cache_options(p)


def run(args: argparse.Namespace) -> int:
    check_choices(args.family, args.model, args.min_nonzero)
    path = Path(args.out) / "fits.parquet"
    check_output_file(path)  # before the fit, which takes seconds to minutes
    data = from_dataset(load(args.dataset), args.model, args.min_nonzero)
    cache = False if args.no_cache else args.cache_dir
    fits = reference_fit(data, args.family, cache_dir=cache)
    fits.insert(0, "dataset", data.name)
    fits.insert(1, "model", data.model)
    fits.insert(2, "family", args.family)
    with atomic_path(path) as tmp:
        fits.to_parquet(tmp, index=False)
    counts = fits["status"].value_counts()
    print(f"ztbench fit: {len(fits)} genes: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    print(f"wrote {path}")
    return 0
