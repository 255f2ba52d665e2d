"""The report's "shipped loss against its goals" tables (ztbench.report.goals)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ztbench.core.schema import SUMMARY_COLUMNS, THRESHOLD_COLUMNS
from ztbench.report.data import Results
from ztbench.report.goals import accuracy_goals, compiled_goals, goals_markdown, speed_goals

# the goals as a suite's [goals] table records them (goals.json)
GOALS = {"candidates": ["ztpoisson/ztbench", "ztnb/ztbench"], "dtypes": ["float64", "float32"],
         "value_ulp": 4.0, "gradient_ulp": 16.0, "speed_vs_naive": 0.8}  # fmt: skip


def _row(cand: str, dtype: str, quantity: str, region: str, max_ulp: float,
         failures: int = 0, **worst: float) -> dict:  # fmt: skip
    fam = cand.split("/")[0]
    return {"family": fam, "candidate": cand, "dtype": dtype, "device": "cpu",
            "mode": "eager", "quantity": quantity, "region": region, "n": 10,
            "failures": failures, "max_ulp": max_ulp, "p99_ulp": 1.0, "status": "ok",
            "worst_k": worst.get("k", 1.0), "worst_lam": worst.get("lam", math.nan),
            "worst_mu": worst.get("mu", math.nan),
            "worst_theta": worst.get("theta", math.nan)}  # fmt: skip


def _results(throughput: pd.DataFrame | None = None) -> Results:
    rows = [
        _row("ztpoisson/ztbench", "float64", "value", "all", 942.0, k=3.0, lam=4.5),
        _row("ztpoisson/ztbench", "float64", "value", "near-lam-10", 942.0),
        _row("ztpoisson/ztbench", "float64", "value", "tiny-lam", 2.0),
        _row("ztpoisson/ztbench", "float64", "d_lam", "all", 16.0),  # on the goal: met
        _row("ztpoisson/ztbench", "float32", "value", "all", 0.5),
        _row("ztpoisson/ztbench", "float32", "d_lam", "all", 3.0, failures=1),  # a failure
        _row("ztpoisson/ztbench", "bfloat16", "value", "all", 0.5),  # no goal for bfloat16
        _row("ztpoisson/stable", "float64", "value", "all", 942.0),  # not the shipped loss
    ]
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return Results(Path("."), summary, pd.DataFrame(columns=list(THRESHOLD_COLUMNS)), {},
                   goals=GOALS, throughput=throughput)  # fmt: skip


def _tp(cand: str, dtype: str, mode: str, cost: float, size: int = 10**6,
        inputs: str = "log-uniform") -> dict:  # fmt: skip
    return {"family": cand.split("/")[0], "candidate": cand, "dtype": dtype, "device": "cpu",
            "mode": mode, "pass": "forward+backward", "size": size, "inputs": inputs,
            "median_s": cost, "elements_per_s": size / cost, "cost_vs_naive": cost,
            "status": "ok"}  # fmt: skip


def test_accuracy_goals_met_missed_and_regions() -> None:
    acc = accuracy_goals(_results()).set_index(["dtype", "quantity"])
    assert list(acc["candidate"].unique()) == ["ztpoisson/ztbench"]
    assert ("bfloat16", "value") not in acc.index
    v64 = acc.loc[("float64", "value")]
    assert not v64["met"] and v64["max_ulp"] == 942.0 and v64["goal_ulp"] == 4.0
    assert v64["regions"] == "near-lam-10"  # tiny-lam's 2 ulp is not at the max
    assert v64["worst"] == "k = 3, lam = 4.5"
    assert acc.loc[("float64", "d_lam"), "met"]  # 16 <= 16
    assert acc.loc[("float64", "d_lam"), "regions"] == "(outside the named regions)"
    assert acc.loc[("float32", "value"), "met"]
    assert not acc.loc[("float32", "d_lam"), "met"]  # 3 ulp but a failure


def test_speed_goal_is_the_inverse_cost_on_float32_cpu_eager() -> None:
    tp = pd.DataFrame([
        _tp("ztpoisson/naive", "float32", "eager", 1.0),
        _tp("ztpoisson/ztbench", "float32", "eager", 4.0),  # 4x the time: 0.25x the rate
        _tp("ztpoisson/naive", "float32", "compile", 1.0),
        _tp("ztpoisson/ztbench", "float32", "compile", 0.5),
        _tp("ztpoisson/ztbench", "float32", "eager", 1.0, size=1000),  # not the largest size
    ])  # fmt: skip
    sp = speed_goals(_results(tp)).set_index("mode")
    assert sp.loc["eager", "rate_vs_naive"] == 0.25 and sp.loc["eager", "met"] is False
    assert sp.loc["eager", "size"] == 10**6
    assert sp.loc["compile", "rate_vs_naive"] == 2.0
    assert sp.loc["compile", "met"] is None and math.isnan(sp.loc["compile", "goal"])
    text = goals_markdown(_results(tp))
    # float64 value, float32 d_lam and the eager speed
    assert "3 goal(s) missed" in text
    assert text.count("**missed**") == 3


def test_speed_goal_on_each_input_kind() -> None:
    tp = pd.DataFrame([
        _tp("ztpoisson/naive", "float32", "eager", 1.0),
        _tp("ztpoisson/ztbench", "float32", "eager", 1.0),  # met on log-uniform inputs
        _tp("ztpoisson/naive", "float32", "eager", 1.0, inputs="realistic"),
        _tp("ztpoisson/ztbench", "float32", "eager", 2.0, inputs="realistic"),  # 0.5x
    ])  # fmt: skip
    sp = speed_goals(_results(tp)).set_index("inputs")
    # judged on realistic inputs; log-uniform reported beside, without a goal
    assert not sp.loc["realistic", "met"] and sp.loc["realistic", "rate_vs_naive"] == 0.5
    assert sp.loc["log-uniform", "met"] is None and math.isnan(sp.loc["log-uniform", "goal"])
    assert sp.loc["log-uniform", "rate_vs_naive"] == 1.0
    # a throughput.csv without the column: log-uniform inputs
    old = speed_goals(_results(tp[tp["inputs"] == "log-uniform"].drop(columns="inputs")))
    assert old["inputs"].tolist() == ["log-uniform"] and bool(old["met"].iloc[0])


def test_goal_timing_takes_precedence_where_it_timed() -> None:
    """bench's goal timing (speed-goals/throughput.csv: a larger size) gives the rows of the
    dtypes it timed; the main run the others (float64 here), with their own size."""
    main = pd.DataFrame([
        _tp("ztpoisson/naive", "float32", "eager", 1.0, size=10**5, inputs="realistic"),
        _tp("ztpoisson/ztbench", "float32", "eager", 2.0, size=10**5, inputs="realistic"),
        _tp("ztpoisson/naive", "float64", "eager", 1.0, size=10**5, inputs="realistic"),
        _tp("ztpoisson/ztbench", "float64", "eager", 40.0, size=10**5, inputs="realistic"),
    ])  # fmt: skip
    goal = pd.DataFrame([
        _tp("ztpoisson/naive", "float32", "eager", 1.0, inputs="realistic"),
        _tp("ztpoisson/ztbench", "float32", "eager", 0.8, inputs="realistic"),  # 1.25x
        _tp("ztpoisson/naive", "float32", "eager", 1.0),
        _tp("ztpoisson/ztbench", "float32", "eager", 4.0),  # log-uniform: 0.25x
    ])  # fmt: skip
    res = _results(main)
    res.goal_throughput = goal
    sp = speed_goals(res).set_index(["dtype", "inputs"])
    assert sp.loc[("float32", "realistic"), "size"] == 10**6
    assert sp.loc[("float32", "realistic"), "rate_vs_naive"] == 1.25
    assert sp.loc[("float32", "realistic"), "met"]
    assert sp.loc[("float32", "log-uniform"), "rate_vs_naive"] == 0.25
    assert sp.loc[("float32", "log-uniform"), "met"] is None  # reported, not judged
    assert sp.loc[("float64", "realistic"), "size"] == 10**5
    assert sp.loc[("float64", "realistic"), "rate_vs_naive"] == 1 / 40
    # without the goal timing: the main run's float32 row
    assert speed_goals(_results(main)).set_index(["dtype", "inputs"]).loc[
        ("float32", "realistic"), "rate_vs_naive"] == 0.5


def test_nothing_measured() -> None:
    empty = Results(Path("."), pd.DataFrame(columns=list(SUMMARY_COLUMNS)),
                    pd.DataFrame(columns=list(THRESHOLD_COLUMNS)), {}, goals=GOALS)  # fmt: skip
    assert "were not measured" in goals_markdown(empty)


def test_goals_come_from_the_suite() -> None:
    """Other numbers in the goals table move the verdicts: nothing is hard-coded."""
    res = _results()
    res.goals = {**GOALS, "value_ulp": 1000.0, "dtypes": ["float64"]}
    acc = accuracy_goals(res).set_index(["dtype", "quantity"])
    assert acc.loc[("float64", "value"), "met"]  # 942 <= 1000
    assert "float32" not in acc.index.get_level_values("dtype")
    res.goals = None
    assert "states no goals" in goals_markdown(res)


def test_speed_goals_per_dtype_and_family_from_goals_json() -> None:
    """Every dtype timed on CPU in eager mode is judged against its own goal: goals.json's
    ``speed`` table where it names the dtype (and family), else speed_vs_naive."""
    goals = {**GOALS, "speed_vs_naive": 1.0,
             "speed": {"float64": {"ztpoisson": 0.5, "ztnb": 0.3}}}  # fmt: skip
    tp = pd.DataFrame([
        _tp("ztpoisson/naive", "float64", "eager", 1.0),
        _tp("ztpoisson/ztbench", "float64", "eager", 1.6),  # 0.625x: above 0.5
        _tp("ztpoisson/naive", "bfloat16", "eager", 1.0),
        _tp("ztpoisson/ztbench", "bfloat16", "eager", 1.25),  # 0.8x: below 1.0
        _tp("ztnb/naive", "float64", "eager", 1.0),
        _tp("ztnb/ztbench", "float64", "eager", 4.0),  # 0.25x: below 0.3
    ])  # fmt: skip
    res = _results(tp)
    res = Results(res.dir, res.summary, res.thresholds, res.env, goals=goals, throughput=tp)
    sp = speed_goals(res).set_index(["candidate", "dtype"])
    assert sp.loc[("ztpoisson/ztbench", "float64"), "goal"] == 0.5
    assert bool(sp.loc[("ztpoisson/ztbench", "float64"), "met"])
    assert sp.loc[("ztpoisson/ztbench", "bfloat16"), "goal"] == 1.0
    assert not sp.loc[("ztpoisson/ztbench", "bfloat16"), "met"]
    assert sp.loc[("ztnb/ztbench", "float64"), "goal"] == 0.3
    assert not sp.loc[("ztnb/ztbench", "float64"), "met"]


def test_compiled_goal_against_eager_in_the_same_run() -> None:
    """torch.compile: the shipped loss's compiled rate over its eager rate (same size and
    inputs), judged on realistic inputs against 0.9; log-uniform rows reported only."""
    tp = pd.DataFrame([
        _tp("ztpoisson/naive", "float32", "eager", 1.0, inputs="realistic"),
        _tp("ztpoisson/ztbench", "float32", "eager", 1.0, inputs="realistic"),
        _tp("ztpoisson/ztbench", "float32", "compile", 1.05, inputs="realistic"),  # 0.95x: met
        _tp("ztpoisson/naive", "float64", "eager", 1.0, inputs="realistic"),
        _tp("ztpoisson/ztbench", "float64", "eager", 1.0, inputs="realistic"),
        _tp("ztpoisson/ztbench", "float64", "compile", 1.25, inputs="realistic"),  # 0.8x
        _tp("ztpoisson/ztbench", "float64", "eager", 1.0),
        _tp("ztpoisson/ztbench", "float64", "compile", 2.0),  # log-uniform: not judged
        _tp("ztpoisson/ztbench", "bfloat16", "compile", 1.0, inputs="realistic"),  # no eager
    ])  # fmt: skip
    comp = compiled_goals(_results(tp)).set_index(["dtype", "inputs"])
    assert set(comp.index) == {("float32", "realistic"), ("float64", "realistic"),
                               ("float64", "log-uniform")}  # fmt: skip
    assert math.isclose(comp.loc[("float32", "realistic"), "rate_vs_eager"], 1 / 1.05)
    assert comp.loc[("float32", "realistic"), "met"]
    assert comp.loc[("float64", "realistic"), "rate_vs_eager"] == 0.8
    assert not comp.loc[("float64", "realistic"), "met"]
    assert comp.loc[("float64", "realistic"), "compiled_s"] == 1.25
    assert comp.loc[("float64", "log-uniform"), "met"] is None
    text = goals_markdown(_results(tp))
    assert "torch.compile against eager" in text and "| 0.8 |" in text
    assert text.count("**missed**") == 1 + 2  # float64 compiled; float64 value, float32 d_lam
