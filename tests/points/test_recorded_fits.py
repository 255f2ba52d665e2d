"""Recorded reference fits: the data behind a suite's real-data points, the same on every CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mpmath
import numpy as np
import pytest

from ztbench.cli import main
from ztbench.io.datasets import load
from ztbench.io.errors import UserError
from ztbench.points import recorded_fits as recorded
from ztbench.points.counts import from_dataset
from ztbench.points.datasets import dataset_points
from ztbench.suite import DatasetSource

DATASET = "human_pbmc_1k_subset"


def _truncated_mean(family: str, mu: float, theta: float) -> float:
    """E[k | k > 0] at 50 digits: mu / (1 - P(0)), P(0) = e^-mu or (theta/(theta+mu))^theta."""
    with mpmath.workdps(50):
        m = mpmath.mpf(mu)
        p0 = mpmath.exp(-m) if family == "ztpoisson" else (theta / (theta + m)) ** theta
        return float(m / (1 - p0))


@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_recorded_fits_are_maximum_likelihood_fits(family: str) -> None:
    # With theta fixed, both truncated laws are exponential families in k, so the likelihood
    # equation in mu says: the fitted truncated mean equals the gene's sample mean.
    fits = recorded.load_recorded_fit(DATASET, family, "per-gene")
    data = from_dataset(load(DATASET), "per-gene")
    assert list(fits["gene_id"]) == list(data.genes["gene_id"])
    ok = np.flatnonzero(fits["status"].to_numpy() == "ok")
    assert len(ok) > 0.3 * len(fits)  # the rest sit on the box (mu -> 0, theta -> inf)
    for g in ok:
        tm = _truncated_mean(family, fits["mu"][g], fits["theta"][g])
        assert tm == pytest.approx(data.genes["sample_mean"][g], rel=1e-8), fits.iloc[g]


def test_points_are_the_same_under_every_cpu_capability() -> None:
    src = DatasetSource(DATASET, "ztnb", "per-gene", 300, 20240611)
    here = dataset_points(src).to_numpy()
    code = (
        "import sys; from ztbench.points.datasets import dataset_points; "
        "from ztbench.suite import DatasetSource; "
        f"sys.stdout.buffer.write(dataset_points(DatasetSource({DATASET!r}, 'ztnb', "
        "'per-gene', 300, 20240611)).to_numpy().tobytes())"
    )
    env = {"ATEN_CPU_CAPABILITY": "default", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert out.stdout == here.tobytes()


def _copy(tmp_path: Path, family: str = "ztnb") -> dict:
    doc = json.loads(recorded.recorded_fit_path(DATASET, family, "per-gene").read_text())
    return doc


def _write(tmp_path: Path, doc: dict, family: str = "ztnb") -> Path:
    path = recorded.recorded_fit_path(DATASET, family, "per-gene", tmp_path)
    path.write_text(json.dumps(doc))
    return path


def test_missing_record_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no recorded reference fit .* `ztbench dataset-fits"):
        recorded.load_recorded_fit(DATASET, "ztnb", "size-factor", tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(dataset_sha256="0" * 64), "made from other data"),
        (lambda d: d.update(family="ztpoisson"), "is for"),
        (lambda d: d.update(format=9), "is for"),
        (lambda d: d["genes"].pop("mu"), "malformed"),
        (lambda d: d["genes"].update(mu=["x"] * len(d["genes"]["mu"])), "malformed"),
    ],
)
def test_damaged_record_is_one_line_error(tmp_path: Path, change, message: str) -> None:
    doc = _copy(tmp_path)
    change(doc)
    _write(tmp_path, doc)
    with pytest.raises(UserError, match=message):
        recorded.load_recorded_fit(DATASET, "ztnb", "per-gene", tmp_path)


def test_points_come_from_the_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _copy(tmp_path)
    g = doc["genes"]["status"].index("ok")
    doc["genes"]["mu"][g] *= 2.0
    _write(tmp_path, doc)
    monkeypatch.setattr(recorded, "FITS_DIR", tmp_path)
    monkeypatch.setattr("ztbench.points.datasets.load_recorded_fit",
                        lambda *a: recorded.load_recorded_fit(*a, root=tmp_path))  # fmt: skip
    src = DatasetSource(DATASET, "ztnb", "per-gene", 10**6, 1)
    dataset_points.cache_clear()
    try:
        pts = dataset_points(src)
    finally:
        dataset_points.cache_clear()
    theta = doc["genes"]["theta"][g]
    mine = pts[pts["theta"] == theta]
    assert len(mine) and (mine["mu"] == doc["genes"]["mu"][g]).all()


@pytest.mark.slow
def test_dataset_fits_command_records_what_suites_read(tmp_path: Path, capsys) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text(
        'dtypes = ["float64"]\n[candidates]\ninclude = ["ztpoisson/stable"]\n'
        f'[families.ztpoisson]\ndataset = {{ name = "{DATASET}", n = 50 }}\n'
    )
    assert main(["dataset-fits", str(suite), "-o", str(tmp_path / "fits")]) == 0
    assert "wrote" in capsys.readouterr().out
    mine = recorded.load_recorded_fit(DATASET, "ztpoisson", "per-gene", tmp_path / "fits")
    doc = json.loads((tmp_path / "fits" / f"{DATASET}-ztpoisson-per-gene.json").read_text())
    assert doc["provenance"]["optimizer"] and doc["provenance"]["torch"]
    shipped = recorded.load_recorded_fit(DATASET, "ztpoisson", "per-gene")
    assert list(mine["gene_id"]) == list(shipped["gene_id"])
    # another CPU may end a fit on another float, never on another optimum
    np.testing.assert_allclose(mine["mu"], shipped["mu"], rtol=1e-6)
