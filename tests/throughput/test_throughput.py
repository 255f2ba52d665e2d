"""The throughput runner itself (not speed): columns, ratios, unsupported rows, CLI errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ztbench.candidates import get_candidate
from ztbench.candidates.base import Candidate
from ztbench.cli import main
from ztbench.core.schema import PASSES
from ztbench.throughput.config import COLUMNS, TimingConfig
from ztbench.throughput.inputs import copy_elements, realistic_inputs, timing_inputs
from ztbench.throughput.runner import plan, run_throughput, with_naive
from ztbench.throughput.timing import peak_bytes, time_call

FAST = TimingConfig(budget_s=0.002, min_rounds=3, max_rounds=5, min_round_s=1e-4)

SUITE = """\
name = "tiny"
dtypes = ["float64"]
[candidates]
include = ["ztpoisson/stable", "ztnb/stable", "ztnb/scipy"]
[families.ztpoisson]
edges = [[1, 0.5], [2, 3.0]]
[families.ztnb]
edges = [[1, 0.5, 2.0]]
"""


def fake(name: str, fn, dtypes: tuple[str, ...] = ("float64", "float32")) -> Candidate:
    """An unregistered ztpoisson torch candidate."""
    return Candidate(
        id=f"ztpoisson/{name}", family="ztpoisson", form="loss", description="test",
        provenance="test", kind="torch", dtypes=dtypes, fn=fn,
    )  # fmt: skip


def _boom(k, lam, threshold=None):
    raise RuntimeError("boom\nsecond line")


def tiny_run(candidates: list[Candidate], dtypes=("float64",), devices=("cpu",), **kw):
    jobs = plan(candidates, dtypes, devices, ("eager",), PASSES, {"cpu": (500,)}, **kw)
    return run_throughput(jobs, FAST, threads=1, progress=False).table


def test_every_column_for_every_row_and_consistent_ratios() -> None:
    cands = with_naive([get_candidate("ztpoisson/stable"), get_candidate("ztnb/stable")])
    assert [c.id for c in cands] == [
        "ztpoisson/naive",
        "ztpoisson/stable",
        "ztnb/naive",
        "ztnb/stable",
    ]
    table = tiny_run(cands, dtypes=("float64", "float32"))
    assert tuple(table.columns[: len(COLUMNS)]) == COLUMNS
    assert len(table) == 4 * 2 * 2  # candidates x dtypes x passes
    assert (table["status"] == "ok").all(), table["reason"].tolist()
    assert not table[list(COLUMNS)].isna().any().any()
    assert (table["threads"] == 1).all() and (table["rounds"] >= 3).all()
    np.testing.assert_allclose(table["elements_per_s"], table["size"] / table["median_s"])
    np.testing.assert_allclose(table["cost_vs_copy"], table["median_s"] / table["copy_median_s"])
    np.testing.assert_allclose(table["cost_vs_naive"], table["median_s"] / table["naive_median_s"])
    assert (table["min_s"] <= table["median_s"]).all()
    assert (table["compile_s"] == 0.0).all()  # eager
    naive = table[table["candidate"].str.endswith("/naive")]
    assert (naive["cost_vs_naive"] == 1.0).all()
    # the naive reference is the same family, dtype, pass
    st = table.set_index(["candidate", "dtype", "pass"])
    nv = st.loc[("ztnb/naive", "float32", "forward+backward"), "median_s"]
    assert st.loc[("ztnb/stable", "float32", "forward+backward"), "naive_median_s"] == nv
    # resident pages: a tiny call may allocate inside memory already resident (0), never < 0
    assert (table["peak_bytes_per_element"] >= 0).all()
    assert set(table["peak_memory_measure"]) == {"cpu"}


def test_unsupported_and_failing_candidates_are_rows_not_exceptions() -> None:
    only64 = fake("only64", lambda k, lam, threshold=None: lam * k, dtypes=("float64",))
    cands = [get_candidate("ztpoisson/naive"), only64, fake("boom", _boom)]
    cands.append(get_candidate("ztpoisson/scipy"))
    table = tiny_run(cands, dtypes=("float64", "float32"))
    rows = table.set_index(["candidate", "dtype", "pass"])
    r = rows.loc[("ztpoisson/only64", "float32", "forward")]
    assert r["status"] == "unsupported" and "float64 only" in r["reason"]
    assert math.isnan(r["median_s"]) and math.isnan(r["cost_vs_naive"])
    assert rows.loc[("ztpoisson/only64", "float64", "forward"), "status"] == "ok"
    b = rows.loc[("ztpoisson/boom", "float64", "forward")]
    assert b["status"] == "failed" and b["reason"] == "RuntimeError: boom"
    # peers: float64 forward on CPU only; everything else recorded with the reason
    assert rows.loc[("ztpoisson/scipy", "float64", "forward"), "status"] == "ok"
    assert rows.loc[("ztpoisson/scipy", "float64", "forward"), "peak_memory_measure"] == "peer"
    assert "forward only" in rows.loc[("ztpoisson/scipy", "float64", "forward+backward"), "reason"]
    assert rows.loc[("ztpoisson/scipy", "float32", "forward"), "status"] == "unsupported"
    assert (table[table["candidate"] == "ztpoisson/naive"]["status"] == "ok").all()


def _product(k, lam, threshold=None):
    return lam * k + lam


def test_compile_mode_reports_compile_time_and_failures() -> None:
    cands = [fake("product", _product), fake("boom", _boom)]
    jobs = plan(cands, ("float32",), ("cpu",), ("compile",), PASSES, {"cpu": (64, 128)})
    table = run_throughput(jobs, FAST, threads=1, progress=False).table
    ok = table[table["candidate"] == "ztpoisson/product"]
    assert (ok["status"] == "ok").all(), ok["reason"].tolist()
    assert (ok["compile_s"] >= 0).all()
    # the first size compiles each graph (forward, forward+backward); later sizes reuse it
    first = ok[ok["size"] == 64].set_index("pass")["compile_s"]
    assert (first > 0.01).all()
    bad = table[table["candidate"] == "ztpoisson/boom"]
    assert (bad["status"] == "unsupported").all()
    assert bad["reason"].str.startswith("torch.compile failed: ").all()


def test_peer_size_cap_is_recorded() -> None:
    jobs = plan([get_candidate("ztpoisson/scipy")], ("float64",), ("cpu",), ("eager",),
                  ("forward",), {"cpu": (100, 1000)})  # fmt: skip
    cfg = TimingConfig(budget_s=0.001, min_rounds=3, max_rounds=3, peer_max_size=100)
    table = run_throughput(jobs, cfg, progress=False).table
    assert list(table["status"]) == ["ok", "skipped"]
    assert "<= 100" in table["reason"].iloc[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU case")
def test_cuda_without_gpu_is_unsupported() -> None:
    jobs = plan([get_candidate("ztpoisson/naive")], ("float32",), ("cuda",), ("eager",),
                  ("forward",), {"cuda": (10**8,)})  # fmt: skip
    table = run_throughput(jobs, FAST, progress=False).table
    assert table["status"].tolist() == ["unsupported"]
    assert table["reason"].tolist() == ["CUDA is not available"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_timing_and_memory() -> None:
    jobs = plan([get_candidate("ztnb/naive")], ("float32",), ("cuda",), ("eager",),
                  PASSES, {"cuda": (10**5,)})  # fmt: skip
    table = run_throughput(jobs, FAST, progress=False).table
    assert (table["status"] == "ok").all()
    assert set(table["peak_memory_measure"]) == {"cuda"}


def test_time_call_rounds_and_calls_per_round() -> None:
    cfg = TimingConfig(budget_s=0.01, min_rounds=4, max_rounds=6, min_round_s=1e-3)
    t = time_call(lambda: None, "cpu", cfg)
    assert 4 <= t.rounds <= 6 and t.calls_per_round > 1
    assert 0 < t.min_s <= t.median_s


_PEAK_PROBE = """
import json, torch
from ztbench.throughput.timing import peak_bytes
n = 1 << 22
torch.ones(n) * 2.0  # torch's first call initialises its thread pools (as timing does)
out = {"temporary": [peak_bytes(lambda: torch.ones(n, dtype=torch.float32) * 2.0, "cpu")
                     for _ in range(3)]}  # warm: freed memory kept must not hide a peak
def three_at_once():
    x = torch.ones(n, dtype=torch.float64)
    y = x * 2
    return (x + y).sum()
def one_at_a_time():
    for _ in range(3):
        x = torch.ones(n, dtype=torch.float64)
        del x
out["three"] = peak_bytes(three_at_once, "cpu")
out["one"] = peak_bytes(one_at_a_time, "cpu")
print(json.dumps(out))
"""


def test_peak_bytes_cpu_sees_a_temporary() -> None:
    # In a fresh process: how much freed memory the C allocator keeps, and where it puts a
    # new block, depends on everything the process allocated before (a long test session
    # made the one-at-a-time case read the sum); a measure starts from a known state.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _PEAK_PROBE], capture_output=True, text=True,
                          check=True, timeout=120)  # fmt: skip
    got = json.loads(done.stdout.strip().splitlines()[-1])
    n = 1 << 22
    for peak, how in got["temporary"]:
        # ones and the product live together: 8 bytes per element. Resident pages can count a
        # block the C allocator keeps beside a new one (up to twice), never less than 97%.
        assert how == "cpu" and 7.75 * n <= peak < 16.5 * n, peak / n
    assert 23.25 * n <= got["three"][0] < 33 * n
    # one buffer at a time: a running sum of the allocations would read 24n
    assert 7.75 * n <= got["one"][0] < 16.5 * n


def test_peak_bytes_cpu_costs_no_memory_per_allocation() -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def many_small() -> None:
        for _ in range(20000):
            torch.ones(64) + 1

    peak_bytes(many_small, "cpu")
    # the profiler-based measure recorded every allocation event; this one keeps nothing
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # kB


def test_inputs_log_uniform_in_domain_and_seeded() -> None:
    k, mu, theta = timing_inputs("ztnb", "float16", "cpu", 5000, seed=3)
    assert k.dtype == torch.float16 and torch.isfinite(k).all()
    for t in (k, mu, theta):
        assert torch.isfinite(t).all() and (t > 0).all()
    assert (k >= 1).all() and (k == torch.floor(k)).all()
    k2, mu2, _ = timing_inputs("ztnb", "float16", "cpu", 5000, seed=3)
    assert torch.equal(k, k2) and torch.equal(mu, mu2)
    (_, lam) = timing_inputs("ztpoisson", "float64", "cpu", 20000, seed=0)
    decades = torch.log10(lam)
    assert decades.min() < -25 and decades.max() > 8  # spans the domain 1e-30 .. 1e9


def test_realistic_inputs_single_cell_like_and_seeded() -> None:
    k, mu, theta = realistic_inputs("ztnb", "float64", "cpu", 20000, seed=3)
    assert (k >= 1).all() and (k == torch.floor(k)).all()
    assert 1.0 <= float(mu.min()) and float(mu.max()) <= math.exp(2.0)
    assert math.exp(0.5) <= float(theta.min()) and float(theta.max()) <= math.exp(2.5)
    # k - 1 is Poisson(mu): its mean is mu's, (e^2 - 1)/2 = 3.19 for log mu ~ U(0, 2)
    assert abs(float((k - 1).mean()) - (math.exp(2.0) - 1) / 2) < 0.1
    k2, mu2, _ = realistic_inputs("ztnb", "float64", "cpu", 20000, seed=3)
    assert torch.equal(k, k2) and torch.equal(mu, mu2)
    assert len(realistic_inputs("ztpoisson", "float32", "cpu", 10)) == 2


def test_input_kinds_are_rows_with_their_own_naive_ratio() -> None:
    cands = with_naive([get_candidate("ztpoisson/stable")])
    jobs = plan(cands, ("float64",), ("cpu",), ("eager",), ("forward",), {"cpu": (400,)},
                inputs=("log-uniform", "realistic"))  # fmt: skip
    table = run_throughput(jobs, FAST, threads=1, progress=False).table
    assert (table["status"] == "ok").all()
    assert sorted(table["inputs"]) == ["log-uniform", "log-uniform", "realistic", "realistic"]
    for kind, rows in table.groupby("inputs"):
        naive = rows[rows["candidate"] == "ztpoisson/naive"]["median_s"].iloc[0]
        assert (rows["naive_median_s"] == naive).all(), kind


def test_copy_bytes_match_the_traffic() -> None:
    assert copy_elements("ztpoisson", "forward", 1000) == 1500  # reads 2, writes 1
    assert copy_elements("ztnb", "forward", 1000) == 2000  # reads 3, writes 1
    assert copy_elements("ztnb", "forward+backward", 1000) == 3000  # reads 3, writes 3


def test_cli_tiny_run_writes_csv_json_env(tmp_path: Path, capsys) -> None:
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    rc = main(["throughput", str(suite), "-o", str(out), "--sizes", "300", "--budget", "0.002",
               "--max-rounds", "3", "--no-progress", "--threads", "1"])  # fmt: skip
    assert rc == 0
    table = pd.read_csv(out / "throughput.csv", keep_default_na=False, na_values=[""])
    assert tuple(table.columns[: len(COLUMNS)]) == COLUMNS
    # naive of both families added; the peer is timed forward only
    assert set(table["candidate"]) == {
        "ztpoisson/naive", "ztpoisson/stable", "ztnb/naive", "ztnb/stable", "ztnb/scipy",
    }  # fmt: skip
    ok = table[table["status"] == "ok"]
    # both input kinds by default: 9 rows each
    assert len(ok) == 18 and not ok[list(COLUMNS)].isna().any().any()
    assert set(ok["inputs"]) == {"log-uniform", "realistic"}
    doc = json.loads((out / "throughput.json").read_text())
    assert doc["columns"][: len(COLUMNS)] == list(COLUMNS)
    assert list(doc["rows"][0])[: len(COLUMNS)] == list(COLUMNS)
    assert len(doc["rows"]) == len(table)
    env = json.loads((out / "env.json").read_text())
    assert env["torch_threads"] == 1 and env["suite_sha256"]
    assert env.pop("stages")["throughput"]["torch_threads"] == 1 and doc["env"] == env
    assert "wrote" in capsys.readouterr().out
    # the same timings in pytest-benchmark's format, read by its own compare command
    bench = json.loads((out / "pytest-benchmark.json").read_text())
    assert len(bench["benchmarks"]) == len(ok)
    first = bench["benchmarks"][0]
    row = ok.iloc[0]
    assert first["stats"]["median"] == pytest.approx(row["median_s"], rel=1e-6)
    assert first["stats"]["min"] == pytest.approx(row["min_s"], rel=1e-6)
    assert first["stats"]["rounds"] == row["rounds"]
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", str(out / "pytest-benchmark.json"),
         "--columns", "min,median,rounds"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "ztnb/stable[float64-cpu-eager-forward+backward-300-log-uniform]" in shown.stdout


def test_cli_candidate_filter(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    rc = main(["throughput", str(suite), "-o", str(out), "--sizes", "200", "--budget", "0.001",
               "--max-rounds", "3", "--no-progress", "--no-memory", "--candidates", "ztnb/stable",
               "--passes", "forward", "--inputs", "realistic"])  # fmt: skip
    assert rc == 0
    table = pd.read_csv(out / "throughput.csv")
    assert table["candidate"].tolist() == ["ztnb/naive", "ztnb/stable"]
    assert (table["inputs"] == "realistic").all()
    assert table["peak_bytes_per_element"].isna().all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "no such file"),
        (["--sizes", "1e4,abc"], "--sizes"),
        (["--sizes", "0"], "--sizes"),
        (["--dtypes", "float8"], "--dtypes"),
        (["--modes", "jit"], "--modes"),
        (["--inputs", "uniform"], "--inputs"),
        (["--candidates", "ztnb/nothing"], "--candidates"),
        (["--budget", "-1"], "--budget"),
    ],
)
def test_bad_suite_or_option_exits_2_with_one_line(
    tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    suite = tmp_path / "tiny.toml"
    if extra:
        suite.write_text(SUITE)
    rc = main(["throughput", str(suite), "-o", str(tmp_path / "o"), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "o").exists()


def test_invalid_suite_content_exits_2(tmp_path: Path, capsys) -> None:
    suite = tmp_path / "bad.toml"
    suite.write_text(SUITE.replace('dtypes = ["float64"]', 'dtypes = ["float64"]\nbogus = 1'))
    assert main(["throughput", str(suite), "--no-progress"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_suite_run_keeps_only_the_jobs_it_is_told(tmp_path: Path) -> None:
    """run_suite_throughput's ``keep``: bench's goal timing compiles on realistic inputs
    only; here, every job on log-uniform inputs is dropped and the rest timed."""
    from ztbench.candidates import load_suite
    from ztbench.throughput.stage import run_suite_throughput

    path = tmp_path / "tiny.toml"
    path.write_text(SUITE)
    out = tmp_path / "out"
    run_suite_throughput(load_suite(path), out, FAST, patterns=["ztpoisson/stable"],
                         passes=("forward",), sizes={"cpu": (300,)}, threads=1, progress=False,
                         keep=lambda job: job.inputs == "realistic")  # fmt: skip
    table = pd.read_csv(out / "throughput.csv")
    assert set(table["inputs"]) == {"realistic"}
    assert set(table["candidate"]) == {"ztpoisson/naive", "ztpoisson/stable"}
