"""Recording the reference fits that suites take their real-data points from.

The file format and the reader are in :mod:`ztbench.points.recorded_fits`; this module fits
(certified, float64, :func:`ztbench.fit.run.reference_fit`) and writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from ztbench.fit.run import OPTIMIZER_VERSION, REFERENCE_OBJECTIVE, reference_fit
from ztbench.io.atomic import atomic_write_text
from ztbench.io.datasets import load
from ztbench.io.environment import cpu_capability
from ztbench.points.counts import MIN_NONZERO, from_dataset
from ztbench.points.recorded_fits import FORMAT_VERSION, RECORD_COMMAND, recorded_fit_path


def record_fit(
    dataset: str,
    family: str,
    model: str,
    root: Path | None = None,
    cache_dir: Path | str | bool | None = False,
) -> Path:
    """Fit every gene of a shipped ``dataset`` (certified, float64) and record the result.

    The fit is computed afresh by default (``cache_dir=False``); the file is written
    atomically. Returns its path.
    """
    ds = load(dataset)
    data = from_dataset(ds, model, MIN_NONZERO)
    fits = reference_fit(data, family, cache_dir=cache_dir)
    theta = fits["theta"].to_numpy()
    doc = {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "dataset_sha256": ds.sha256,
        "family": family,
        "model": model,
        "min_nonzero": MIN_NONZERO,
        "provenance": {
            "command": RECORD_COMMAND,
            "objective": REFERENCE_OBJECTIVE.format(family=family),
            "optimizer": OPTIMIZER_VERSION,
            "torch": torch.__version__,
            "cpu_capability": cpu_capability(),
        },
        "genes": {
            "gene_id": [str(g) for g in fits["gene_id"]],
            "mu": [float(v) for v in fits["mu"]],
            "theta": [None if math.isnan(v) else float(v) for v in theta],
            "status": [str(s) for s in fits["status"]],
        },
    }
    path = recorded_fit_path(dataset, family, model, root)
    atomic_write_text(path, _dumps(doc))
    return path


def _dumps(doc: dict[str, Any]) -> str:
    """JSON with one gene column per line (reviewable diffs), floats as shortest repr."""
    head = {k: v for k, v in doc.items() if k != "genes"}
    lines = ["{"]
    lines += [f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}," for k, v in head.items()]
    cols = [f"{json.dumps(c)}: {json.dumps(v)}" for c, v in doc["genes"].items()]
    lines.append('"genes": {\n' + ",\n".join(cols) + "\n}")
    lines.append("}")
    return "\n".join(lines) + "\n"
