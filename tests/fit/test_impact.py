"""``ztbench impact``, the bench's impact stage and the report section they feed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ztbench.candidates import load_suite
from ztbench.cli import main
from ztbench.pipeline import BenchOptions, impact_stage
from ztbench.report.impact import impact_section

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
    env = json.loads((out / "env.json").read_text())
    assert env["stages"]["impact"]["datasets"]["human_pbmc_1k_subset"].startswith("f84aa6fe")
    assert env["torch"] and not (out / "impact_env.json").exists()
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
    assert "**`ztnb/published-code`**" in text and "The genes it hurts most" in text
    assert "| gene | sample mean | ones | excess (nats / count) |" in text
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
    note = impact_stage(load_suite(suite_file), tmp_path / "out", BenchOptions(progress=False))
    assert "float32" in note and "float64" not in note
    g = pd.read_csv(tmp_path / "out" / "impact_genes.csv")
    assert set(g["candidate"]) == {"ztpoisson/stable"} and set(g["dtype"]) == {"float32"}
    assert set(g["family"]) == {"ztpoisson"} and (g["excess_nll_per_count"] < 1e-6).all()
    # and the masked-count model trained on the same dataset: package against shipped loss
    t = pd.read_csv(tmp_path / "out" / "training_summary.csv")
    assert set(t["candidate"]) == {"ztpoisson/bento-sc", "ztpoisson/ztbench"}
    assert set(t["dataset"]) == {"human_pbmc_1k_subset"} and t["nll_mean"].notna().all()


def test_impact_section_without_files(tmp_path: Path) -> None:
    assert "No impact_genes.csv" in impact_section(tmp_path)


def test_impact_records_the_digest_of_the_file_it_read(tmp_path: Path) -> None:
    import hashlib

    from ztbench.io.datasets import DATASETS, resolve

    _, shipped, _ = resolve("human_pbmc_1k_subset")
    with np.load(shipped, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["counts_data"] = (arrays["counts_data"] * 2).astype(arrays["counts_data"].dtype)
    copy = tmp_path / "copy" / "human_pbmc_1k_subset.npz"  # named like the shipped one
    copy.parent.mkdir()
    np.savez(copy, **arrays)
    out = tmp_path / "imp"
    rc = main(["impact", str(copy), "--family", "ztpoisson", "--candidates", "ztpoisson/stable",
               "--dtypes", "float32,float32", "--no-progress", "-o", str(out)])  # fmt: skip
    assert rc == 0
    # a dtype named twice is fitted once: one row per gene and candidate variant
    genes = pd.read_csv(out / "impact_genes.csv")
    assert not genes.duplicated(["dataset", "candidate", "dtype", "gene"]).any()
    recorded = json.loads((out / "env.json").read_text())["stages"]["impact"]["datasets"]
    digest = hashlib.sha256(copy.read_bytes()).hexdigest()
    assert recorded == {"human_pbmc_1k_subset": digest}
    assert digest != DATASETS["human_pbmc_1k_subset"]


def test_bench_impact_stage_follows_the_suites_impact_table(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ZTBENCH_CACHE_DIR", str(tmp_path / "cache"))
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(
        'dtypes = ["float64", "float32", "bfloat16"]\n'
        '[candidates]\ninclude = ["ztpoisson/stable", "ztpoisson/ztbench"]\n'
        '[impact]\ncandidates = ["*/ztbench"]\ndtypes = ["bfloat16"]\ntraining = false\n'
        "[families.ztpoisson]\ngrid = { k = [1], lam = [1.0] }\n"
        'dataset = { name = "human_pbmc_1k_subset", n = 10 }\n'
    )
    note = impact_stage(load_suite(suite_file), tmp_path / "out", BenchOptions(progress=False))
    assert "bfloat16" in note and "float32" not in note
    g = pd.read_csv(tmp_path / "out" / "impact_genes.csv")
    assert set(g["candidate"]) == {"ztpoisson/ztbench"} and set(g["dtype"]) == {"bfloat16"}
    assert not (tmp_path / "out" / "training_summary.csv").exists()  # training = false
