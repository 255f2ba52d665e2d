"""What each formulation does to a fit: per-gene rows and summaries.

For each fit variant (a candidate, and a head: ``exp`` or the published ``exp+1``) and
dtype, every gene is refitted (:func:`ztbench.fit.run.candidate_fit`) and compared with
the reference fit under the unconstrained ``exp`` head:

- ``excess_nll_per_count`` = exact objective at the variant's optimum minus at the
  reference optimum, nats per count (certified references at both; >= 0 up to the
  reference's own stationarity);
- the relative errors of mu and theta, meaningful only where the reference optimum is
  interior (reference status ok);
- the truncated mean E[k | k > 0] the fit implies, against the gene's sample mean (the
  exact per-gene MLE matches it: its score equation in mu says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ztbench.candidates import Candidate, get_candidate, list_candidates, select_candidates
from ztbench.core.schema import DTYPE_NAMES
from ztbench.fit import run as fit_run
from ztbench.fit.run import candidate_fit, reference_fit
from ztbench.fit.synthetic import grid, synthetic_data
from ztbench.io.atomic import atomic_paths
from ztbench.io.datasets import load
from ztbench.io.environment import environment_info, stage_env_text
from ztbench.io.errors import UserError
from ztbench.io.pointsio import csv_frame
from ztbench.points.counts import MIN_NONZERO, FitData, check_choices, from_dataset
from ztbench.suite import Impact

EXCESS_LEVELS: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
REL_LEVELS: tuple[float, ...] = (0.01, 0.1)
# The published system's own head (mu = e^y + 1 > 1), fitted with its own loss and, to
# separate the constraint from the numerics, with the shipped loss.
HEAD_VARIANTS: dict[str, tuple[str, ...]] = {"ztnb": ("ztnb/published-code", "ztnb/ztbench")}
KEYS = ["dataset", "model", "family", "candidate", "dtype"]


@dataclass(frozen=True)
class Variant:
    """A candidate fitted through a head; ``label`` names it in tables."""

    candidate: Candidate
    head: str = "exp"

    @property
    def label(self) -> str:
        if self.head == "exp+1":
            return f"{self.candidate.id} [mu = exp(y) + 1]"
        return self.candidate.id


def default_variants(family: str, candidates: Sequence[Candidate]) -> list[Variant]:
    """Each torch candidate of ``family`` under the exp head, plus the head variants of
    :data:`HEAD_VARIANTS` whose candidate is among ``candidates``."""
    chosen = [c for c in candidates if c.family == family and c.kind == "torch"]
    out = [Variant(c) for c in chosen]
    ids = {c.id for c in chosen}
    out += [
        Variant(get_candidate(cid), "exp+1") for cid in HEAD_VARIANTS.get(family, ()) if cid in ids
    ]
    return out


def is_published(label: str) -> bool:
    """True for the fit variants that reproduce a published rule or head: the published
    head, a candidate named ``published*``, the published package itself, or a threshold
    family whose default threshold is a published one (e.g. theta + mu > 15)."""
    if "exp(y) + 1" in label:
        return True
    cid = label.split(" [", 1)[0]
    if cid.split("/", 1)[-1].startswith("published"):
        return True
    try:
        cand = get_candidate(cid)
    except ValueError:
        return False
    if "the published package itself" in cand.provenance:
        return True
    return cand.threshold is not None and cand.threshold in cand.published_thresholds


def impact_genes(
    data: FitData,
    family: str,
    variants: Sequence[Variant],
    dtypes: Sequence[str],
    cache_dir: Path | str | bool | None = None,
    progress: bool = False,
    truth: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per (variant, dtype, gene); see the module docstring for the columns."""
    ref = reference_fit(data, family, cache_dir=cache_dir)
    base = pd.DataFrame(
        {
            "dataset": data.name,
            "model": data.model,
            "family": family,
            "gene": ref["gene"],
            "gene_id": ref["gene_id"],
            "n_counts": ref["n_counts"],
            "sample_mean": ref["sample_mean"],
            "frac_ones": ref["frac_ones"],
            "mu_ref": ref["mu"],
            "theta_ref": ref["theta"],
            "ref_status": ref["status"],
            "ref_reason": ref["reason"],
        }
    )
    if truth is not None:
        base["mu_true"] = truth[:, 0]
        base["theta_true"] = truth[:, 1]
    jobs = [(v, d) for v in variants for d in dtypes]
    frames = []
    for v, dtype in tqdm(jobs, desc=f"impact {data.name}", disable=not progress, leave=False):
        fit = candidate_fit(data, family, v.candidate, dtype, v.head, cache_dir)
        df = base.copy()
        df.insert(3, "candidate", v.label)
        df.insert(4, "dtype", dtype)
        df.insert(5, "published", is_published(v.label))
        df["mu"] = fit["mu"]
        df["theta"] = fit["theta"]
        df["excess_nll_per_count"] = fit["exact_nll_per_count"] - ref["exact_nll_per_count"]
        df["truncated_mean"] = fit["truncated_mean"]
        df["status"] = fit["status"]
        df["reason"] = fit["reason"]
        df["iterations"] = fit["iterations"]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _frac(mask: np.ndarray, n: int) -> float:
    return float(mask.sum() / n) if n else float("nan")


def summarize(genes: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, family, candidate, dtype).

    Columns: published (a published rule or head); genes; ok, boundary, failed (counts);
    frac_excess_gt_<level> (a failed fit counts as above every level); median_excess,
    max_excess (fits not failed); interior_genes (reference ok) and, over them,
    frac_mu_err_gt_<p>pct and frac_theta_err_gt_<p>pct (relative error; a failed fit counts
    as above); median_tmean_err, max_tmean_err: |E[k | k > 0] / sample mean - 1| over fits
    not failed.
    """
    rows = []
    for key, g in genes.groupby(KEYS, sort=False):
        n = len(g)
        failed = (g["status"] == "failed").to_numpy()
        ex = g["excess_nll_per_count"].to_numpy(dtype=np.float64)
        ex_f = np.where(failed | ~np.isfinite(ex), np.inf, ex)
        row = dict(zip(KEYS, key, strict=True))
        row["published"] = bool(g["published"].iloc[0])
        row.update(
            genes=n,
            ok=int((g["status"] == "ok").sum()),
            boundary=int((g["status"] == "boundary").sum()),
            failed=int(failed.sum()),
        )
        for lv in EXCESS_LEVELS:
            row[f"frac_excess_gt_{lv:g}"] = _frac(ex_f > lv, n)
        fin = ex[~failed & np.isfinite(ex)]
        row["median_excess"] = float(np.median(fin)) if len(fin) else float("nan")
        row["max_excess"] = float(np.max(fin)) if len(fin) else float("nan")
        interior = (g["ref_status"] == "ok").to_numpy()
        row["interior_genes"] = int(interior.sum())
        for p in ("mu", "theta"):
            ref = g[f"{p}_ref"].to_numpy(dtype=np.float64)
            if np.isnan(ref).all():  # ztpoisson has no theta
                row.update({f"frac_{p}_err_gt_{round(lv * 100)}pct": np.nan for lv in REL_LEVELS})
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                err = np.abs(g[p].to_numpy(dtype=np.float64) / ref - 1.0)
            err = np.where(failed | ~np.isfinite(err), np.inf, err)[interior]
            for lv in REL_LEVELS:
                row[f"frac_{p}_err_gt_{round(lv * 100)}pct"] = _frac(err > lv, len(err))
        with np.errstate(divide="ignore", invalid="ignore"):
            te = np.abs(g["truncated_mean"] / g["sample_mean"] - 1.0).to_numpy()[~failed]
        row["median_tmean_err"] = float(np.median(te)) if len(te) else float("nan")
        row["max_tmean_err"] = float(np.max(te)) if len(te) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the impact stage

# The synthetic-truth grid: nonzero counts per cell, mu x theta points, seed
SYNTHETIC_N = 2000
SYNTHETIC_GRID = "{}x{}".format(*Impact().synthetic)  # the suites' default grid
SYNTHETIC_SEED = 20240611


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
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The per-gene impact rows of ``dataset`` (if given) and of the synthetic grid (if
    ``synthetic`` = (seed, n, n_mu, n_theta) is given), and the SHA-256 of the file each
    dataset was loaded from (by dataset name); UserError on bad arguments."""

    check_choices(family, model, min_nonzero)
    for d in dtypes:
        if d not in DTYPE_NAMES:
            raise UserError(f"--dtypes: unknown dtype {d!r} (known: {', '.join(DTYPE_NAMES)})")
    try:
        chosen = select_candidates(candidates) if candidates else list_candidates()
    except ValueError as exc:
        raise UserError(f"--candidates: {exc}") from None
    frames = []
    digests: dict[str, str] = {}
    if dataset is not None:
        variants = default_variants(family, chosen)
        if not variants:
            raise UserError(f"--candidates: no torch candidate of family {family}")
        loaded = load(dataset)
        digests[loaded.name] = loaded.sha256
        data = from_dataset(loaded, model, min_nonzero)
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
    return pd.concat(frames, ignore_index=True), digests


def write_impact(
    genes: pd.DataFrame, out: Path, digests: dict[str, str]
) -> tuple[Path, Path]:
    """Write impact_genes.csv, impact_summary.csv and env.json's impact section (the
    datasets' sha256, the optimiser's settings) into ``out``, as one set (atomically);
    return the CSV paths."""
    paths = (out / "impact_genes.csv", out / "impact_summary.csv")
    section = {
        # the digest of the file each dataset was read from (None for the synthetic grid)
        "datasets": {d: digests.get(d) for d in dict.fromkeys(genes["dataset"])},
        "optimizer": fit_run.OPTIMIZER_VERSION,
        "max_iter": fit_run.MAX_ITER,
        "candidate_gtol": fit_run.CANDIDATE_GTOL,
        "reference_gtol": fit_run.REFERENCE_GTOL,
        "stationary_rtol": fit_run.STATIONARY_RTOL,
        "box": {k: list(v) for k, v in fit_run.BOX.items()},
        "theta0": fit_run.THETA0,
    }
    env_text = stage_env_text(out, "impact", environment_info(), section)
    with atomic_paths(*paths, out / "env.json") as (genes_tmp, summary_tmp, env_tmp):
        csv_frame(genes).to_csv(genes_tmp, index=False)
        csv_frame(summarize(genes)).to_csv(summary_tmp, index=False)
        env_tmp.write_text(env_text, encoding="utf-8")
    return paths
