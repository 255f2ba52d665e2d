"""The report builder on a small synthetic results directory (no accuracy run needed)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ztbench.cli import main
from ztbench.core.schema import SUMMARY_COLUMNS, THRESHOLD_COLUMNS
from ztbench.core.textfmt import fmt
from ztbench.report import SECTIONS, build_report
from ztbench.report.data import load_results
from ztbench.report.plots import bin_max, pareto_front, rule_curves
from ztbench.report.tables import board_keys, leaderboard, recommendations

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (candidate, max ulp per dtype, failures, gradient max ulp or None for "no gradient")
ZTP = [
    ("ztpoisson/naive", {"float64": math.inf, "float32": math.inf}, 5, 3.0),
    ("ztpoisson/published", {"float64": 1e9, "float32": 2e4}, 0, 10.0),
    ("ztpoisson/stable", {"float64": 2.0, "float32": 3.0}, 0, 4.0),
    ("ztpoisson/expm1", {"float64": 2.0, "float32": 3.0}, 0, 8.0),  # ties stable on value
    ("ztpoisson/scipy", {"float64": 1.0}, 0, None),  # peer: best value, no gradient
]
ZTNB = [
    ("ztnb/naive", {"float64": math.inf, "float32": math.inf}, 7, 3.0),
    ("ztnb/published-code", {"float64": 5e12, "float32": 6e5}, 0, 20.0),
    ("ztnb/published-text", {"float64": 5e12, "float32": 6e5}, 0, 20.0),
    ("ztnb/stable", {"float64": 4.0, "float32": 2.0}, 0, 5.0),
]


def _summary_rows() -> list[dict]:
    rows = []
    for fam, cands, grads in (("ztpoisson", ZTP, ("d_lam",)), ("ztnb", ZTNB, ("d_mu", "d_theta"))):
        for cand, ulps, fails, gulp in cands:
            for dtype in ("float64", "float32"):
                base = {"family": fam, "candidate": cand, "dtype": dtype, "device": "cpu",
                        "mode": "eager", "region": "all", "threshold": math.nan,
                        "out_of_range": 0, "uncertified": 0}  # fmt: skip
                if dtype not in ulps:
                    for q in ("value", *grads):
                        rows.append({**base, "quantity": q, "n": 0, "failures": 0,
                                     "status": f"unsupported: dtype {dtype}"})  # fmt: skip
                    continue
                worst = {"worst_k": 1.0, "worst_lam": 1e-20 if fam == "ztpoisson" else math.nan,
                         "worst_mu": 1e-3 if fam == "ztnb" else math.nan,
                         "worst_theta": 100.0 if fam == "ztnb" else math.nan}  # fmt: skip
                v = ulps[dtype]
                rows.append({**base, **worst, "quantity": "value", "n": 100,
                             "failures": fails if math.isinf(v) else 0, "max_ulp": v,
                             "p99_ulp": v / 2, "median_ulp": 0.5, "max_abs_err": v * 1e-16,
                             "status": "ok"})  # fmt: skip
                for q in grads:
                    if gulp is None:
                        rows.append({**base, "quantity": q, "n": 0, "failures": 0,
                                     "status": "no gradient"})  # fmt: skip
                    else:
                        rows.append({**base, **worst, "quantity": q, "n": 100, "failures": 0,
                                     "max_ulp": gulp, "p99_ulp": 1.0, "max_abs_err": 1e-15,
                                     "status": "ok"})  # fmt: skip
    return rows


def _points() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frames = []
    for fam, cands, grads in (("ztpoisson", ZTP, ("d_lam",)), ("ztnb", ZTNB, ("d_mu", "d_theta"))):
        for cand, ulps, _, gulp in cands:
            for dtype in ulps:
                for q in ("value", *grads):
                    if q != "value" and gulp is None:
                        continue
                    n = 200
                    k = np.floor(10 ** rng.uniform(0, 4, n))
                    ulp = 10 ** rng.uniform(-1, 3, n)
                    fail = np.zeros(n, dtype=bool)
                    if cand.endswith("naive"):
                        fail[:20] = True
                        ulp[:20] = np.inf
                    ref = rng.uniform(1, 2, n)
                    frames.append(pd.DataFrame({
                        "family": fam, "candidate": cand, "dtype": dtype, "device": "cpu",
                        "mode": "eager", "quantity": q, "k": k,
                        "lam": 10 ** rng.uniform(-10, 5, n) if fam == "ztpoisson" else np.nan,
                        "mu": 10 ** rng.uniform(-5, 5, n) if fam == "ztnb" else np.nan,
                        "theta": 10 ** rng.uniform(-5, 5, n) if fam == "ztnb" else np.nan,
                        "computed": np.where(fail, np.nan, ref + 1e-12), "reference": ref,
                        "ulp_err": ulp, "bits_err": np.log2(1 + ulp),
                        "abs_err": np.where(fail, np.inf, 1e-12), "rel_err": 1e-12,
                        "failure": fail,
                    }))  # fmt: skip
    # the worst value inputs of the summary, so worst cases find their row
    return pd.concat(frames, ignore_index=True)


def _thresholds() -> pd.DataFrame:
    rows = []
    for cand, pub in (("ztpoisson/threshold", 10.0), ("ztnb/threshold-w", 15.0)):
        fam = cand.split("/")[0]
        for dtype in ("float64", "float32"):
            for t in (5.0, 10.0, 15.0, 30.0):
                rows.append({"family": fam, "candidate": cand, "dtype": dtype, "device": "cpu",
                             "mode": "eager", "t": t, "n": 100, "failures": 0,
                             "max_ulp": 1e6 / t if t < 30 else 50.0, "p99_ulp": 10.0 / t,
                             "max_abs_err": 1e-10, "worst_k": 1.0,
                             "worst_lam": 2.0 if fam == "ztpoisson" else math.nan,
                             "worst_mu": 2.0 if fam == "ztnb" else math.nan,
                             "worst_theta": 3.0 if fam == "ztnb" else math.nan,
                             "best": t == 30.0, "published": t == pub})  # fmt: skip
    return pd.DataFrame(rows, columns=list(THRESHOLD_COLUMNS))


def _throughput() -> pd.DataFrame:
    rows = []
    for fam, cands in (("ztpoisson", ZTP), ("ztnb", ZTNB)):
        for i, (cand, ulps, _, gulp) in enumerate(cands):
            for dtype in ulps:
                for pass_ in ("forward", "forward+backward"):
                    if gulp is None and pass_ != "forward":
                        continue
                    med = 1e-3 * (1 + i)
                    rows.append({"family": fam, "candidate": cand, "dtype": dtype,
                                 "device": "cpu", "mode": "eager", "pass": pass_, "size": 10**6,
                                 "median_s": med, "min_s": med, "elements_per_s": 1e6 / med,
                                 "cost_vs_copy": 10.0, "cost_vs_naive": 1 + i,
                                 "compile_s": 0.0, "peak_bytes_per_element": 8.0,
                                 "status": "ok", "reason": ""})  # fmt: skip
    return pd.DataFrame(rows)


def _write_dir(d: Path, throughput: bool) -> Path:
    d.mkdir(parents=True)
    summary = pd.DataFrame(_summary_rows(), columns=list(SUMMARY_COLUMNS))
    summary.to_csv(d / "summary.csv", index=False)
    _thresholds().to_csv(d / "thresholds.csv", index=False)
    (d / "env.json").write_text(json.dumps({"torch": "2.13.0", "python": "3.11", "cpu": "x",
                                            "cpu_count": 2, "torch_threads": 2,
                                            "devices": ["cpu"]}))  # fmt: skip
    pq.write_table(pa.Table.from_pandas(_points(), preserve_index=False), d / "points.parquet")
    if throughput:
        _throughput().to_csv(d / "throughput.csv", index=False)
    return d


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """A fresh synthetic results directory without throughput.csv (tests may change it)."""
    return _write_dir(tmp_path / "run", throughput=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A synthetic directory with throughput.csv, its report built once: (dir, REPORT.md)."""
    d = _write_dir(tmp_path_factory.mktemp("built") / "run", throughput=True)
    return d, build_report(d).read_text()


def _images(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)


def _check_report(d: Path, text: str) -> list[str]:
    for heading in SECTIONS:
        assert heading + "\n" in text, heading
    images = _images(text)
    for rel in images:
        png = d / rel
        assert png.is_file(), rel
        assert png.read_bytes()[:8] == PNG_MAGIC, rel
    return images


@pytest.mark.slow
def test_every_section_and_valid_pngs(built: tuple[Path, str]) -> None:
    d, text = built
    images = _check_report(d, text)
    assert any("heatmap-ztpoisson" in i for i in images)
    assert any("heatmap-ztnb" in i for i in images)
    assert "threshold-sweeps.png" in images
    assert "pareto-cpu.png" in images
    assert "fwd+bwd cost_vs_naive" in text
    assert "no gradient" in text  # the peer's gradient cells
    assert "unsupported" in text  # the peer in float32
    for rule in ("ztpoisson/published", "ztnb/published-code", "ztnb/published-text"):
        assert f"**`{rule}`**" in text.split("## Published rules")[1].split("## Leaderboards")[0]


def test_without_throughput_or_points(results_dir: Path) -> None:
    (results_dir / "points.parquet").unlink()
    text = build_report(results_dir).read_text()
    images = _check_report(results_dir, text)
    assert "No throughput.csv" in text and "No points.parquet" in text
    assert not any("pareto" in i or "heatmap" in i for i in images)
    assert "threshold-sweeps.png" in images


def test_recommended_is_leaderboard_first(built: tuple[Path, str]) -> None:
    d, text = built
    res = load_results(d)
    recs = recommendations(res)
    assert len(recs) == 4
    for key in board_keys(res):
        board = leaderboard(res, key)
        first = board[board["rank"] == 1].iloc[0]["candidate"]
        # the report's leaderboard table lists the leaderboard's first candidate first
        table = text.split(f"### {key.family} · {key.dtype} · {key.device}\n")[1]
        assert table.split("\n")[3].startswith(f"| 1 | `{first}` |")
        # the recommendation: the first row without failures and with gradients
        rec = recs[(recs["family"] == key.family) & (recs["dtype"] == key.dtype)]
        usable = board[board["rank"].notna() & (board["failures"] == 0)
                       & (board["grad_failures"] == 0)]  # fmt: skip
        assert rec.iloc[0]["candidate"] == usable.iloc[0]["candidate"]
    r = recs.set_index(["family", "dtype"])["candidate"]
    # the peer has the lowest value error in float64 and leads the leaderboard, but a model
    # cannot be trained with it (no gradient): stable, the next, is recommended
    assert r[("ztpoisson", "float64")] == "ztpoisson/stable"
    # float32: stable and expm1 tie on the value; stable's gradient is better
    assert r[("ztpoisson", "float32")] == "ztpoisson/stable"
    assert r[("ztnb", "float32")] == "ztnb/stable"
    # failures rank last among the measured; unsupported rows have no rank
    key = next(k for k in board_keys(res) if k.dtype == "float32" and k.family == "ztpoisson")
    board = leaderboard(res, key)
    ranked = board[board["rank"].notna()]
    assert ranked.iloc[-1]["candidate"] == "ztpoisson/naive"
    assert board[board["candidate"] == "ztpoisson/scipy"]["rank"].isna().all()
    top = text.split("## Recommended candidates")[1].split("## Published")[0]
    assert "**`ztpoisson/stable`**" in top and "ztpoisson/scipy" not in top


def test_worst_case_commands_have_their_inputs(built: tuple[Path, str]) -> None:
    _, text = built
    cmds = re.findall(r"`(ztbench eval [^`]+)`", text)
    assert cmds
    for cmd in cmds:
        parts = cmd.split()
        assert Path(parts[3]).is_file()
        assert "--dtype" in parts and parts[-2] == "-o"


@pytest.mark.parametrize("missing", ["summary.csv", "thresholds.csv", "env.json"])
def test_missing_file_one_line_exit_2(results_dir: Path, missing: str, capsys) -> None:
    (results_dir / missing).unlink()
    assert main(["report", str(results_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and missing in err and "Traceback" not in err


def test_missing_directory_and_bad_csv(tmp_path: Path, results_dir: Path, capsys) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (results_dir / "summary.csv").write_text("family,candidate\nztnb,ztnb/x\n")
    assert main(["report", str(results_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing column" in err


def test_helpers() -> None:
    x = np.array([1.0, 1.0, 100.0, 100.0])
    y = np.array([1.0, 1.0, 1.0, 100.0])
    err = np.array([1.0, 3.0, 2.0, np.inf])
    fail = np.array([False, False, False, True])
    edges = np.array([-0.5, 1.0, 2.5])
    vals, failed = bin_max(x, y, err, fail, edges, edges)
    assert vals[0, 0] == 3.0 and vals[0, 1] == 2.0
    assert failed[1, 1] and np.isnan(vals[1, 1]) and np.isnan(vals[1, 0])
    front = pareto_front(np.array([1.0, 2.0, 3.0]), np.array([1.0, 5.0, 2.0]))
    assert list(front) == [2, 0]
    code, code_2024, text = rule_curves(np.array([0.5, 5.0, 20.0]))
    assert code_2024[0] == 14.5 and text[1] == 4.75 and np.isnan(code_2024[2])
    # the code as published: (mu - 1 + 1e-8)(theta + 1e-8) = 15 at mu = 5 (below 15 - mu)
    assert code[0] == 14.5 and 3.75 - 1e-7 < code[1] < 3.75


@pytest.mark.parametrize(("code_ratio", "first"), [(1.05, "code"), (1.5, "text")])
def test_speed_within_ten_percent_is_a_tie(results_dir: Path, code_ratio: float, first: str):
    # published-code and published-text have identical errors in the synthetic summary:
    # only speed separates them, and a 5% difference is timing noise (the id decides)
    tp = _throughput()
    tp["cost_vs_naive"] = tp["cost_vs_naive"].astype(float)
    fb = (tp["family"] == "ztnb") & (tp["pass"] == "forward+backward")
    tp.loc[fb & (tp["candidate"] == "ztnb/published-code"), "cost_vs_naive"] = code_ratio
    tp.loc[fb & (tp["candidate"] == "ztnb/published-text"), "cost_vs_naive"] = 1.0
    tp.to_csv(results_dir / "throughput.csv", index=False)
    res = load_results(results_dir)
    key = next(k for k in board_keys(res) if k.family == "ztnb" and k.dtype == "float64")
    board = leaderboard(res, key)
    order = [c for c in board["candidate"] if c.startswith("ztnb/published-")]
    assert order[0] == f"ztnb/published-{first}"


def test_reproduce_commands_are_shell_quoted(tmp_path: Path) -> None:
    import shlex

    d = _write_dir(tmp_path / "a run; with spaces", throughput=False)
    text = build_report(d).read_text()
    cmds = [ln.strip().strip("`") for ln in text.splitlines() if "ztbench eval " in ln]
    cmds = [c[c.index("ztbench eval "):] for c in cmds]
    assert cmds
    for cmd in cmds:
        argv = shlex.split(cmd)
        assert argv[:2] == ["ztbench", "eval"] and Path(argv[3]).is_file(), cmd


def test_leaderboard_shows_nats_beside_ulp(built: tuple[Path, str]) -> None:
    d, text = built
    res = load_results(d)
    key = next(k for k in board_keys(res) if k.family == "ztnb" and k.dtype == "float64")
    table = text.split(f"### {key.family} · {key.dtype} · {key.device}\n")[1].split("\n###")[0]
    header = [c.strip() for c in table.splitlines()[1].strip("|").split("|")]
    col = header.index("max abs err (nats)")
    board = leaderboard(res, key).set_index("candidate")
    checked = 0
    for line in table.splitlines()[3:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == len(header) and cells[1].startswith("`"):
            cand = cells[1].strip("`")
            if board.loc[cand, "status"] == "ok":  # the summary's max_abs_err, in nats
                assert cells[col] == fmt(board.loc[cand, "max_abs_err"], 2)
                checked += 1
    assert checked >= 3


def test_recommended_is_never_a_full_form(results_dir: Path) -> None:
    """A user trains with the loss form: a full-form candidate (lgamma(k + 1) added) with
    the lowest error is ranked, but the recommendation goes to the best loss-form one."""
    summary = pd.read_csv(results_dir / "summary.csv")
    res = load_results(results_dir)
    before = recommendations(res).set_index(["family", "dtype"])["candidate"]
    summary["form"] = "loss"
    summary.loc[summary["candidate"].isin(before), "form"] = "full"
    summary.to_csv(results_dir / "summary.csv", index=False)
    res = load_results(results_dir)
    after = recommendations(res).set_index(["family", "dtype"])
    for key, cand in before.items():
        board = leaderboard(res, next(k for k in board_keys(res) if (k.family, k.dtype) == key))
        board = board.set_index("candidate")
        if key in after.index:  # the full form still ranks above the recommended loss form
            chosen = after.loc[key, "candidate"]
            assert chosen != cand and board.loc[chosen, "form"] == "loss"
            assert board.loc[cand, "rank"] < board.loc[chosen, "rank"]
