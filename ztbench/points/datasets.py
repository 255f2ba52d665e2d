"""Realistic points for accuracy suites: where a fit puts the losses on real counts.

:func:`dataset_points` returns (k, mu_cg, theta_g) (ZTP: (k, lam_cg)) for a uniform,
seeded subsample of the nonzero cells of the genes whose certified reference fit
(:func:`ztbench.fit.run.reference_fit`) is interior (status ok). Genes on the boundary of
the box (mu -> 0, theta -> 0 or infinity) are left out: their parameters are where the
optimiser stopped, not values a model would hold. The reference fit is the recorded one
(:mod:`ztbench.points.recorded_fits`), so the points are the same on every machine.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import pandas as pd

from ztbench.io.datasets import load
from ztbench.io.errors import UserError
from ztbench.points.counts import from_dataset
from ztbench.points.recorded_fits import load_recorded_fit, recorded_fit_path
from ztbench.suite import DatasetSource


def _rng(src: DatasetSource) -> np.random.Generator:
    tag = int.from_bytes(hashlib.sha256(src.name.encode()).digest()[:4], "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([src.seed, tag])))


@lru_cache(maxsize=8)
def dataset_points(src: DatasetSource) -> pd.DataFrame:
    """The points of ``src``: columns of its family, float64, deduplicated and sorted."""
    fits = load_recorded_fit(src.name, src.family, src.model)
    data = from_dataset(load(src.name), src.model)
    if not np.array_equal(fits["gene_id"].to_numpy(), data.genes["gene_id"].to_numpy()):
        where = recorded_fit_path(src.name, src.family, src.model)
        raise UserError(f"recorded fit {where} does not list the genes of {src.name}")
    ok = np.flatnonzero(fits["status"].to_numpy() == "ok")
    if not len(ok):
        raise UserError(f"dataset {src.name}: no gene has an interior reference fit")
    pts, owner = data.points_of(ok)
    m = fits["mu"].to_numpy()[ok][owner]
    mu = data.size[pts] * m
    cells = np.repeat(np.arange(len(pts)), data.weight[pts].astype(np.int64))
    take = np.sort(_rng(src).choice(len(cells), size=min(src.n, len(cells)), replace=False))
    sel = cells[take]
    cols = {"k": data.k[pts][sel]}
    if src.family == "ztnb":
        cols["mu"] = mu[sel]
        cols["theta"] = fits["theta"].to_numpy()[ok][owner][sel]
    else:
        cols["lam"] = mu[sel]
    mat = np.unique(np.column_stack(list(cols.values())), axis=0)
    return pd.DataFrame({c: np.ascontiguousarray(mat[:, i]) for i, c in enumerate(cols)})


def membership(df: pd.DataFrame, src: DatasetSource) -> np.ndarray:
    """True for the rows of ``df`` that are points of ``src`` (exact float64 match)."""
    ref = dataset_points(src)
    cols = list(ref.columns)
    left = np.ascontiguousarray(df[cols].to_numpy(dtype=np.float64))
    right = np.ascontiguousarray(ref.to_numpy(dtype=np.float64))
    row = np.dtype((np.void, left.dtype.itemsize * len(cols)))
    return np.isin(left.view(row).ravel(), right.view(row).ravel())
