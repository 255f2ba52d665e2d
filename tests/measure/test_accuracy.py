"""The accuracy runner on tiny suites, against hand-derived errors."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ztbench.candidates import base as registry
from ztbench.candidates import load_suite
from ztbench.candidates.base import Candidate
from ztbench.cli import main
from ztbench.core.schema import SUMMARY_COLUMNS, THRESHOLD_COLUMNS
from ztbench.measure.accuracy import run_accuracy
from ztbench.reference import compute_references


def _suite(tmp_path, body: str, name: str = "tiny"):
    path = tmp_path / f"{name}.toml"
    path.write_text(body)
    return load_suite(path)


def _no_truncation(k, lam, threshold=None):
    """Planted bug: the ZTP loss without its truncation term log(expm1(lam))."""
    return -k * torch.log(lam)


@pytest.fixture
def planted(monkeypatch):
    cand = Candidate(
        id="ztpoisson/planted-no-truncation", family="ztpoisson", form="loss",
        description="planted bug", provenance="test", kind="torch",
        dtypes=("float64", "float32"), fn=_no_truncation,
    )  # fmt: skip
    monkeypatch.setitem(registry._REGISTRY, cand.id, cand)
    return cand


def test_planted_wrong_candidate_shows_the_dropped_term(tmp_path, planted):
    suite = _suite(
        tmp_path,
        """
dtypes = ["float64"]
[candidates]
include = ["ztpoisson/planted-no-truncation", "ztpoisson/stable"]
[families.ztpoisson]
edges = [[1, 1.0], [3, 2.0]]
""",
    )
    res = run_accuracy(suite, tmp_path / "out", cache_dir=False, progress=False)
    s = res.summary
    row = s[(s.candidate == planted.id) & (s.quantity == "value") & (s.region == "all")].iloc[0]
    # the error at (k, lam) is exactly the dropped log(expm1(lam)); worst is lam = 2
    assert row["max_abs_err"] == pytest.approx(math.log(math.expm1(2.0)), rel=1e-15)
    assert (row["worst_k"], row["worst_lam"]) == (3.0, 2.0)
    assert row["max_ulp"] > 1e15
    good = s[(s.candidate == "ztpoisson/stable") & (s.quantity == "value")].iloc[0]
    assert good["max_ulp"] < 16  # the runner blames the planted bug, not every candidate
    assert list(s.columns[: len(SUMMARY_COLUMNS)]) == list(SUMMARY_COLUMNS)
    assert pd.isna(row["worst_mu"]) and pd.isna(row["worst_theta"])
    # the per-point file holds the same error at each point
    pts = pd.read_parquet(tmp_path / "out" / "points.parquet")
    p = pts[(pts.candidate == planted.id) & (pts.quantity == "value")].sort_values("lam")
    np.testing.assert_allclose(p["abs_err"], np.log(np.expm1(p["lam"])), rtol=1e-15)


def test_published_code_error_at_mu1_theta100(tmp_path):
    suite = _suite(
        tmp_path,
        """
dtypes = ["float64"]
[candidates]
include = ["ztnb/published-code"]
[families.ztnb]
edges = [[1, 1.0, 100.0]]
""",
    )
    s = run_accuracy(suite, None, cache_dir=False, progress=False).summary
    row = s[(s.quantity == "value") & (s.region == "all")].iloc[0]
    w = 100.0 * math.log1p(1.0 / 100.0)
    # the dropped truncation term, plus ~1e-5 from the rule's float32 lgamma
    assert row["max_abs_err"] == pytest.approx(-math.log(-math.expm1(-w)), abs=1e-4)
    assert 0.45 < row["max_abs_err"] < 0.47


def test_naive_ztpoisson_fails_in_float32_past_89(tmp_path):
    suite = _suite(
        tmp_path,
        """
dtypes = ["float32", "float64"]
[candidates]
include = ["ztpoisson/naive"]
[families.ztpoisson]
grid = { k = [1, 5], lam = { min = 50.0, max = 120.0, num = 41 } }
""",
    )
    run_accuracy(suite, tmp_path / "o", cache_dir=False, progress=False)
    pts = pd.read_parquet(tmp_path / "o" / "points.parquet")
    f32 = pts[(pts.dtype == "float32") & (pts.quantity == "value")]
    # exp(lam) overflows float32 exactly when lam > log(float32 max) = 88.72...
    overflow = f32["lam"] > math.log(float(np.finfo(np.float32).max))
    assert overflow.any() and (~overflow).any()
    assert (f32["failure"] == overflow).all()
    assert np.isinf(f32.loc[overflow, "ulp_err"]).all()
    f64 = pts[(pts.dtype == "float64") & (pts.quantity == "value")]
    assert not f64["failure"].any()


def test_reference_is_taken_at_the_rounded_input(tmp_path):
    suite = _suite(
        tmp_path,
        """
dtypes = ["float32"]
[candidates]
include = ["ztnb/stable"]
[families.ztnb]
edges = [[3, 0.1, 0.3], [2, 1.2345678901234567, 98.76543210987654]]
""",
    )
    run_accuracy(suite, tmp_path / "o", cache_dir=False, progress=False)
    pts = pd.read_parquet(tmp_path / "o" / "points.parquet")
    v = pts[pts.quantity == "value"].sort_values("k").reset_index(drop=True)
    mu32 = np.array([1.2345678901234567, 0.1], dtype=np.float32).astype(np.float64)
    np.testing.assert_array_equal(v["mu"], mu32)
    ref = compute_references("ztnb", v[["k", "mu", "theta"]], cache_dir=False)
    np.testing.assert_array_equal(v["reference"], ref["nll_loss"])


def test_out_of_range_absent_device_and_unsupported_rows(tmp_path):
    suite = _suite(
        tmp_path,
        """
dtypes = ["float16", "float64"]
devices = ["cpu", "cuda"]
[candidates]
include = ["ztpoisson/stable", "ztpoisson/scipy"]
[families.ztpoisson]
edges = [[1, 1e-30], [1, 1.0], [2, 1e6]]
""",
    )
    s = run_accuracy(suite, None, cache_dir=False, progress=False).summary
    f16 = s[(s.dtype == "float16") & (s.candidate == "ztpoisson/stable") & (s.device == "cpu")]
    # 1e-30 underflows to 0 and 1e6 overflows to inf in float16: out of range, not errors
    assert (f16["out_of_range"] == 2).all() and (f16.loc[f16.region == "all", "n"] == 1).all()
    if not torch.cuda.is_available():
        cuda = s[s.device == "cuda"]
        assert len(cuda) and cuda["status"].str.startswith("skipped: device cuda").all()
    peer = s[(s.candidate == "ztpoisson/scipy") & (s.device == "cpu")]
    assert (peer.loc[peer.dtype == "float16", "status"].str.startswith("unsupported")).all()
    p64 = peer[(peer.dtype == "float64") & (peer.region == "all")].set_index("quantity")
    assert p64.loc["value", "status"] == "ok" and p64.loc["d_lam", "status"] == "no gradient"


def test_threshold_sweep_marks_best_and_published(tmp_path):
    suite = _suite(
        tmp_path,
        """
dtypes = ["float64"]
[candidates]
include = ["ztpoisson/threshold"]
[thresholds]
"ztpoisson/threshold" = [5.0, 40.0]
[families.ztpoisson]
grid = { k = [1, 3], lam = { min = 1.0, max = 60.0, num = 40 } }
edges = [[1, 5.0]]
""",
    )
    t = run_accuracy(suite, None, cache_dir=False, progress=False).thresholds
    assert list(t.columns[: len(THRESHOLD_COLUMNS)]) == list(THRESHOLD_COLUMNS)
    assert sorted(t["t"]) == [5.0, 10.0, 40.0]  # the published 10 is always measured
    by_t = t.set_index("t")
    assert by_t.loc[10.0, "published"] and not by_t.loc[40.0, "published"]
    # the approximation drops log(1 - e^-lam): largest at lam = t = 5, where it is exact
    assert by_t.loc[5.0, "max_abs_err"] == pytest.approx(-math.log(-math.expm1(-5.0)), rel=1e-9)
    assert by_t.loc[40.0, "best"] and t["best"].sum() == 1


def test_two_runs_give_identical_summary(tmp_path):
    body = """
dtypes = ["float64", "float32"]
[candidates]
include = ["ztnb/*"]
kinds = ["torch"]
[families.ztnb]
[families.ztnb.random]
n = 200
k = { min = 1, max = 1e7 }
mu = { min = 1e-30, max = 1e9 }
theta = { min = 1e-12, max = 1e10 }
[regions.tiny-mu]
family = "ztnb"
mu_max = 1e-6
"""
    suite = _suite(tmp_path, body)
    run_accuracy(suite, tmp_path / "a", cache_dir=tmp_path / "c", progress=False)
    run_accuracy(suite, tmp_path / "b", cache_dir=tmp_path / "c", progress=False)
    a = (tmp_path / "a" / "summary.csv").read_bytes()
    assert a == (tmp_path / "b" / "summary.csv").read_bytes()
    s = pd.read_csv(tmp_path / "a" / "summary.csv")
    assert set(s["region"]) == {"all", "tiny-mu"}


def test_cli_bad_suite_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'dtypes = ["float128"]\n[candidates]\ninclude = ["ztnb/naive"]\n'
        "[families.ztnb]\nedges = [[1, 1.0, 1.0]]\n"
    )
    assert main(["accuracy", str(bad), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dtypes" in err[0] and str(bad) in err[0]
    assert not (tmp_path / "o").exists()


def test_published_domain_first_then_elsewhere(tmp_path):
    """The runner summarises the published domain and its complement; the report's table
    of a published rule gives its errors inside that domain first (nats, ulp of the full
    NLL, gradient relative error), elsewhere second."""
    from ztbench.core.textfmt import fmt
    from ztbench.report.data import load_results
    from ztbench.report.published import published_section

    suite = _suite(
        tmp_path,
        """
dtypes = ["float64"]
[candidates]
include = ["ztpoisson/published"]
[families.ztpoisson]
edges = [[1, 0.5], [3, 0.01], [2, 2.0], [5, 30.0]]
[regions.published-domain]
family = ["ztpoisson", "ztnb"]
mean_min = 1.0
mean_max = 1e7
""",
    )
    run_accuracy(suite, tmp_path / "o", cache_dir=False, progress=False)
    s = pd.read_csv(tmp_path / "o" / "summary.csv")
    v = s[s.quantity == "value"].set_index("region")
    assert v.loc["published-domain", "n"] == 2 and v.loc["outside-published-domain", "n"] == 2
    pts = {"k": np.array([2.0, 5.0]), "lam": np.array([2.0, 30.0])}
    refs = compute_references("ztpoisson", pts, cache_dir=False)
    # inside: lam = 2 keeps the exact term (+1e-8 inside the logs), lam = 30 drops e^-30
    err = abs(-2 * math.log(2 + 1e-8) + math.log(math.expm1(2.0) + 1e-8) - refs["nll_loss"][0])
    assert v.loc["published-domain", "max_abs_err"] == pytest.approx(err, rel=1e-6)
    # in ulps of the full NLL (which the loss form leaves out), not of the loss
    ulp_full = np.spacing(refs["nll"][0])
    assert v.loc["published-domain", "max_ulp_full"] == pytest.approx(err / ulp_full, rel=1e-6)
    section = published_section(load_results(tmp_path / "o"))
    rows = [line for line in section.splitlines() if line.startswith("| `ztpoisson/published`")
            or line.startswith("|  |")]  # fmt: skip
    assert [r.split(" | ")[2] for r in rows] == ["published domain", "elsewhere"]
    assert "max ulp, full NLL" in section and "d_lam max rel err" in section
    assert f" | {fmt(err)} | " in rows[0] and f" | {fmt(err / ulp_full)} | " in rows[0]


def test_harmless_threshold_is_the_smallest_from_which_every_t_is_harmless():
    from ztbench.measure.accuracy import _mark_harmless

    costs = {1.0: 5.0, 2.0: 0.3, 3.0: 0.7, 4.0: 0.2}
    rows = [{"region": "all", "t": t, "n": 10, "rule_max_ulp": c} for t, c in costs.items()]
    rows.append({"region": "published-domain", "t": 1.0, "n": 10, "rule_max_ulp": 2.0})
    _mark_harmless(rows)
    half = [r["t"] for r in rows if r["harmless_half_ulp"]]
    one = [r["t"] for r in rows if r["harmless_one_ulp"]]
    assert half == [4.0] and one == [2.0]  # t = 3 costs 0.7: 0.5 ulp only from 4 on
    assert not any(r["harmless_one_ulp"] for r in rows if r["region"] != "all")  # none


def test_sweep_measures_the_rule_alone(tmp_path):
    """ztpoisson/threshold is the shipped loss with log(e^lam - 1) -> lam from t on: its
    cost beyond the shipped loss is -log(1 - e^-lam) at the smallest switched lam."""
    suite = _suite(
        tmp_path,
        """
dtypes = ["float64", "float32"]
[candidates]
include = ["ztpoisson/threshold"]
[thresholds]
"ztpoisson/threshold" = [3.0, 8.0, 45.0]
[families.ztpoisson]
grid = { k = [1, 3], lam = [0.5, 4.0, 9.0, 20.0, 40.0] }
[regions.published-domain]
family = ["ztpoisson", "ztnb"]
mean_min = 1.0
mean_max = 1e7
""",
    )
    t = run_accuracy(suite, None, cache_dir=False, progress=False).thresholds
    f64 = t[(t.dtype == "float64") & (t.region == "all")].set_index("t")
    for th, lam0 in ((3.0, 4.0), (8.0, 9.0)):
        assert f64.loc[th, "rule_max_nats"] == pytest.approx(-math.log(-math.expm1(-lam0)),
                                                             rel=1e-9)  # fmt: skip
        # points whose value the rule changed: e^-40 is below half an ulp of the NLL
        assert f64.loc[th, "switched"] == 2 * sum(th <= x < 40 for x in (0.5, 4.0, 9.0, 20.0))
    assert f64.loc[45.0, "rule_max_ulp"] == 0 and f64.loc[45.0, "switched"] == 0
    # e^-9 ~ 1.2e-4 nats is millions of float64 ulps; past lam = 45 nothing switches
    assert f64.loc[8.0, "rule_max_ulp"] > 1e6
    assert f64.index.tolist() == [3.0, 8.0, 10.0, 45.0]  # the published 10 is always swept
    assert f64["harmless_half_ulp"].tolist() == [False, False, False, True]
    assert set(t["region"]) == {"all", "published-domain"}
    assert set(t["variable"]) == {"lam"}


@pytest.mark.parametrize(
    "cid", ["ztpoisson/threshold", "ztnb/threshold-sum", "ztnb/threshold-pair", "ztnb/threshold-w"]
)
@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
def test_sweep_values_are_the_candidates_own_at_each_threshold(cid: str, dtype: str) -> None:
    """The sweep builds every t from two evaluations and the rule's mask; each must equal
    the candidate evaluated at that t, bit for bit, on both sides of every switch."""
    from ztbench.candidates import get_candidate
    from ztbench.core.dtypes import round_to
    from ztbench.measure.accuracy import _threshold_evaluator
    from ztbench.measure.evaluate import evaluate

    cand = get_candidate(cid)
    rng = np.random.default_rng(3)
    n = 1500
    cols = {"k": np.floor(np.exp(rng.uniform(0, 5, n))),
            "lam": np.exp(rng.uniform(-3, 5, n)), "mu": np.exp(rng.uniform(-4, 5, n)),
            "theta": np.exp(rng.uniform(-4, 5, n))}  # fmt: skip
    arrays = {c: round_to(cols[c], dtype) for c in cand.columns}
    without = evaluate(cand, arrays, dtype, "cpu", "eager", threshold=np.inf, gradients=False)
    at = _threshold_evaluator(cand, arrays, dtype, "cpu", without)
    switched = 0
    for t in (1.0, 4.0, 10.0, 15.0, 33.0, 100.0):
        direct = evaluate(cand, arrays, dtype, "cpu", "eager", threshold=t, gradients=False)
        np.testing.assert_array_equal(at(t).value, direct.value)
        switched += int((direct.value != without.value).sum())
    assert switched > 50  # the rules do switch at these points


def test_dataset_region_holds_the_dataset_points_in_every_dtype(tmp_path) -> None:
    """A point rounded to float32 or bfloat16 no longer equals the dataset's float64 point,
    yet it is still the dataset's: the `source = "dataset"` region keeps it in every dtype
    and parameterisation."""
    path = tmp_path / "s.toml"
    path.write_text(
        'dtypes = ["float64", "float32", "bfloat16"]\n'
        '[candidates]\ninclude = ["ztnb/ztbench", "ztnb/ztbench-log"]\n'
        "[families.ztnb]\ngrid = { k = [1, 2], mu = [1.0, 3.0], theta = [2.0] }\n"
        'dataset = { name = "human_pbmc_1k_subset", family = "ztnb", n = 40 }\n'
        '[regions.realistic]\nfamily = "ztnb"\nsource = "dataset"\n'
    )
    summary = run_accuracy(load_suite(path), None, progress=False).summary
    rows = summary[(summary["region"] == "realistic") & (summary["quantity"] == "value")]
    assert len(rows) == 6  # two candidates x three dtypes
    # the same points in every dtype (40 drawn; repeated counts are one point)
    assert rows["n"].nunique() == 1 and 20 < rows["n"].iloc[0] <= 40, rows[["dtype", "n"]]
    assert (rows["max_ulp"] < 8).all()
