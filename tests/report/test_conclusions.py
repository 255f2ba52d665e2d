"""What a results directory concludes, and the default suite's agreement with the full one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ztbench.report.conclusions import compare_conclusions, conclusions
from ztbench.report.data import load_results

ROOT = Path(__file__).resolve().parents[2]


def test_conclusions_of_a_hand_made_directory(tmp_path: Path) -> None:
    from test_report import _write_dir  # the report tests' hand-made directory (same folder)

    d = _write_dir(tmp_path / "run", throughput=False)
    th = pd.read_csv(d / "thresholds.csv")
    # the rule costs at most one ulp from t = 15 on (ztpoisson) and never (ztnb)
    th["region"] = "all"
    th["harmless_one_ulp"] = (th["candidate"] == "ztpoisson/threshold") & (th["t"] == 15.0)
    th.to_csv(d / "thresholds.csv", index=False)
    got = conclusions(load_results(d)).set_index(["kind", "subject"])["conclusion"]
    # value errors decide first, among what a model trains with (the peer's 1 ulp does not
    # count: no gradient); stable and expm1 tie on the value, stable has the smaller
    # gradient error
    assert got[("recommended", "ztpoisson float64 cpu")] == "ztpoisson/stable"
    assert got[("recommended", "ztpoisson float32 cpu")] == "ztpoisson/stable"
    assert got[("recommended", "ztnb float32 cpu")] == "ztnb/stable"
    assert got[("harmless", "ztpoisson/threshold float32 cpu all")] == "15"
    assert got[("harmless", "ztnb/threshold-w float64 cpu all")] == "none"
    assert not any(k == "goal" for k, _ in got.index)  # no goals.json: no goal rows


def test_compare_conclusions_lists_differences_and_missing_rows() -> None:
    a = pd.DataFrame([("recommended", "x", "p"), ("goal", "y", "met"), ("harmless", "z", "15")],
                     columns=["kind", "subject", "conclusion"])  # fmt: skip
    b = pd.DataFrame([("recommended", "x", "p"), ("goal", "y", "missed")],
                     columns=["kind", "subject", "conclusion"])  # fmt: skip
    diff = compare_conclusions(a, b)
    assert list(diff["subject"]) == ["y", "z"]
    assert diff.loc[0, "b"] == "missed" and pd.isna(diff.loc[1, "b"])
    assert compare_conclusions(a, a).empty


def _eager_torch_suite(tmp_path: Path, name: str) -> Path:
    """The shipped suite ``name`` restricted to what decides the conclusions: torch
    candidates in eager mode (recommendations and goals are judged in eager mode; peers,
    without gradients, rank after every torch candidate)."""
    path = tmp_path / f"{name}.toml"
    base = ROOT / "suites" / f"{name}.toml"
    path.write_text(f'base = "{base}"\nmodes = ["eager"]\n[candidates]\n'
                    'include = ["ztpoisson/*", "ztnb/*"]\nkinds = ["torch"]\n')  # fmt: skip
    return path


@pytest.mark.slow
def test_default_suite_concludes_what_the_full_suite_does(tmp_path: Path) -> None:
    """The default suite's points are few enough for `make bench`'s five minutes; they must
    still give the full suite's recommendations, goal verdicts and harmless thresholds."""
    from ztbench.cli import main

    found = {}
    for name in ("default", "full"):
        out = tmp_path / name
        rc = main(["accuracy", str(_eager_torch_suite(tmp_path, name)), "-o", str(out),
                   "--no-points", "--no-progress"])  # fmt: skip
        assert rc in (0, None)
        found[name] = conclusions(load_results(out))
    assert {"recommended", "goal", "harmless"} <= set(found["full"]["kind"])
    diff = compare_conclusions(found["default"], found["full"])
    assert diff.empty, "\n" + diff.to_string()
