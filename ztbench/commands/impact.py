"""``ztbench impact``: refit every gene with each candidate's loss; what it does to the fit.

Writes DIR/impact_genes.csv (one row per dataset, model, family, candidate, dtype and
gene) and DIR/impact_summary.csv (one row per dataset, model, family, candidate and
dtype); see :mod:`ztbench.fit.impact` for the columns. ``--synthetic`` adds the grid of
exact ZTNB samples (dataset "synthetic", with the truth in mu_true and theta_true).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ztbench.commands.fit import add_gene_arguments, check_choices
from ztbench.datasets import DATASETS
from ztbench.errors import UserError
from ztbench.executor import add_scheduler_option
from ztbench.fit.data import MIN_NONZERO
from ztbench.schema import DTYPE_NAMES

HELP = "refit each gene with each candidate's loss and dtype; excess NLL and parameter errors"
DEFAULT_DTYPES = "float32,bfloat16"
SYNTHETIC_N = 2000
SYNTHETIC_GRID = "9x9"
SYNTHETIC_SEED = 20240611


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
        type=int,
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
    p.add_argument("--seed", type=int, default=SYNTHETIC_SEED, help="seed of the synthetic grid")
    p.add_argument(
        "-o",
        "--out",
        default="results/impact",
        metavar="DIR",
        help="output directory (default results/impact)",
    )
    p.add_argument(
        "--cache-dir", help="cache directory (default $ZTBENCH_CACHE_DIR or the user cache dir)"
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"--{what}: empty list")
    return items


def _grid(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--synthetic-grid: expected MxT such as 9x9, got {text!r}") from None
    if a < 1 or b < 1:
        raise UserError(f"--synthetic-grid: sizes must be >= 1, got {text!r}")
    return a, b


def impact_genes_frame(
    dataset: str | None,
    family: str,
    model: str,
    candidates: list[str] | None,
    dtypes: list[str],
    cache_dir: str | bool | None = None,
    synthetic: tuple[int, int, int, int] | None = None,
    min_nonzero: int = MIN_NONZERO,
    progress: bool = True,
) -> pd.DataFrame:
    """The per-gene impact rows of ``dataset`` (if given) and of the synthetic grid (if
    ``synthetic`` = (seed, n, n_mu, n_theta) is given); UserError on bad arguments."""
    from ztbench.candidates import list_candidates, select_candidates
    from ztbench.datasets import load
    from ztbench.fit.data import from_dataset
    from ztbench.fit.impact import default_variants, impact_genes
    from ztbench.fit.synthetic import grid, synthetic_data

    check_choices(family, model, min_nonzero)
    for d in dtypes:
        if d not in DTYPE_NAMES:
            raise UserError(f"--dtypes: unknown dtype {d!r} (known: {', '.join(DTYPE_NAMES)})")
    try:
        chosen = select_candidates(candidates) if candidates else list_candidates()
    except ValueError as exc:
        raise UserError(f"--candidates: {exc}") from None
    frames = []
    if dataset is not None:
        variants = default_variants(family, chosen)
        if not variants:
            raise UserError(f"--candidates: no torch candidate of family {family}")
        data = from_dataset(load(dataset), model, min_nonzero)
        frames.append(impact_genes(data, family, variants, dtypes, cache_dir, progress))
    if synthetic is not None:
        seed, n, n_mu, n_theta = synthetic
        variants = default_variants("ztnb", chosen)
        if not variants:
            raise UserError("--synthetic: needs ztnb candidates")
        data, truth = synthetic_data(seed, n, *grid(n_mu, n_theta))
        frames.append(impact_genes(data, "ztnb", variants, dtypes, cache_dir, progress, truth))
    if not frames:
        raise UserError("give a DATASET, --synthetic, or both")
    return pd.concat(frames, ignore_index=True)


def write_impact(genes: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    """Write impact_genes.csv, impact_summary.csv and impact_env.json (versions, the
    datasets' sha256, the optimiser's settings) into ``out``; return the CSV paths."""
    import json

    from ztbench.atomic import atomic_write_text
    from ztbench.environment import environment_info
    from ztbench.fit import run
    from ztbench.fit.impact import summarize
    from ztbench.pointsio import write_csv

    paths = (out / "impact_genes.csv", out / "impact_summary.csv")
    write_csv(genes, paths[0])
    write_csv(summarize(genes), paths[1])
    env = environment_info()
    env["impact"] = {
        "datasets": {d: DATASETS.get(d) for d in dict.fromkeys(genes["dataset"])},
        "optimizer": run.OPTIMIZER_VERSION,
        "max_iter": run.MAX_ITER,
        "candidate_gtol": run.CANDIDATE_GTOL,
        "reference_gtol": run.REFERENCE_GTOL,
        "stationary_rtol": run.STATIONARY_RTOL,
        "box": {k: list(v) for k, v in run.BOX.items()},
        "theta0": run.THETA0,
    }
    atomic_write_text(out / "impact_env.json", json.dumps(env, indent=2, sort_keys=True) + "\n")
    return paths


def run(args: argparse.Namespace) -> int:
    if args.synthetic_n < 1:
        raise UserError(f"--synthetic-n must be >= 1, got {args.synthetic_n}")
    synthetic = None
    if args.synthetic:
        synthetic = (args.seed, args.synthetic_n, *_grid(args.synthetic_grid))
    genes = impact_genes_frame(
        args.dataset,
        args.family,
        args.model,
        _list(args.candidates, "candidates") if args.candidates else None,
        _list(args.dtypes, "dtypes"),
        False if args.no_cache else args.cache_dir,
        synthetic,
        args.min_nonzero,
        not args.no_progress,
    )
    for p in write_impact(genes, Path(args.out)):
        print(f"wrote {p}")
    return 0
