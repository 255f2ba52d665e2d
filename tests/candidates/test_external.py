"""The user's own formulations: [[candidates.external]], bad targets, the CLI entry points.

The user functions are written to temporary files here, as a user's repository would hold
them. Measured values are checked against the certified references (ztbench refs) or
against a hand-derived property (the error of a threshold rule), never against ztbench's
own candidates.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ztbench.candidates import candidate_of, load_suite
from ztbench.cli import main
from ztbench.core.dtypes import round_to
from ztbench.core.families import get_family
from ztbench.io.errors import UserError
from ztbench.measure.accuracy import run_accuracy
from ztbench.reference import compute_references

USER_CODE = '''
import math
import numpy as np
import torch

CONST = 3.0


def ztnb(k, mu, theta):
    """The ZTNB loss (no lgamma(k + 1)), written as a user would."""
    w = theta * torch.log1p(mu / theta)
    return (torch.lgamma(theta) - torch.lgamma(k + theta) + k * torch.log1p(theta / mu)
            + w + torch.log(-torch.expm1(-w)))


def ztnb_logs(k, log_mu, log_theta):
    return ztnb(k, torch.exp(log_mu), torch.exp(log_theta))


def nb_dist(k, total_count, logits):
    """log P(k | k >= 1) from torch.distributions.NegativeBinomial (torch-nb parameters)."""
    d = torch.distributions.NegativeBinomial(total_count=total_count, logits=logits,
                                             validate_args=False)
    return d.log_prob(k) - torch.log(-torch.expm1(d.log_prob(torch.zeros_like(k))))


def ztnb_log_prob(k, mu, theta):
    return -ztnb(k, mu, theta)


def ztp_threshold(k, lam, t=10.0):
    """ZTP loss with the published approximation log(e^lam - 1) ~ lam past lam > t."""
    exact = torch.log(torch.expm1(torch.clamp(lam, max=t)))
    return torch.where(lam > t, lam, exact) - k * torch.log(lam)


def scipy_ztnb_log_prob(k, mu, theta):
    """Full log P(k | k >= 1) from scipy (float64 numpy, no gradient)."""
    from scipy.stats import nbinom
    p = theta / (theta + mu)
    return nbinom.logpmf(k, theta, p) - nbinom.logsf(0, theta, p)


def raises(k, mu, theta):
    raise ValueError("mu must be a log\\nsecond line of the message")


def raises_for_large_k(k, mu, theta):
    if bool((k > 50).any()):
        raise RuntimeError("k too large for this table")
    return ztnb(k, mu, theta)


def scalar(k, mu, theta):
    return ztnb(k, mu, theta).sum()


def wrong_dtype(k, mu, theta):
    return ztnb(k, mu, theta).double()


def non_finite(k, mu, theta):
    return torch.log(mu - mu)


def detached(k, mu, theta):
    return ztnb(k, mu, theta).detach()


def a_list(k, mu, theta):
    return [1.0, 2.0, 3.0]


def no_default(k, lam, t):
    return ztp_threshold(k, lam, t)
'''

BASE_SUITE = """\
name = "ext"
dtypes = ["float64", "float32"]

[candidates]
{include}
{tables}

[families.ztnb]
grid = {{ k = [1, 2, 7], mu = {{ min = 0.01, max = 100, num = 5 }}, theta = [0.5, 3, 40] }}

[families.ztpoisson]
grid = {{ k = [1, 2, 7], lam = {{ min = 0.01, max = 100, num = 9 }} }}
"""


def ext_table(**fields: object) -> str:
    body = {"id": "mine/ztnb", "target": "code/user_loss.py:ztnb", "family": "ztnb",
            "form": "loss"} | fields  # fmt: skip
    lines = [f"{k} = {v}" if isinstance(v, list | dict) or k == "parameters" else f'{k} = "{v}"'
             for k, v in body.items() if v is not None]  # fmt: skip
    return "[[candidates.external]]\n" + "\n".join(lines)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's repository: code/user_loss.py, suites written next to it."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "user_loss.py").write_text(textwrap.dedent(USER_CODE))
    return tmp_path


def write_suite(root: Path, *tables: str, include: str = "", name: str = "s.toml") -> Path:
    path = root / name
    path.write_text(BASE_SUITE.format(include=include, tables="\n".join(tables)))
    return path


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------------ loading


def test_suite_declares_external_and_lists_it(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = load_suite(write_suite(project, ext_table()))
    assert suite.candidates == ("mine/ztnb",)  # no include: only the declared one
    assert suite.candidates_of("ztnb") == ("mine/ztnb",)
    cand = candidate_of(suite, "mine/ztnb")
    assert (cand.family, cand.form, cand.kind, cand.dtypes) == (
        "ztnb", "loss", "torch", ("float64", "float32"))  # fmt: skip
    assert cand.target == "code/user_loss.py:ztnb"

    assert main(["candidates", str(project / "s.toml"), "--family", "ztnb"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("ztnb/stable ") for ln in out)  # built-in ones alongside
    assert out[-1].startswith("mine/ztnb ") and "code/user_loss.py:ztnb" in out[-1]


def test_external_with_include_and_relative_path(project: Path) -> None:
    sub = project / "ci"
    sub.mkdir()
    table = ext_table(target="../code/user_loss.py:ztnb")
    suite = load_suite(write_suite(sub, table, include='include = ["ztnb/stable"]'))
    assert suite.candidates == ("ztnb/stable", "mine/ztnb")


def test_module_function_target(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(project / "code"))
    suite = load_suite(write_suite(project, ext_table(target="user_loss:ztnb")))
    assert candidate_of(suite, "mine/ztnb").target == "user_loss:ztnb"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"target": "no_such_module_zt:f"}, "module 'no_such_module_zt' not found"),
        ({"target": "code/missing.py:f"}, "file code/missing.py not found"),
        ({"target": "code/user_loss.py:nope"}, "code/user_loss.py has no attribute 'nope'"),
        ({"target": "code/user_loss.py:CONST"}, "is not callable (it is float)"),
        ({"target": "code/user_loss.py"}, "must be 'module:function'"),
        ({"target": "code/user_loss.py:raises"},
         "raised ValueError: mu must be a log"),
        ({"target": "code/user_loss.py:scalar"}, "returned shape (), expected (3,)"),
        ({"target": "code/user_loss.py:wrong_dtype"}, "in float32 returned dtype float64"),
        ({"target": "code/user_loss.py:non_finite"}, "returned non-finite values"),
        ({"target": "code/user_loss.py:detached"}, "does not depend on its parameters"),
        ({"target": "code/user_loss.py:a_list"}, "returned list, not a tensor"),
    ],
)  # fmt: skip
def test_bad_target_one_line_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str], fields: dict, expected: str
) -> None:
    path = write_suite(project, ext_table(**fields))
    err = one_line_error(capsys, ["candidates", str(path)])
    assert f"{path}: candidates.external[0].target: " in err
    assert expected in err, err
    assert "second line" not in err


def test_import_error_inside_the_module(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "code" / "broken.py").write_text("import not_installed_dep_zt\n")
    path = write_suite(project, ext_table(target="code/broken.py:f"))
    err = one_line_error(capsys, ["candidates", str(path)])
    assert "importing code/broken.py raised ModuleNotFoundError: No module named" in err


@pytest.mark.parametrize(
    ("fields", "extra", "expected"),
    [
        ({"colour": "red"}, "", "candidates.external[0].colour: unknown key"),
        ({"form": None}, "", "candidates.external[0].form: missing required key"),
        ({"form": "nll"}, "", "form: unknown value 'nll' (known: loss, full)"),
        ({"sign": "neg"}, "", "sign: unknown value 'neg'"),
        ({"kind": "jax"}, "", "kind: unknown value 'jax'"),
        ({"id": "ztnb/stable"}, "", "'ztnb/stable' is a built-in candidate's id"),
        ({"id": "noslash"}, "", "id: 'noslash' must be 'namespace/name'"),
        ({"id": "ztpoisson/mine"}, "", "names family ztpoisson but family = 'ztnb'"),
        ({}, "DUP", "'mine/ztnb' is declared twice"),
        ({"dtypes": ["float16"]}, "", "dtype 'float16' is not one of the suite's dtypes"),
        ({"dtypes": ["float64", "float64"]}, "", "dtype 'float64' listed twice"),
        ({"kind": "numpy", "dtypes": ["float32"]}, "", "runs in float64 only"),
        ({"parameters": '{ lam = "natural" }'}, "", "ztnb has no parameter 'lam'"),
        ({"parameters": '{ mu = "sqrt" }'}, "", "mu = 'sqrt': must be one of"),
        ({"family": "ztpoisson", "id": "mine/ztp", "target": "code/user_loss.py:no_default",
          "threshold": "t"}, "", "keyword argument 't' needs a numeric default"),
        ({"family": "ztpoisson", "id": "mine/ztp", "target": "code/user_loss.py:ztp_threshold",
          "threshold": "tt"}, "", "has no keyword argument 'tt'"),
    ],
)  # fmt: skip
def test_bad_declaration_one_line_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str], fields: dict, extra: str, expected: str
) -> None:
    tables = [ext_table(**fields)] + ([ext_table(**fields)] if extra == "DUP" else [])
    path = write_suite(project, *tables)
    err = one_line_error(capsys, ["candidates", str(path)])
    assert err.startswith(f"ztbench candidates: error: {path}: candidates.external"), err
    assert expected in err, err


def test_single_table_is_not_an_array(project: Path) -> None:
    path = project / "s.toml"
    path.write_text(
        write_suite(project, "").read_text().replace(
            "[candidates]\n", '[candidates]\nexternal = { id = "a/b" }\n'
        )
    )
    with pytest.raises(UserError, match=r"candidates\.external: must be an array of tables"):
        load_suite(path)


# ---------------------------------------------------------------------- measuring


def refs_at(family: str, points: dict[str, np.ndarray], cache: Path) -> pd.DataFrame:
    return compute_references(get_family(family), pd.DataFrame(points), cache_dir=cache,
                              progress=False)  # fmt: skip


def test_numpy_log_prob_full_measured_against_references(project: Path, tmp_path: Path) -> None:
    """kind numpy, sign log_prob, form full: scipy's ZTNB log-pmf is within 1e-12 nats of
    the certified full NLL at moderate points; declared with the wrong sign it is not."""
    good = ext_table(id="mine/scipy", target="code/user_loss.py:scipy_ztnb_log_prob",
                     form="full", sign="log_prob", kind="numpy")  # fmt: skip
    wrong = ext_table(id="mine/scipy-unsigned", target="code/user_loss.py:scipy_ztnb_log_prob",
                      form="full", kind="numpy")  # fmt: skip
    suite = load_suite(write_suite(project, good, wrong))
    full = run_accuracy(suite, None, cache_dir=tmp_path / "cache", progress=False).summary
    s = full[(full["region"] == "all") & (full["quantity"] == "value")]
    s = s.set_index(["candidate", "dtype"])
    assert s.loc[("mine/scipy", "float64"), "status"] == "ok"
    assert s.loc[("mine/scipy", "float64"), "n"] == 45
    assert s.loc[("mine/scipy", "float64"), "max_abs_err"] < 1e-12
    assert s.loc[("mine/scipy-unsigned", "float64"), "max_abs_err"] > 1.0
    assert s.loc[("mine/scipy", "float32"), "status"].startswith("unsupported: dtype")
    grads = full[(full["quantity"] != "value") & (full["dtype"] == "float64")]
    assert set(grads["status"]) == {"no gradient"}


def test_torch_threshold_keyword_swept(project: Path, tmp_path: Path) -> None:
    """threshold = "t": the default (t = 10) is measured, [thresholds] sweeps t; the rule's
    error at lam just past t is log(1 - e^-lam) ~ e^-t nats (hand-derived)."""
    table = ext_table(id="mine/ztp", family="ztpoisson", target="code/user_loss.py:ztp_threshold",
                      threshold="t")  # fmt: skip
    path = write_suite(project, table)
    path.write_text(path.read_text() + '\n[thresholds]\n"mine/ztp" = [2.0, 30.0]\n')
    suite = load_suite(path)
    assert candidate_of(suite, "mine/ztp").threshold == 10.0
    result = run_accuracy(suite, None, cache_dir=tmp_path / "cache", progress=False)
    s = result.summary
    row = s[(s["quantity"] == "value") & (s["region"] == "all") & (s["dtype"] == "float64")]
    assert row["threshold"].iloc[0] == 10.0 and row["status"].iloc[0] == "ok"
    sw = result.thresholds[result.thresholds["dtype"] == "float64"].set_index("t")
    assert sorted(sw.index) == [2.0, 30.0]
    # lam grid 0.01 .. 100: the largest lam below 30 that passes t = 2 is 100**(6/8)*...;
    # the abs error past t is -log(1 - e^-lam) <= -log(1 - e^-t)
    assert sw.loc[2.0, "max_abs_err"] <= -math.log(-math.expm1(-2.0)) * 1.0001
    assert sw.loc[2.0, "max_abs_err"] > 1e-3
    assert sw.loc[30.0, "max_abs_err"] < 1e-12


def test_user_code_failing_at_run_time_is_a_status(project: Path, tmp_path: Path) -> None:
    table = ext_table(id="mine/partial", target="code/user_loss.py:raises_for_large_k",
                      dtypes=["float64"])  # fmt: skip
    path = write_suite(project, table)
    path.write_text(path.read_text().replace("k = [1, 2, 7]", "k = [1, 2, 70]", 1))
    s = run_accuracy(load_suite(path), None, cache_dir=tmp_path / "c", progress=False).summary
    st = set(s[s["dtype"] == "float64"]["status"])
    assert st == {"unsupported: code/user_loss.py:raises_for_large_k: RuntimeError: "
                  "k too large for this table"}  # fmt: skip


def test_eval_module_function(project: Path, tmp_path: Path) -> None:
    """`ztbench eval file.py:function INPUT.csv --family ztnb`: values and autograd
    gradients of the user's function at the rounded inputs, close to the references."""
    inp = tmp_path / "in.csv"
    inp.write_text("k,mu,theta,tag\n1,0.3,2.5,a\n4,12.0,0.7,b\n2,1e-3,50,c\n")
    out = tmp_path / "out.csv"
    target = str(project / "code" / "user_loss.py") + ":ztnb"
    argv = ["eval", target, str(inp), "--family", "ztnb", "--dtype", "float32", "-o", str(out)]
    assert main(argv) == 0
    df = pd.read_csv(out)
    assert list(df["tag"]) == ["a", "b", "c"]
    pts = {c: round_to(np.array(v, dtype=float), "float32") for c, v in
           {"k": [1, 4, 2], "mu": [0.3, 12.0, 1e-3], "theta": [2.5, 0.7, 50]}.items()}
    assert np.array_equal(df["mu"].to_numpy(), pts["mu"])
    ref = refs_at("ztnb", pts, tmp_path / "cache")
    np.testing.assert_allclose(df["value"], ref["nll_loss"], rtol=1e-5)
    np.testing.assert_allclose(df["d_mu"], ref["d_mu"], rtol=1e-4)
    # d_theta at theta = 50, mu = 1e-3 cancels in float32 (3e-4 relative, measured)
    np.testing.assert_allclose(df["d_theta"], ref["d_theta"], rtol=1e-3)


def test_eval_target_needs_family_and_a_good_target(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = tmp_path / "in.csv"
    inp.write_text("k,mu,theta\n1,0.3,2.5\n")
    target = str(project / "code" / "user_loss.py") + ":ztnb"
    err = one_line_error(capsys, ["eval", target, str(inp), "-o", str(tmp_path / "o.csv")])
    assert "give its family with --family" in err
    bad = str(project / "code" / "user_loss.py") + ":detached"
    err = one_line_error(capsys, ["eval", bad, str(inp), "--family", "ztnb",
                                  "-o", str(tmp_path / "o.csv")])  # fmt: skip
    assert "does not depend on its parameters" in err
    err = one_line_error(capsys, ["eval", target, str(inp), "--family", "ztnb",
                                  "--parameters", "mu", "-o", str(tmp_path / "o.csv")])  # fmt: skip
    assert "--parameters: 'mu' is not 'parameter=natural|log'" in err
    assert not (tmp_path / "o.csv").exists()


def test_accuracy_quick_look_candidate(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite(project, "", include='include = ["ztnb/stable", "ztpoisson/stable"]')
    out = tmp_path / "res"
    target = str(project / "code" / "user_loss.py") + ":ztnb_log_prob"
    argv = ["accuracy", str(suite), "--candidate", target, "--family", "ztnb", "--sign",
            "log_prob", "-o", str(out), "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert main(argv) == 0
    s = pd.read_csv(out / "summary.csv")
    assert set(s["candidate"]) == {"user/ztnb_log_prob"}
    v = s[(s["quantity"] == "value") & (s["dtype"] == "float64")]
    assert (v["status"] == "ok").all() and v["max_abs_err"].max() < 1e-12
    env = (out / "env.json").read_text()
    assert '"target": "' + target in env and "source_sha256" in env
    capsys.readouterr()
    err = one_line_error(capsys, ["accuracy", str(suite), "--candidate", target])
    assert "give --family" in err


def test_external_candidate_in_the_report(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report marks the user's candidate as external, and its worst-case command
    (`ztbench eval <file>:<function> --family ... --parameters ...`) reproduces, bit for
    bit, the value the run recorded at that point."""
    import shlex

    from ztbench.report.data import load_results
    from ztbench.report.tables import BoardKey, leaderboard

    table = ext_table(id="mine/logs", target="code/user_loss.py:ztnb_logs",
                      parameters='{ mu = "log", theta = "log" }')  # fmt: skip
    monkeypatch.chdir(project)  # the command names the file relative to where ztbench ran
    suite = load_suite(write_suite(project, table))
    out = tmp_path / "res"
    run_accuracy(suite, out, cache_dir=tmp_path / "c", progress=False)
    board = leaderboard(load_results(out), BoardKey("ztnb", "float32", "cpu"))
    assert board.set_index("candidate").loc["mine/logs", "kind"] == "torch, external"
    assert main(["report", str(out)]) == 0
    cmds = [ln.split("`")[1] for ln in (out / "REPORT.md").read_text().splitlines()
            if "`ztbench eval " in ln and "float32.csv" in ln]  # fmt: skip
    assert cmds and cmds[0].startswith(
        "ztbench eval code/user_loss.py:ztnb_logs --family ztnb --parameters mu=log,theta=log ")
    argv = shlex.split(cmds[0])[1:]
    argv[argv.index("out.csv")] = str(tmp_path / "o.csv")
    assert main(argv) == 0
    got = pd.read_csv(tmp_path / "o.csv", dtype=str)
    pts = pd.read_parquet(out / "points.parquet")
    pts = pts[(pts["dtype"] == "float32") & (pts["quantity"] == "value")]
    row = pts[(pts["k"] == float(got["k"][0])) & (pts["log_mu"] == float(got["log_mu"][0]))
              & (pts["log_theta"] == float(got["log_theta"][0]))]  # fmt: skip
    assert len(row) == 1 and float(got["value"][0]) == row["computed"].iloc[0]


def test_bfloat16_probe_and_run(project: Path, tmp_path: Path) -> None:
    path = write_suite(project, ext_table())
    path.write_text(path.read_text().replace('["float64", "float32"]', '["bfloat16"]'))
    suite = load_suite(path)
    assert candidate_of(suite, "mine/ztnb").dtypes == ("bfloat16",)
    s = run_accuracy(suite, None, cache_dir=tmp_path / "c", progress=False).summary
    assert (s["status"] == "ok").all()
    assert torch.get_default_dtype() == torch.float32


def measured_float64(project: Path, tmp_path: Path, table: str, cid: str):  # type: ignore[no-untyped-def]
    """The candidate ``cid`` of a suite with ``table``, and its float64 rows over all
    points, indexed by quantity."""
    suite = load_suite(write_suite(project, table))
    s = run_accuracy(suite, None, cache_dir=tmp_path / "c", progress=False).summary
    return candidate_of(suite, cid), s[(s["region"] == "all") & (s["dtype"] == "float64")
                                   ].set_index("quantity")  # fmt: skip


def test_log_parameters_measured_in_their_own_parameterisation(
    project: Path, tmp_path: Path
) -> None:
    """parameters = { mu = "log", theta = "log" }: the function gets log_mu and log_theta
    rounded to the dtype, and is measured on d_log_mu, d_log_theta against the certified
    p d/dp at p = exp(log_p); in float64 its values are within 1e-12 nats there."""
    table = ext_table(id="mine/logs", target="code/user_loss.py:ztnb_logs",
                      parameters='{ mu = "log", theta = "log" }')  # fmt: skip
    cand, s = measured_float64(project, tmp_path, table, "mine/logs")
    assert cand.columns == ("k", "log_mu", "log_theta")
    assert cand.gradients == ("d_log_mu", "d_log_theta")
    assert set(s.index) == {"value", "d_log_mu", "d_log_theta"}
    assert (s["status"] == "ok").all()
    assert s.loc["value", "max_abs_err"] < 1e-12
    assert s.loc["d_log_mu", "max_abs_err"] < 1e-10


def mp_ztnb_nll(k: int, total_count: float, logits: float) -> object:
    """Full ZTNB NLL at theta = total_count, mu = total_count e^logits, in mpmath (written
    here from the NB pmf, independently of ztbench's reference formulas)."""
    import mpmath as mp

    theta = mp.mpf(total_count)
    mu = theta * mp.exp(mp.mpf(logits))
    logpmf = (mp.loggamma(k + theta) - mp.loggamma(theta) - mp.loggamma(k + 1)
              + theta * mp.log(theta / (theta + mu)) + k * mp.log(mu / (theta + mu)))  # fmt: skip
    return -(logpmf - mp.log(1 - (theta / (theta + mu)) ** theta))


def test_torch_nb_references_against_mpmath(tmp_path: Path) -> None:
    """The torch-nb parameterisation's references: the NLL at (total_count, logits) and
    its derivatives in those parameters, against mpmath at 60 digits (numerical
    differentiation of the pmf written above)."""
    import mpmath as mp

    from ztbench.core.families import TORCH_NB

    pts = {"k": np.array([1.0, 3.0, 40.0, 2.0]), "total_count": np.array([0.7, 5.0, 120.0, 3e4]),
           "logits": np.array([-2.5, 0.3, 1.1, -9.0])}  # fmt: skip
    ref = compute_references(get_family("ztnb"), pd.DataFrame(pts), cache_dir=tmp_path,
                             progress=False, log_params=(TORCH_NB,))  # fmt: skip
    assert list(ref.columns) == ["nll", "nll_loss", "d_total_count", "d_logits", "certified"]
    assert ref["certified"].all()
    with mp.workdps(60):
        for i in range(4):
            k, tc, lg = int(pts["k"][i]), pts["total_count"][i], pts["logits"][i]
            nll = mp_ztnb_nll(k, tc, lg)
            assert abs(ref["nll"][i] - float(nll)) <= 1e-15 * abs(float(nll))
            d_tc = mp.diff(lambda t, k=k, lg=lg: mp_ztnb_nll(k, t, lg), mp.mpf(tc))
            d_lg = mp.diff(lambda g, k=k, tc=tc: mp_ztnb_nll(k, tc, g), mp.mpf(lg))
            assert abs(ref["d_total_count"][i] - float(d_tc)) <= 1e-13 * abs(float(d_tc))
            assert abs(ref["d_logits"][i] - float(d_lg)) <= 1e-13 * abs(float(d_lg))


def test_torch_nb_parameterisation(project: Path, tmp_path: Path) -> None:
    """parameters = "torch-nb": the function gets (total_count, logits) rounded to the
    dtype and is measured on d_total_count, d_logits; torch.distributions'
    NegativeBinomial is within 1e-11 nats of the references in float64 on these points."""
    table = ext_table(id="mine/nb-dist", target="code/user_loss.py:nb_dist", form="full",
                      sign="log_prob", parameters='"torch-nb"')  # fmt: skip
    cand, s = measured_float64(project, tmp_path, table, "mine/nb-dist")
    assert cand.columns == ("k", "total_count", "logits")
    assert cand.gradients == ("d_total_count", "d_logits")
    assert set(s.index) == {"value", "d_total_count", "d_logits"}
    assert (s["status"] == "ok").all() and (s["failures"] == 0).all()
    assert s.loc["value", "max_abs_err"] < 1e-11
    assert s.loc["d_logits", "max_abs_err"] < 1e-9


def test_torch_nb_is_ztnb_only(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = ext_table(id="mine/ztp", family="ztpoisson", target="code/user_loss.py:ztp_threshold",
                      parameters='"torch-nb"')  # fmt: skip
    err = one_line_error(capsys, ["candidates", str(write_suite(project, table))])
    assert "candidates.external[0].parameters: \"torch-nb\" (total_count, logits) is a ztnb" in err


def test_child_suite_inherits_external_candidates(project: Path) -> None:
    """A suite whose [candidates] come from its base gets the base's external candidates,
    with file targets resolved from the base's directory."""
    sub = project / "ci"
    sub.mkdir()
    write_suite(sub, ext_table(target="../code/user_loss.py:ztnb"), name="parent.toml")
    child = project / "child.toml"
    child.write_text('base = "ci/parent.toml"\nname = "child"\ndtypes = ["float32"]\n')
    suite = load_suite(child)
    assert suite.candidates == ("mine/ztnb",)
    assert candidate_of(suite, "mine/ztnb").target == "../code/user_loss.py:ztnb"


def test_compiled_cache_is_per_function_not_per_id() -> None:
    """Two suites may declare different functions under one id: torch.compile's cache must
    not hand the first one's compiled code to the second."""
    import dataclasses as dc

    from ztbench.candidates import get_candidate
    from ztbench.candidates.execution import compiled

    a = get_candidate("ztnb/stable")
    b = dc.replace(a, fn=get_candidate("ztnb/naive").fn)
    assert compiled(a) is not compiled(b)
    assert compiled(a) is compiled(a)


def test_throughput_times_external_candidates(project: Path, tmp_path: Path) -> None:
    """The throughput verb times external candidates in their own parameterisation (torch
    with log and torch-nb parameters, forward and backward; numpy, forward) beside naive."""
    tables = [
        ext_table(id="mine/logs", target="code/user_loss.py:ztnb_logs",
                  parameters='{ mu = "log", theta = "log" }'),
        ext_table(id="mine/nb-dist", target="code/user_loss.py:nb_dist", form="full",
                  sign="log_prob", parameters='"torch-nb"'),
        ext_table(id="mine/scipy", target="code/user_loss.py:scipy_ztnb_log_prob",
                  form="full", sign="log_prob", kind="numpy"),
    ]  # fmt: skip
    out = tmp_path / "tp"
    argv = ["throughput", str(write_suite(project, *tables)), "-o", str(out), "--sizes", "1e3",
            "--budget", "0.001", "--min-rounds", "1", "--max-rounds", "2", "--dtypes", "float64",
            "--no-memory", "--no-progress", "--threads", "1",
            "--inputs", "log-uniform"]  # fmt: skip
    assert main(argv) == 0
    t = pd.read_csv(out / "throughput.csv").set_index(["candidate", "pass"])
    for cid in ("mine/logs", "mine/nb-dist"):
        for pass_ in ("forward", "forward+backward"):
            assert t.loc[(cid, pass_), "status"] == "ok", (cid, pass_)
    assert t.loc[("mine/scipy", "forward"), "status"] == "ok"
    assert "ztnb/naive" in t.index.get_level_values(0)
    assert "external_candidates" in (out / "env.json").read_text()
