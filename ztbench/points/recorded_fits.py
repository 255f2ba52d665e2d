"""Recorded reference fits: the per-gene parameters that real-data points come from, as data.

A certified reference fit (:func:`ztbench.fit.run.reference_fit`) is reproducible on one
machine, but its last bits depend on the CPU's vector kernels (``ATEN_CPU_CAPABILITY``):
the optimiser's path differs by an ulp here and there and ends on another float. Points
taken from a fit made on the spot would therefore differ between the machine that recorded
a gate's baseline and the machine that checks it. So the fits behind a suite's real-data
points are recorded once, with their provenance, in ``ztbench/data/fits/`` (package data,
committed), and read from there: the points are then the same on every machine. They change
only through the explicit command ``ztbench dataset-fits SUITE.toml``
(:func:`ztbench.fit.record.record_fit` writes them).

File format (JSON, one file per dataset, family and model, ``<dataset>-<family>-<model>.json``)::

    {"format": 1, "dataset": "...", "dataset_sha256": "...", "family": "ztnb",
     "model": "per-gene", "min_nonzero": 20, "provenance": {...},
     "genes": {"gene_id": [...], "mu": [...], "theta": [...], "status": [...]}}

``mu`` is the mean scale m_g (mu_cg = s_c m_g), ``theta`` is null for ztpoisson; floats are
written with Python's shortest round-trip repr, so they read back bit for bit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ztbench.io.datasets import DATASETS
from ztbench.io.errors import UserError

FORMAT_VERSION = 1
FITS_DIR = Path(__file__).resolve().parent.parent / "data" / "fits"
RECORD_COMMAND = "ztbench dataset-fits SUITE.toml"


def recorded_fit_path(dataset: str, family: str, model: str, root: Path | None = None) -> Path:
    """Where the recorded fit of ``dataset`` under ``family`` and ``model`` lives."""
    return (root or FITS_DIR) / f"{dataset}-{family}-{model}.json"


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)


def load_recorded_fit(
    dataset: str, family: str, model: str, root: Path | None = None
) -> pd.DataFrame:
    """The recorded fit: one row per gene with gene_id, mu, theta (NaN for ztpoisson), status.

    UserError (one line) when no fit is recorded for this dataset, family and model, when
    the file is unreadable or malformed, or when it was recorded from other data than the
    shipped dataset (its SHA-256 differs).
    """
    path = recorded_fit_path(dataset, family, model, root)
    if not path.is_file():
        raise UserError(
            f"no recorded reference fit for dataset {dataset!r} ({family}, {model}) at "
            f"{path}: record it with `{RECORD_COMMAND}`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        genes = data["genes"]
        df = pd.DataFrame(
            {
                "gene_id": [str(g) for g in genes["gene_id"]],
                "mu": np.array([_float(v) for v in genes["mu"]], dtype=np.float64),
                "theta": np.array([_float(v) for v in genes["theta"]], dtype=np.float64),
                "status": [str(s) for s in genes["status"]],
            }
        )
        meta = (data["format"], data["dataset"], data["family"], data["model"])
        sha = data["dataset_sha256"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"recorded fit {path} is malformed: {exc}") from None
    if meta != (FORMAT_VERSION, dataset, family, model):
        raise UserError(
            f"recorded fit {path} is for {meta[1:]!r} format {meta[0]!r}, "
            f"not {(dataset, family, model)!r} format {FORMAT_VERSION}"
        )
    if sha != DATASETS.get(dataset):
        raise UserError(
            f"recorded fit {path} was made from other data than the shipped {dataset!r} "
            f"(sha256 {sha}): record it again with `{RECORD_COMMAND}`"
        )
    return df
