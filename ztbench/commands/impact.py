"""``ztbench impact``: refit every gene with each candidate's loss; what it does to the fit.

Writes DIR/impact_genes.csv (one row per dataset, model, family, candidate, dtype and
gene) and DIR/impact_summary.csv (one row per dataset, model, family, candidate and
dtype); see :mod:`ztbench.fit.impact` for the columns. ``--synthetic`` adds the grid of
exact ZTNB samples (dataset "synthetic", with the truth in mu_true and theta_true).

``--model masked`` trains instead: a masked-count network on the dataset, with each
candidate's loss (and ``--candidate``, the user's own), through the published and the
free head, from several seeds (:mod:`ztbench.fit.masked`); it writes
DIR/training_impact.csv (one row per family, head, candidate and seed: held-out exact
NLL per hidden count) and DIR/training_summary.csv (mean, seed spread and the paired
difference with the shipped loss).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from ztbench.candidates import Candidate, list_candidates, select_candidates
from ztbench.candidates.external import from_cli
from ztbench.commands._options import (
    add_budget_option,
    add_cache_options,
    add_progress_option,
    add_scheduler_option,
)
from ztbench.commands.fit import add_gene_arguments
from ztbench.core.families import FAMILIES
from ztbench.fit.impact import (
    SYNTHETIC_GRID,
    SYNTHETIC_N,
    SYNTHETIC_SEED,
    impact_genes_frame,
    write_impact,
)
from ztbench.fit.masked import (
    DEFAULT_CANDIDATES,
    DEFAULTS,
    FULL,
    HEADS,
    MODEL,
    OUTPUT_FILES,
    MaskedSettings,
    training_impact,
    write_training,
)
from ztbench.io import budget
from ztbench.io.atomic import check_output_file
from ztbench.io.datasets import load
from ztbench.io.errors import (
    UserError,
    grid_shape,
    nonnegative_int,
    positive_float,
    positive_int,
    split_list,
)

DEFAULT_DTYPES = "float32,bfloat16"
# --model masked's options (None: the default settings) -> the MaskedSettings field
MASKED_FLAGS: dict[str, str] = {
    "--steps": "steps", "--genes": "genes", "--seeds": "seeds", "--heads": "heads",
    "--batch": "batch", "--hidden": "hidden", "--train-cells": "train_cells",
    "--heldout-cells": "heldout_cells", "--lr": "lr", "--mask-fraction": "mask_fraction",
    "--device": "device", "--full": "", "--candidate": "", "--form": "", "--sign": "",
    "--parameters": "",
}  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_gene_arguments(
        p,
        dataset_optional=True,
        extra_models={MODEL: "train a masked-count network with each loss (see --steps)"},
        family_help="; --model masked: a comma-separated list (default: both, or the "
        "families of --candidates)",
    )
    add_scheduler_option(p)
    p.add_argument(
        "--candidates",
        default=None,
        metavar="LIST",
        help="comma-separated ids or globs (default: every torch candidate of the "
        "family, plus the published head variant; --model masked: "
        + "; ".join(", ".join(c) for c in DEFAULT_CANDIDATES.values())
        + ", and the shipped loss of the family always)",
    )
    p.add_argument(
        "--dtypes",
        default=None,
        metavar="LIST",
        help=f"comma-separated dtypes (default {DEFAULT_DTYPES}; --model masked: the one "
        f"dtype trained in, default {DEFAULTS.dtype})",
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
    add_masked_arguments(p)


def add_masked_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``--model masked`` (default: :data:`ztbench.fit.masked.DEFAULTS`)."""
    d = DEFAULTS
    g = p.add_argument_group("--model masked (training impact)")
    g.add_argument("--full", action="store_true",
                   help=f"start from the full setting ({FULL.genes} genes, "
                   f"{FULL.hidden}-wide, {FULL.steps} steps, lr {FULL.lr:g}, every cell not "
                   f"held out for training; minutes) instead of the quick default")  # fmt: skip
    g.add_argument("--steps", type=nonnegative_int, metavar="N",
                   help=f"optimiser steps per run (default {d.steps}; 1000 in the full setting)")
    g.add_argument("--genes", type=nonnegative_int, metavar="G",
                   help=f"the G most expressed genes (default {d.genes})")
    g.add_argument("--seeds", type=nonnegative_int, metavar="N",
                   help=f"runs per candidate and head, seeds 0..N-1 (default {len(d.seeds)})")
    g.add_argument("--heads", metavar="LIST",
                   help=f"comma-separated heads: {', '.join(HEADS)} (default both)")
    g.add_argument("--batch", type=nonnegative_int, metavar="N",
                   help=f"cells per step (default {d.batch})")
    g.add_argument("--hidden", type=nonnegative_int, metavar="N",
                   help=f"width of the two hidden layers (default {d.hidden})")
    g.add_argument("--train-cells", type=nonnegative_int, metavar="N",
                   help=f"at most N training cells, 0 for every cell not held out "
                   f"(default {d.train_cells})")
    g.add_argument("--heldout-cells", type=nonnegative_int, metavar="N",
                   help=f"held-out cells (default {d.heldout_cells})")
    g.add_argument("--lr", type=positive_float, metavar="X",
                   help=f"Adam's learning rate (default {d.lr:g})")
    g.add_argument("--mask-fraction", type=positive_float, metavar="X",
                   help=f"fraction of each cell's nonzero counts hidden (default "
                   f"{d.mask_fraction:g})")
    g.add_argument("--device", metavar="DEV", help=f"torch device (default {d.device})")
    g.add_argument("--candidate", metavar="TARGET",
                   help="also train your own loss (module:function or path/to/file.py:function, "
                   "imported and run by ztbench), as in `ztbench accuracy --candidate`; "
                   "needs one --family; see --form, --sign, --parameters")
    g.add_argument("--form", default=None, choices=("loss", "full"),
                   help="what the --candidate target computes: loss (without lgamma(k+1), "
                   "default) or full")
    g.add_argument("--sign", default=None, choices=("nll", "log_prob"),
                   help="the --candidate target returns nll (default) or log_prob")
    g.add_argument("--parameters", default=None, metavar="SPEC",
                   help="the --candidate target's parameterisation, e.g. "
                   "'mu=natural,theta=log' (default natural), or torch-nb")  # fmt: skip


def _grid(text: str) -> tuple[int, int]:
    try:
        return grid_shape(text)
    except ValueError as exc:
        raise UserError(f"--synthetic-grid: {exc}") from None


def run(args: argparse.Namespace) -> int:
    if args.model == MODEL:
        return run_masked(args)
    given = [f for f, field in MASKED_FLAGS.items() if _given(args, f)]
    if given:
        raise UserError(f"{given[0]} applies to --model {MODEL} only")
    args.family = args.family or "ztnb"
    args.dtypes = args.dtypes or DEFAULT_DTYPES
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


# ------------------------------------------------------------------------ --model masked


def _given(args: argparse.Namespace, flag: str) -> bool:
    """Whether ``flag`` was given (its value is neither None nor a switch left off)."""
    value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
    return value is not None and value is not False  # 0 is given (and refused)


def masked_settings(args: argparse.Namespace) -> MaskedSettings:
    """The settings of ``--model masked`` from the flags (defaults: :data:`DEFAULTS`);
    UserError naming the flag of a bad value."""
    changes: dict[str, object] = {}
    for flag, field in MASKED_FLAGS.items():
        if field and _given(args, flag):
            changes[field] = getattr(args, field)
    if changes.get("train_cells") == 0:
        changes["train_cells"] = None  # every cell not held out
    if "seeds" in changes:
        changes["seeds"] = tuple(range(int(changes["seeds"])))  # type: ignore[call-overload]
    if "heads" in changes:
        changes["heads"] = tuple(split_list(str(changes["heads"]), "--heads") or ())
    dtypes = split_list(args.dtypes, "--dtypes")
    if dtypes:
        if len(dtypes) != 1:
            raise UserError(f"--dtypes: --model {MODEL} trains in one dtype, got {args.dtypes!r}")
        changes["dtype"] = dtypes[0]
    settings = dataclasses.replace(FULL if args.full else DEFAULTS, **changes)
    flags = {field: flag for flag, field in MASKED_FLAGS.items() if field}
    flags["dtype"] = "--dtypes"
    settings.check(lambda field: flags.get(field, field))
    return settings


def masked_candidates(args: argparse.Namespace, settings: MaskedSettings
                      ) -> dict[str, list[Candidate]]:  # fmt: skip
    """family -> the candidates to train (the shipped loss is added by the library)."""
    families = split_list(args.family, "--family")
    for f in families or ():
        if f not in FAMILIES:
            raise UserError(f"--family: unknown family {f!r} (known: {', '.join(FAMILIES)})")
    patterns = split_list(args.candidates, "--candidates")
    if patterns:
        try:
            chosen = select_candidates(patterns)
        except ValueError as exc:
            raise UserError(f"--candidates: {exc}") from None
        if families is None:
            families = [f for f in FAMILIES if any(c.family == f for c in chosen)]
        out = {f: [c for c in chosen if c.family == f] for f in families}
    else:
        families = families or list(FAMILIES)
        known = {c.id: c for c in list_candidates()}
        out = {f: [known[c] for c in DEFAULT_CANDIDATES[f] if c in known] for f in families}
    for cands in out.values():
        for c in cands:
            if c.kind != "torch":
                raise UserError(f"--candidates: {c.id} has no gradients (a {c.kind} "
                                "candidate): it cannot be trained")  # fmt: skip
    if args.candidate:
        if len(out) != 1:
            raise UserError(f"--candidate: give one --family (it trains {', '.join(out)})")
        (family,) = out
        how = argparse.Namespace(form=args.form or "loss", sign=args.sign or "nll",
                                 kind="torch", parameters=args.parameters)  # fmt: skip
        out[family].append(from_cli(args.candidate, family, how, (settings.dtype,)))
    return out


def run_masked(args: argparse.Namespace) -> int:
    """``--model masked``: train, summarise, write, print the summary."""
    if args.dataset is None:
        raise UserError(f"--model {MODEL}: give a DATASET")
    if args.synthetic:
        raise UserError(f"--synthetic applies to the per-gene models, not --model {MODEL}")
    out = Path(args.out)
    for name in OUTPUT_FILES:
        check_output_file(out / name)  # before the training, which takes seconds to minutes
    settings = masked_settings(args)
    per_family = masked_candidates(args, settings)
    data = load(args.dataset)
    progress = not args.no_progress
    frames = [
        training_impact(data.counts, f, cands, settings, dataset=data.name, progress=progress)
        for f, cands in per_family.items()
    ]
    runs = pd.concat([f[0] for f in frames], ignore_index=True)
    summary = pd.concat([f[1] for f in frames], ignore_index=True)
    for p in write_training(runs, summary, out, settings, {data.name: data.sha256}):
        print(f"wrote {p}")
    for r in summary.itertuples(index=False):
        flag = "  > 3 sd" if r.diff_exceeds_3sd else ""
        print(f"{r.family:9s} {r.head:9s} {r.candidate:28s} held-out NLL {r.nll_mean:.4f} "
              f"+- {r.nll_std:.4f}  vs {r.reference}: {r.diff_mean:+.4f} +- "
              f"{r.diff_std:.4f}{flag}")  # fmt: skip
    return 0
