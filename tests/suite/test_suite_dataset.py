"""The suite's dataset point source and its ``realistic`` region."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ztbench.candidates import load_suite
from ztbench.io.datasets import load
from ztbench.io.errors import UserError
from ztbench.points.counts import from_dataset
from ztbench.points.datasets import dataset_points
from ztbench.points.grids import build_points, region_mask
from ztbench.points.recorded_fits import load_recorded_fit

SUITE = """\
seed = 3
dtypes = ["float32"]
[candidates]
include = ["ztnb/stable"]
[families.ztnb]
grid = {{ k = [1, 2], mu = [0.1, 1.0], theta = [1.0, 10.0] }}
dataset = {{ {dataset} }}
[regions.realistic]
family = "ztnb"
source = "dataset"
"""
GOOD = 'name = "human_pbmc_1k_subset", family = "ztnb", model = "per-gene", n = 200'


def _suite(tmp_path: Path, dataset: str = GOOD, extra: str = ""):
    p = tmp_path / "s.toml"
    p.write_text(SUITE.format(dataset=dataset) + extra)
    return load_suite(p)


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ('name = "nope", n = 5', "families.ztnb.dataset.name: unknown dataset 'nope'"),
        ('name = "mouse_brain_10k", n = 5, family = "ztpoisson"', "dataset.family: must be"),
        ('name = "mouse_brain_10k", n = 5, model = "bulk"', "unknown model 'bulk'"),
        ('name = "mouse_brain_10k"', "dataset.n: missing required key"),
        ('name = "mouse_brain_10k", n = 0', "dataset.n: must be >= 1"),
        ('name = "mouse_brain_10k", n = 5, cells = 3', "dataset.cells: unknown key"),
    ],
)
def test_bad_dataset_source(tmp_path, dataset, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        _suite(tmp_path, dataset)


def test_region_source_needs_a_dataset(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(SUITE.format(dataset=GOOD).replace("dataset = {", "# {") + "")
    with pytest.raises(UserError, match=r"regions.realistic.source: \[families.ztnb\] has no"):
        load_suite(p)


def test_realistic_points_and_region(tmp_path, monkeypatch):
    monkeypatch.setenv("ZTBENCH_CACHE_DIR", str(tmp_path / "cache"))
    suite = _suite(tmp_path)
    pts = build_points(suite, "ztnb")
    mask = region_mask(pts, suite.regions["realistic"])
    src = suite.families["ztnb"].dataset
    # 200 cells drawn; in the per-gene model cells with the same gene and k are one point
    assert mask.sum() == len(dataset_points(src)) and 20 < mask.sum() <= 200
    assert (~mask).sum() == 8  # the grid
    real = pts[mask]
    # every realistic point is an observed count of a gene at its interior recorded fit
    data = from_dataset(load("human_pbmc_1k_subset"), "per-gene")
    fits = load_recorded_fit("human_pbmc_1k_subset", "ztnb", "per-gene")
    ok = fits[fits["status"] == "ok"]
    pairs = set(zip(ok["mu"], ok["theta"], strict=True))
    assert set(zip(real["mu"], real["theta"], strict=True)) <= pairs
    assert set(real["k"]) <= set(data.k)
    assert real["k"].max() <= 36 and (real["k"] >= 1).all()
    assert np.isfinite(real[["mu", "theta"]].to_numpy()).all()
    again = build_points(_suite(tmp_path), "ztnb")  # deterministic
    assert again.equals(pts)
