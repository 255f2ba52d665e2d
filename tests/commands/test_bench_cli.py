"""``ztbench bench`` end to end on the quick suite (tiny throughput sizes and budget)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ztbench.cli import main


@pytest.mark.slow
def test_bench_writes_everything_with_the_thread_count(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    rc = main(["bench", "suites/quick.toml", "-o", str(out), "--no-points", "--no-progress",
               "--throughput-sizes", "1e3", "--throughput-budget", "0.01",
               "--throughput-threads", "1", "--skip-impact",
               "--goal-speed-size", "2e3"])  # fmt: skip
    assert rc in (0, None)
    for name in ("summary.csv", "summary.json", "thresholds.csv", "env.json",
                 "throughput.csv", "throughput.json", "REPORT.md"):  # fmt: skip
        assert (out / name).is_file(), name
    # the speed goals timed again: the goals' loss forms and naive, eager (the quick suite
    # compiles nothing), both input kinds, the suite's dtypes, at their own size
    goal_tp = pd.read_csv(out / "speed-goals" / "throughput.csv")
    assert set(goal_tp["size"]) == {2000} and set(goal_tp["mode"]) == {"eager"}
    assert set(goal_tp["inputs"]) == {"realistic", "log-uniform"}
    assert set(goal_tp["dtype"]) == {"float64", "float32"}
    forms = ("ztbench", "naive", "naive-float64")
    assert set(goal_tp["candidate"]) == {f"{f}/{c}" for f in ("ztpoisson", "ztnb") for c in forms}
    settings = json.loads((out / "throughput.json").read_text())["settings"]
    assert settings["threads"] == 1 and settings["budget_s"] == 0.01
    text = (out / "REPORT.md").read_text()
    assert "## The shipped loss against its goals" in text
    printed = capsys.readouterr().out
    assert f"Report: {out}/REPORT.md" in printed
    # each stage's wall time and peak memory: in bench.json, printed, and in the report
    record = json.loads((out / "bench.json").read_text())
    assert list(record["stages"]) == ["accuracy", "throughput", "impact", "report"]
    for stage in record["stages"].values():
        assert stage["wall_s"] > 0 and stage["peak_rss_bytes"] > 50e6  # python + torch
    assert record["total_s"] == pytest.approx(sum(r["wall_s"] for r in record["stages"].values()))
    assert record["peak_rss_bytes"] == max(r["peak_rss_bytes"] for r in record["stages"].values())
    assert record["versions"]["torch"].startswith("2.")
    assert set(record["work"]) == set(record["stages"])  # what later estimates scale
    assert "s in all (accuracy" in printed and "peak resident memory" in printed
    assert "ztbench bench: " in text and "throughput" in text.split("ztbench bench: ")[1]


@pytest.mark.parametrize("value", ["zero", "0"])
def test_bench_bad_thread_count_is_one_line(tmp_path: Path, capsys, value: str) -> None:
    argv = ["bench", "suites/quick.toml", "-o", str(tmp_path / "x"), "--no-progress",
            "--throughput-threads", value]  # fmt: skip
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--throughput-threads" in err[0]
    assert not (tmp_path / "x").exists()  # nothing ran


def test_bench_estimate_scales_a_recorded_run(tmp_path: Path) -> None:
    """The estimate printed before a run: each stage's recorded time scaled by the ratio of
    the stage's work (points x candidate runs for accuracy)."""
    from ztbench.candidates import load_suite
    from ztbench.pipeline import BenchOptions, estimate_line, stage_work

    def suite(n: int) -> Path:
        path = tmp_path / f"s{n}.toml"
        path.write_text('dtypes = ["float64", "float32"]\n[candidates]\n'
                        'include = ["ztpoisson/naive", "ztpoisson/stable"]\n'
                        f"[families.ztpoisson]\nrandom = {{ n = {n}, k = {{ min = 1, max = 10 }},"
                        " lam = { min = 1.0, max = 2.0 } }\n")  # fmt: skip
        return path

    small, large = load_suite(suite(100)), load_suite(suite(1000))
    options = BenchOptions(throughput=False, impact=False)
    work = stage_work(small, options)
    assert work["accuracy"] == 100 * 2 * 2  # points x (2 candidates x 2 dtypes x eager)
    record = tmp_path / "bench.json"
    assert estimate_line(large, options, record) is None  # nothing recorded yet
    record.write_text(json.dumps({"suite": "s100", "total_s": 60.0, "work": work, "stages": {
        "accuracy": {"wall_s": 60.0}, "throughput": {"wall_s": 0.0},
        "impact": {"wall_s": 0.0}, "report": {"wall_s": 0.0}}}))  # fmt: skip
    line = estimate_line(large, options, record)
    assert line is not None and "1,000 points; about 10 min" in line  # 60 s x 10


COMPILING_SUITE = """\
name = "tiny"
dtypes = ["float32"]
modes = ["eager", "compile"]
[candidates]
include = ["ztpoisson/ztbench", "ztpoisson/naive", "ztpoisson/naive-float64"]
[candidates.modes]
compile = ["ztpoisson/ztbench"]
[families.ztpoisson]
edges = [[1, 0.5], [2, 3.0]]
[goals]
candidates = ["ztpoisson/ztbench"]
dtypes = ["float32"]
value_ulp = 4.0
gradient_ulp = 16.0
speed_vs_naive = 1.0
"""


def test_goal_timing_compiles_what_the_suite_compiles_on_realistic_inputs(
    tmp_path: Path,
) -> None:
    """bench's goal timing: eager on both input kinds; under torch.compile only the
    candidates the suite compiles, and only on realistic inputs (the compiled goal's)."""
    from ztbench.candidates import load_suite
    from ztbench.pipeline import BenchOptions, _goal_timing
    from ztbench.throughput.config import TimingConfig

    path = tmp_path / "tiny.toml"
    path.write_text(COMPILING_SUITE)
    options = BenchOptions(progress=False, throughput_threads=1, goal_speed_size=2000)
    config = TimingConfig(budget_s=0.002, min_rounds=1, max_rounds=3, min_round_s=1e-4)
    assert _goal_timing(load_suite(path), tmp_path, options, config)
    tp = pd.read_csv(tmp_path / "speed-goals" / "throughput.csv")
    compiled = tp[tp["mode"] == "compile"]
    assert set(compiled["candidate"]) == {"ztpoisson/ztbench"}
    assert set(compiled["inputs"]) == {"realistic"} and set(compiled["status"]) == {"ok"}
    eager = tp[tp["mode"] == "eager"]
    assert set(eager["inputs"]) == {"realistic", "log-uniform"}
    assert set(eager["candidate"]) == {"ztpoisson/ztbench", "ztpoisson/naive",
                                       "ztpoisson/naive-float64"}  # fmt: skip
