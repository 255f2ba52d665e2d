"""``ztbench impact``, the bench's impact stage and the report section they feed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ztbench.cli import main
from ztbench.commands.bench import run_impact_stage
from ztbench.report.impact import impact_section
from ztbench.suite import load_suite

REQUIRED = ["dataset", "model", "family", "candidate", "dtype", "gene", "n_counts", "mu_ref",
            "theta_ref", "mu", "theta", "excess_nll_per_count", "status"]  # fmt: skip


@pytest.mark.slow
def test_impact_cli_real_and_synthetic(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ZTBENCH_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "imp"
    rc = main(["impact", "human_pbmc_1k_subset", "--candidates", "ztnb/published-code,ztnb/ztbench",
               "--dtypes", "float32", "--synthetic", "--synthetic-grid", "2x2",
               "--synthetic-n", "300", "--no-progress", "-o", str(out)])  # fmt: skip
    assert rc == 0
    g = pd.read_csv(out / "impact_genes.csv")
    s = pd.read_csv(out / "impact_summary.csv")
    env = json.loads((out / "impact_env.json").read_text())
    assert env["impact"]["datasets"]["human_pbmc_1k_subset"].startswith("f84aa6fe")
    assert env["torch"]
    assert set(REQUIRED) <= set(g.columns)
    assert set(g["status"]) <= {"ok", "boundary", "failed"}
    head_ids = {f"{c} [mu = exp(y) + 1]" for c in ("ztnb/published-code", "ztnb/ztbench")}
    assert set(g["candidate"]) == {"ztnb/published-code", "ztnb/ztbench"} | head_ids
    real = g[g["dataset"] == "human_pbmc_1k_subset"]
    assert real["gene"].nunique() == 118  # genes with >= 20 nonzero cells
    syn = g[g["dataset"] == "synthetic"]
    assert len(syn) == 4 * 4 and np.isfinite(syn["mu_true"]).all()
    # the shipped loss in float32 lands on the exact optimum (per count, well under 1e-6)
    ship = real[real["candidate"] == "ztnb/ztbench"]
    assert (ship["excess_nll_per_count"] < 1e-6).all()
    # the head mu = e^y + 1 cannot fit genes whose nonzero counts are mostly 1: their
    # untruncated mean is far below 1 (median sample mean of the nonzero counts ~1.16)
    head = real[real["candidate"] == "ztnb/ztbench [mu = exp(y) + 1]"]
    assert head["excess_nll_per_count"].median() > 1e-2
    assert (head["mu"] > 1).all()
    row = s[(s["dataset"] == "human_pbmc_1k_subset") & (s["candidate"] == "ztnb/ztbench")]
    assert row["genes"].item() == 118 and row["frac_excess_gt_0.0001"].item() == 0
    for col in ("frac_excess_gt_0.001", "frac_excess_gt_0.01", "median_excess", "max_excess",
                "frac_mu_err_gt_1pct", "frac_theta_err_gt_10pct", "median_tmean_err"):  # fmt: skip
        assert col in s.columns
    text = impact_section(out)
    assert "### human_pbmc_1k_subset · per-gene · ztnb" in text
    assert "### Synthetic truth" in text and "impact-synthetic-excess-float32.png" in text
    assert "**`ztnb/published-code`**" in text and "% ones" in text
    assert (out / "impact-synthetic-excess-float32.png").is_file()


def test_bench_impact_stage(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ZTBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("ztbench.commands.impact.SYNTHETIC_GRID", "2x1")
    monkeypatch.setattr("ztbench.commands.impact.SYNTHETIC_N", 200)
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(
        'dtypes = ["float64", "float32"]\n[candidates]\ninclude = ["ztpoisson/stable"]\n'
        "[families.ztpoisson]\ngrid = { k = [1], lam = [1.0] }\n"
        'dataset = { name = "human_pbmc_1k_subset", n = 10 }\n'
    )
    note = run_impact_stage(load_suite(suite_file), tmp_path / "out", None, False)
    assert "float32" in note and "float64" not in note
    g = pd.read_csv(tmp_path / "out" / "impact_genes.csv")
    assert set(g["candidate"]) == {"ztpoisson/stable"} and set(g["dtype"]) == {"float32"}
    assert set(g["family"]) == {"ztpoisson"} and (g["excess_nll_per_count"] < 1e-6).all()


def test_impact_section_without_files(tmp_path: Path) -> None:
    assert "No impact_genes.csv" in impact_section(tmp_path)
