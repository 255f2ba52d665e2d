"""The regression gate's rules, baseline file format and error handling (no suite run).

Summaries here are synthetic DataFrames in the format of ``run_accuracy(...).summary``.
The end-to-end tests (real suite, mutations, reruns) are in test_gate_mutations.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ztbench import gate
from ztbench.cli import main
from ztbench.io.errors import UserError

ENV = {"torch": "2.13.0", "device_kind": "cpu", "suite_sha256": "abc", "python": "3.11.9"}
COLUMNS = (
    *gate.KEY_COLUMNS,
    "n",
    "failures",
    "max_ulp",
    "p99_ulp",
    "median_ulp",
    "mean_ulp",
    "max_abs_err",
    "worst_k",
    "worst_lam",
    "worst_mu",
    "worst_theta",
    "status",
    "out_of_range",
    "uncertified",
)


def row(candidate: str = "ztnb/stable", **kw: Any) -> dict[str, Any]:
    """One summary row with plausible defaults; keyword arguments override."""
    family = candidate.split("/")[0]
    r: dict[str, Any] = {
        "family": family,
        "candidate": candidate,
        "dtype": "float64",
        "device": "cpu",
        "mode": "eager",
        "quantity": "value",
        "region": "all",
        "n": 500,
        "failures": 0,
        "max_ulp": 4.0,
        "p99_ulp": 2.0,
        "median_ulp": 0.5,
        "mean_ulp": 0.61,
        "max_abs_err": 1e-15,
        "worst_k": 3.0,
        "worst_lam": 2.5 if family == "ztpoisson" else math.nan,
        "worst_mu": 0.001 if family == "ztnb" else math.nan,
        "worst_theta": 31.6 if family == "ztnb" else math.nan,
        "status": "ok",
        "out_of_range": 0,
        "uncertified": 0,
    }
    r.update(kw)
    return r


def frame(*rows: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(COLUMNS))


def base_frame() -> pd.DataFrame:
    return frame(
        row("ztpoisson/stable"),
        row("ztpoisson/stable", quantity="d_lam", max_ulp=0.9, p99_ulp=0.6),
        row("ztnb/stable"),
        row("ztnb/stable", dtype="float32", max_ulp=1e6, p99_ulp=3e3),
        row("ztnb/naive", failures=12, max_ulp=math.inf, p99_ulp=5.0),
        row("ztnb/scipy", quantity="d_mu", status="no gradient", **_nan_metrics()),
        row("ztnb/stable", region="tiny-mu", n=0, **_nan_metrics()),
    )


def _nan_metrics() -> dict[str, float]:
    return {m: math.nan for m in ("max_ulp", "p99_ulp", "median_ulp", "mean_ulp", "max_abs_err")}


def make_baseline(summary: pd.DataFrame | None = None, env: dict | None = None) -> gate.Baseline:
    return gate.Baseline.from_summary(
        base_frame() if summary is None else summary, "quick", "abc", env or ENV
    )


def changed(**kw: Any) -> pd.DataFrame:
    """base_frame() with the ztnb/stable float64 value row (index 2) modified."""
    df = base_frame()
    for k, v in kw.items():
        df.loc[2, k] = v
    return df


# --------------------------------------------------------------------------- compare


def test_identical_summary_passes_with_nothing_to_report() -> None:
    res = gate.compare(make_baseline(), base_frame(), ENV)
    assert res.passed and res.exit_code == 0
    assert res.regressions == res.improvements == res.missing == res.new == ()
    assert res.compared == len(base_frame())
    assert gate.verdict(res).startswith("PASS")


@pytest.mark.parametrize("metric", ["max_ulp", "p99_ulp"])
def test_growth_beyond_2x_and_1ulp_is_a_regression(metric: str) -> None:
    base = base_frame().loc[2, metric]
    res = gate.compare(make_baseline(), changed(**{metric: 2 * base + 0.01}), ENV)
    assert not res.passed and res.exit_code == 1
    (ch,) = res.regressions
    assert (ch.candidate, ch.metric, ch.baseline) == ("ztnb/stable", metric, base)
    assert ch.ratio == pytest.approx(2.0025 if metric == "max_ulp" else 2.005)
    assert res.regressed_candidates == ("ztnb/stable",)


@pytest.mark.parametrize(
    ("base", "now"),
    [
        (4.0, 8.0),  # exactly 2x: not more than 2x
        (0.3, 1.2),  # 4x but grew by 0.9 ulp only
        (0.0, 1.0),  # from exact to 1 ulp: not more than 1 ulp
        (1e6, 1.9e6),
    ],
)
def test_growth_within_tolerance_passes(base: float, now: float) -> None:
    res = gate.compare(
        make_baseline(changed(max_ulp=base)), changed(max_ulp=now), ENV, gate.Tolerance()
    )
    assert res.passed, res.regressions


def test_growth_from_zero_beyond_one_ulp_regresses() -> None:
    res = gate.compare(make_baseline(changed(max_ulp=0.0)), changed(max_ulp=1.5), ENV)
    assert [c.metric for c in res.regressions] == ["max_ulp"]
    assert math.isinf(res.regressions[0].ratio)


def test_per_candidate_tolerance_overrides_default() -> None:
    tol = gate.GateTolerance(
        gate.Tolerance(2.0, 1.0), {"ztnb/stable": gate.Tolerance(max_ratio=10.0, min_ulp=1.0)}
    )
    now = changed(max_ulp=30.0)  # 7.5x
    assert gate.compare(make_baseline(), now, ENV, tol).passed
    assert not gate.compare(make_baseline(), now, ENV).passed
    strict = gate.GateTolerance(gate.Tolerance(100.0, 100.0), {"ztnb/stable": gate.Tolerance()})
    assert not gate.compare(make_baseline(), now, ENV, strict).passed


def test_the_suite_loader_gives_the_gate_its_tolerance_type(tmp_path) -> None:
    """One tolerance type: what the suite loader builds is what compare applies."""
    from ztbench.candidates import load_suite

    src = Path(__file__).resolve().parents[2] / "suites" / "quick.toml"
    text = src.read_text().replace("[gate]\nmax_ratio = 2.0", "[gate]\nmax_ratio = 3.0", 1)
    (tmp_path / "q.toml").write_text(text)
    suite = load_suite(tmp_path / "q.toml")
    assert isinstance(suite.gate, gate.GateTolerance)
    assert suite.gate.for_candidate("ztnb/stable") == gate.Tolerance(3.0, 1.0)

def test_failures_appearing_regress_once_not_per_metric() -> None:
    res = gate.compare(
        make_baseline(), changed(failures=3, max_ulp=math.inf, p99_ulp=math.inf), ENV
    )
    assert [(c.candidate, c.metric, c.baseline, c.now) for c in res.regressions] == [
        ("ztnb/stable", "failures", 0.0, 3.0)
    ]
    assert "failures" in "\n".join(gate.format_report(res))


def test_infinite_max_ulp_in_both_is_no_regression_unless_failures_grow() -> None:
    df = base_frame()
    assert math.isinf(df.loc[4, "max_ulp"])
    assert gate.compare(make_baseline(), df, ENV).passed
    df.loc[4, "failures"] = 13
    res = gate.compare(make_baseline(), df, ENV)
    assert [(c.candidate, c.metric) for c in res.regressions] == [("ztnb/naive", "failures")]
    df.loc[4, "failures"] = 11
    res = gate.compare(make_baseline(), df, ENV)
    assert res.passed
    assert [(c.candidate, c.metric) for c in res.improvements] == [("ztnb/naive", "failures")]


@pytest.mark.parametrize(("base", "now", "regressed"), [
    (0, 1, True),        # from 0: no slack
    (1111, 1113, False),  # 0.18%: another CPU's last bits
    (101, 102, False),   # 0.99%
    (100, 103, True),    # 3%
    (12, 13, True),      # 8%
])  # fmt: skip
def test_failure_counts_have_a_relative_slack(base: int, now: int, regressed: bool) -> None:
    df = base_frame()
    df.loc[4, "failures"] = base
    df2 = df.copy()
    df2.loc[4, "failures"] = now
    res = gate.compare(make_baseline(df), df2, ENV)
    assert (not res.passed) is regressed
    assert gate.Tolerance(failure_slack=0.0).failures_regressed(1111, 1112)


@pytest.mark.parametrize(("field", "good", "bad"), [
    ("failure_slack", 0.5, -1.0),
    ("broken_ratio", 3.0, 0.5),
])  # fmt: skip
def test_gate_slacks_are_read_from_the_suite(tmp_path, field: str, good: float,  # type: ignore[no-untyped-def]
                                             bad: float) -> None:  # fmt: skip
    from ztbench.candidates import load_suite
    from ztbench.cli import main

    src = Path(__file__).resolve().parents[2] / "suites" / "quick.toml"
    text = src.read_text().replace("[gate]\n", f"[gate]\n{field} = {good}\n", 1)
    (tmp_path / "q.toml").write_text(text)
    tol = load_suite(tmp_path / "q.toml").gate.for_candidate("ztnb/stable")
    assert getattr(tol, field) == good
    (tmp_path / "bad.toml").write_text(text.replace(f"{field} = {good}", f"{field} = {bad}"))
    assert main(["check", str(tmp_path / "bad.toml")]) == 2


def test_failures_vanishing_is_one_improvement() -> None:
    df = base_frame()
    df.loc[4, ["failures", "max_ulp"]] = [0, 7.0]
    res = gate.compare(make_baseline(), df, ENV)
    assert res.passed
    assert [(c.candidate, c.metric) for c in res.improvements] == [("ztnb/naive", "failures")]


def test_nan_metrics_compare_equal_and_nan_now_regresses() -> None:
    assert gate.compare(make_baseline(), base_frame(), ENV).passed  # rows 5, 6 are NaN
    res = gate.compare(make_baseline(), changed(max_ulp=math.nan), ENV)
    assert [c.metric for c in res.regressions] == ["max_ulp"]
    df = base_frame()
    df.loc[6, ["n", "max_ulp", "p99_ulp"]] = [10, 3.0, 2.0]  # region now populated
    assert gate.compare(make_baseline(), df, ENV).passed


def test_status_change_from_ok_regresses_and_to_ok_improves() -> None:
    res = gate.compare(make_baseline(), changed(status="unsupported: missing kernel"), ENV)
    assert [(c.metric, c.now) for c in res.regressions] == [
        ("status", "unsupported: missing kernel")
    ]
    base = make_baseline(changed(status="skipped: no CUDA"))
    res = gate.compare(base, base_frame(), ENV)
    assert res.passed and [c.metric for c in res.improvements] == ["status"]


def test_improvement_never_fails_and_is_listed() -> None:
    res = gate.compare(make_baseline(), changed(max_ulp=1.0, p99_ulp=0.5), ENV)
    assert res.passed
    assert sorted(c.metric for c in res.improvements) == ["max_ulp", "p99_ulp"]
    text = "\n".join(gate.format_report(res))
    assert "IMPROVEMENTS (2)" in text and "ztnb/stable" in text and "PASS" in text


def test_missing_row_fails_and_new_row_does_not() -> None:
    df = base_frame().drop(index=3)  # float32 dropped
    res = gate.compare(make_baseline(), df, ENV)
    assert not res.passed and res.regressed_candidates == ("ztnb/stable",)
    assert res.missing == (("ztnb", "ztnb/stable", "float32", "cpu", "eager", "value", "all"),)
    text = "\n".join(gate.format_report(res))
    assert "MISSING: 1" in text and "float32" in text
    renamed = base_frame()
    renamed.loc[0, "candidate"] = "ztpoisson/stable2"
    res = gate.compare(make_baseline(), renamed, ENV)
    assert len(res.missing) == 1 and len(res.new) == 1 and not res.passed
    extra = pd.concat([base_frame(), frame(row("ztnb/softplus"))], ignore_index=True)
    res = gate.compare(make_baseline(), extra, ENV)
    assert res.passed and len(res.new) == 1
    assert "NEW: 1" in "\n".join(gate.format_report(res))


@pytest.mark.parametrize(("key", "value"), [("torch", "2.12.0"), ("device_kind", "NVIDIA H100")])
def test_environment_mismatch_fails_and_asks_for_a_new_baseline(key: str, value: str) -> None:
    env = {**ENV, key: value}
    res = gate.compare(make_baseline(), base_frame(), env)
    assert not res.passed and res.exit_code == 1
    assert res.env_mismatch == (gate.EnvMismatch(key, ENV[key], value),)
    text = "\n".join(gate.format_report(res, env_hint="ztbench baseline S"))
    assert "record a baseline for this environment" in text
    assert f"{ENV[key]} -> {value}" in text
    assert gate.verdict(res).startswith("FAIL: environment differs")


def test_other_environment_keys_do_not_matter() -> None:
    env = {**ENV, "python": "3.12.1", "suite_sha256": "zzz", "hostname": "ci"}
    assert gate.compare(make_baseline(), base_frame(), env).passed


def test_suite_change_is_a_note_only() -> None:
    res = gate.compare(make_baseline(), base_frame(), ENV, suite_sha256="other")
    assert res.passed and res.suite_changed
    assert "suite file changed" in "\n".join(gate.format_report(res))


def test_duplicate_summary_row_is_an_error() -> None:
    df = pd.concat([base_frame(), base_frame().iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="twice"):
        gate.compare(make_baseline(), df, ENV)


def test_regression_table_is_fixed_width_and_names_worst_input() -> None:
    res = gate.compare(make_baseline(), changed(max_ulp=400.0, worst_mu=1e-5), ENV)
    lines = gate.format_report(res)
    assert lines[0] == "REGRESSIONS (1)"
    header, rule, body = lines[1], lines[2], lines[3]
    for col in ("candidate", "dtype", "device", "quantity", "baseline", "now", "ratio"):
        assert col in header
    assert "worst input" in header
    assert set(rule.replace(" ", "")) == {"-"}
    assert body.split()[:7] == ["ztnb/stable", "float64", "cpu", "eager", "value", "all", "max_ulp"]
    assert "100x" in body and "k=3 mu=1e-05 theta=31.6" in body
    assert header.index("baseline") + len("baseline") == body.index(" 4  ") + 2  # right-aligned
    assert lines[-1] == "FAIL: 1 regression(s) in ztnb/stable"


# --------------------------------------------------------------------------- file format


def test_baseline_round_trips_bit_for_bit(tmp_path: Path) -> None:
    df = base_frame()
    df.loc[0, "mean_ulp"] = 0.1 + 0.2  # a float whose shortest repr is long
    b = make_baseline(df)
    path = tmp_path / "b" / "quick.json"
    gate.save_baseline(b, path)
    back = gate.load_baseline(path, "quick")
    assert back.suite == "quick" and back.suite_sha256 == "abc" and back.env == b.env
    assert list(back.rows) == list(b.rows)
    for key, r in b.rows.items():
        for f, v in r.items():
            w = back.rows[key][f]
            assert (isinstance(v, float) and math.isnan(v) and math.isnan(w)) or v == w, (key, f)
    gate.save_baseline(back, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()
    assert gate.compare(back, df, ENV).passed


def test_baseline_file_is_strict_json_one_row_per_line(tmp_path: Path) -> None:
    path = tmp_path / "quick.json"
    gate.save_baseline(make_baseline(), path)
    text = path.read_text()

    def no_constants(name: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(text, parse_constant=no_constants)
    assert list(data) == sorted(data)
    assert data["format"] == 2
    assert data["env"]["torch"] == "2.13.0"
    lines = text.splitlines()
    row_lines = [ln for ln in lines if ln.startswith('{"family"')]
    assert len(row_lines) == len(data["rows"]) == len(base_frame())
    naive = next(r for r in data["rows"] if r["candidate"] == "ztnb/naive")
    assert naive["max_ulp"] == "inf" and naive["failures"] == 12
    assert naive["worst_lam"] is None
    keys = [tuple(r[c] for c in gate.KEY_COLUMNS) for r in data["rows"]]
    assert keys == sorted(keys)
    assert list(data["rows"][0])[: len(gate.KEY_COLUMNS)] == list(gate.KEY_COLUMNS)


def _write(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "b.json"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def _good(tmp_path: Path) -> dict[str, Any]:
    p = tmp_path / "good.json"
    gate.save_baseline(make_baseline(), p)
    return json.loads(p.read_text())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("rows"), "missing key(s): rows"),
        (lambda d: d.update(format=3), "format must be 1 or 2, got 3"),
        (lambda d: d.update(extra=1), "unknown key(s): extra"),
        (lambda d: d["env"].pop("torch"), "env lacks 'torch'"),
        (lambda d: d.update(rows={}), "rows must be a list"),
        (lambda d: d["rows"][1].pop("p99_ulp"), "rows[1] lacks p99_ulp"),
        (lambda d: d["rows"][0].update(max_ulp="big"), "rows[0].max_ulp must be a number"),
        (lambda d: d["rows"][0].update(failures=-1), "rows[0].failures must be a non-negative"),
        (lambda d: d["rows"][0].update(failures=1.5), "rows[0].failures must be a non-negative"),
        (lambda d: d["rows"][0].update(candidate=""), "rows[0].candidate must be a non-empty"),
        (lambda d: d["rows"][0].update(colour="red"), "rows[0] has unknown field(s) colour"),
        (lambda d: d["rows"].append(dict(d["rows"][0])), "repeats the row"),
        (lambda d: d.update(rows=[]), "rows is empty: a baseline without rows gates nothing"),
        (lambda d: [r.update(max_ulp=None, p99_ulp=None) for r in d["rows"]],
         "every max_ulp and p99_ulp is null"),
        (lambda d: d["rows"][0].update(max_ulp=-1.0), "rows[0].max_ulp must be >= 0"),
        (lambda d: d["rows"][0].update(p99_ulp_best=-0.5), "rows[0].p99_ulp_best must be >= 0"),
        (lambda d: d["rows"][0].update(max_abs_err=-1e-3), "rows[0].max_abs_err must be >= 0"),
    ],
)
def test_malformed_baseline_is_one_line_user_error(tmp_path: Path, mutate, message: str) -> None:
    data = _good(tmp_path)
    mutate(data)
    path = _write(tmp_path, json.dumps(data))
    with pytest.raises(UserError) as info:
        gate.load_baseline(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "not valid JSON"),
        ('{"format": 1,', "not valid JSON"),
        ('{"format": 1, "rows": [{"max_ulp": Infinity}]}', "non-standard JSON constant"),
        ("[1, 2]", "top level must be a JSON object"),
        (b"\xff\xfe{}", "unreadable"),
    ],
)
def test_unparseable_baseline_is_one_line_user_error(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(UserError, match=r"baseline .*b\.json") as info:
        gate.load_baseline(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_or_directory_baseline_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist: record one with `ztbench baseline"):
        gate.load_baseline(tmp_path / "nope.json")
    with pytest.raises(UserError, match="unreadable"):
        gate.load_baseline(tmp_path)


def test_baseline_of_another_suite_is_user_error(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    gate.save_baseline(make_baseline(), path)
    with pytest.raises(UserError, match="recorded for suite 'quick', not 'default'"):
        gate.load_baseline(path, "default")


# --------------------------------------------------------------------------- CLI, bad input

SUITE = """\
name = "tiny"
dtypes = ["float64"]
[candidates]
include = ["ztpoisson/stable"]
[families.ztpoisson]
edges = [[1, 0.5], [2, 3.0]]
"""


@pytest.mark.parametrize("content", [None, "{not json", '{"format": 1}'])
def test_check_cli_bad_baseline_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None
) -> None:
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content)
    assert main(["check", str(suite), "--baseline", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ztbench check: error: baseline ")


def test_check_cli_default_baseline_path_is_under_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    monkeypatch.chdir(tmp_path)
    assert main(["check", str(suite)]) == 2
    err = capsys.readouterr().err
    assert "baseline results/baseline/tiny.json does not exist" in err


def test_check_cli_bad_suite_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_baseline_env_keeps_gated_and_informative_keys_only() -> None:
    env = {
        "ztbench": "0.1.0",
        "python": "3.11.9",
        "packages": {"torch": "2.13.0", "numpy": "2.1.3", "scipy": "1.14.1"},
        "torch": "2.13.0+cpu",
        "platform": "Linux-6.1",
        "cpu": "Some CPU",
        "cpu_count": 16,
        "torch_threads": 16,
        "cuda_available": False,
        "cuda_devices": [],
        "devices": ["cpu"],
        "device_kind": "cpu",
        "suite_path": "suites/quick.toml",
        "suite_sha256": "abc",
    }
    assert gate.baseline_env(env) == {
        "device_kind": "cpu",
        "numpy": "2.1.3",
        "python": "3.11.9",
        "torch": "2.13.0+cpu",
    }
    b = gate.Baseline.from_summary(base_frame(), "quick", "abc", env)
    assert gate.compare(b, base_frame(), {**env, "cpu": "Other", "torch_threads": 2}).passed


# --------------------------------------------------------------------------- envelope


def _one(**kw: Any) -> gate.Baseline:
    return make_baseline(frame(row("ztnb/stable", **kw)))


def test_envelope_takes_the_worst_of_each_field_and_keeps_the_best_for_improvements() -> None:
    low = _one(max_ulp=3.0, p99_ulp=1.0, failures=0, worst_k=7.0)
    high = _one(max_ulp=5.0, p99_ulp=0.5, failures=2, worst_k=9.0, status="ok")
    env = gate.envelope([low, high], ["default", "avx512"])
    (r,) = env.rows.values()
    assert (r["max_ulp"], r["p99_ulp"], r["failures"]) == (5.0, 1.0, 2)
    assert (r["max_ulp_best"], r["p99_ulp_best"]) == (3.0, 0.5)
    assert r["worst_k"] == 9.0  # the worst input of the recording with the largest max_ulp
    assert env.env[gate.CAPABILITIES_KEY] == "default,avx512"
    # 10 ulp is within 2x of the envelope's 5: no regression
    run = frame(row("ztnb/stable", max_ulp=10.0, p99_ulp=1.0, failures=2))
    assert gate.compare(env, run, ENV).passed
    # 2 ulp beats the 5 but not 2x the best recording's 3: no improvement to ratchet
    res = gate.compare(env, frame(row("ztnb/stable", max_ulp=2.0, p99_ulp=1.0, failures=2)), ENV)
    assert res.passed and res.improvements == ()
    # 0.5 ulp beats every recording by 2x and 1 ulp
    res = gate.compare(env, frame(row("ztnb/stable", max_ulp=0.5, p99_ulp=1.0, failures=2)), ENV)
    assert [(c.metric, c.baseline, c.now) for c in res.improvements] == [("max_ulp", 3.0, 0.5)]


def test_envelope_status_other_than_ok_wins_and_nan_only_where_every_recording_has_it() -> None:
    a = _one(max_ulp=math.nan, p99_ulp=math.nan, n=0)
    b = _one(max_ulp=2.0, p99_ulp=1.0, status="no gradient")
    r = next(iter(gate.envelope([a, b], ["default", "avx2"]).rows.values()))
    assert r["status"] == "no gradient" and r["max_ulp"] == 2.0 and r["max_ulp_best"] == 2.0
    r = next(iter(gate.envelope([a, a], ["default", "avx2"]).rows.values()))
    assert math.isnan(r["max_ulp"]) and math.isnan(r["max_ulp_best"])


def test_envelope_refuses_recordings_of_other_suites() -> None:
    other = gate.Baseline.from_summary(base_frame(), "quick", "def", ENV)
    with pytest.raises(ValueError, match="one suite file"):
        gate.envelope([make_baseline(), other], ["default", "avx2"])


def test_format_1_baselines_still_read_with_best_equal_to_the_value(tmp_path: Path) -> None:
    text = gate.baseline_to_json(make_baseline())
    doc = json.loads(text)
    doc["format"] = 1
    for r in doc["rows"]:
        for f in gate.BEST_FIELDS:
            del r[f]
    old = gate.load_baseline(_write(tmp_path, json.dumps(doc)))
    for r in old.rows.values():
        for m, best in zip(gate.GATED_METRICS, gate.BEST_FIELDS, strict=True):
            assert r[best] == r[m] or (math.isnan(r[best]) and math.isnan(r[m]))
    doc["format"] = 2  # format 2 requires them
    with pytest.raises(UserError, match="lacks max_ulp_best"):
        gate.load_baseline(_write(tmp_path, json.dumps(doc)))


@pytest.mark.parametrize(("dtype", "base", "now", "regressed"), [
    ("float32", 9.139e4, 2.161e5, False),  # half of float32's bits wrong: 2.36x is noise
    ("float32", 9.139e4, 4e5, True),       # beyond broken_ratio (4x)
    ("float32", 4000.0, 8100.0, True),     # below 2^12 ulp: max_ratio (2x) applies
    ("float32", 4096.0, 8200.0, False),    # from 2^12 ulp on: broken_ratio
    ("float64", 4096.0, 8200.0, True),     # float64's threshold is 2^26.5 ulp
    ("bfloat16", 16.0, 60.0, False),       # bfloat16's is 2^4
])  # fmt: skip
def test_broken_baselines_allow_a_larger_ratio(dtype: str, base: float, now: float,
                                              regressed: bool) -> None:  # fmt: skip
    """An error that already leaves half the format's bits wrong comes from cancellation
    that amplifies another CPU's last bits (a float32 formulation measured at 9.1e4 ulp on
    one CPU was at 2.2e5 on another): there a metric may grow by broken_ratio."""
    df = frame(row("ztnb/stable", dtype=dtype, max_ulp=base, p99_ulp=1.0))
    df2 = df.copy()
    df2.loc[0, "max_ulp"] = now
    res = gate.compare(make_baseline(df), df2, ENV)
    assert (not res.passed) is regressed


def test_broken_ratio_needs_the_dtype_threshold() -> None:
    """Without ``broken_from`` (the caller's 2^(p/2)) max_ratio applies."""
    assert gate.Tolerance().regressed(9.139e4, 2.161e5)
    assert not gate.Tolerance().regressed(9.139e4, 2.161e5, broken_from=2.0**12)
