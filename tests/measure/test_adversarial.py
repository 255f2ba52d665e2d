"""The adversarial search (ztbench.measure.adversarial, ``ztbench adversarial``).

Quick tests: the command on a tiny budget and its bad-input handling. The slow test runs
a real search on both families and holds the shipped loss, both forms, to the goals
(value <= 4 ulp, gradients <= 16 ulp), except where the point's cancellation is beyond
what double-double can carry: a double-double sum keeps ~2^-104 of its terms, so at c
bits of cancellation (terms / |result|) the bound is 2^(c - 51) ulp, times 4 of margin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ztbench.cli import main
from ztbench.measure import adversarial as A

GOALS = {"value": 4.0, "d_lam": 16.0, "d_mu": 16.0, "d_theta": 16.0}


def test_command_writes_points_and_prints_the_worst(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "adv.csv"
    rc = main(["adversarial", "--family", "ztpoisson", "--rounds", "1", "--restarts", "4",
               "--no-cache", "--workers", "1", "-o", str(out)])  # fmt: skip
    assert rc == 0
    df = pd.read_csv(out)
    assert {"k", "lam", "candidate", "quantity", "ulp_err", "reference"} <= set(df.columns)
    assert set(df["candidate"]) == {"ztpoisson/ztbench", "ztpoisson/ztbench-full"}
    assert "worst per quantity" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["adversarial", "--family", "nope"],
        ["adversarial", "--candidates", "ztnb/no-such"],
        ["adversarial", "--rounds", "0"],
        ["adversarial", "--candidates", "ztnb/scipy"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]


def test_crossing_refinement_lands_on_a_sign_change() -> None:
    """The float64 pair found by bisection brackets a sign change of the shipped loss."""
    starts = pd.DataFrame({"k": [50.0], "lam": [50.0]})
    pts = A._crossings("ztpoisson", starts)
    assert len(pts) > 0
    vals = A._shipped("ztpoisson", pts["k"].to_numpy(), [pts["lam"].to_numpy()])
    # value or d_lam: among the neighbours of each crossing both signs occur
    assert any((v > 0).any() and (v < 0).any() for v in vals)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_search_holds_the_shipped_loss_to_the_goals(family: str) -> None:
    res = A.search(family, rounds=2, restarts=32, keep=8, seed=3, workers=1)
    assert res["certified"].all()
    hard = res["cancellation_bits"] > 30
    assert hard.sum() > 10  # the refinement reaches the zero crossings
    goal = res["quantity"].map(GOALS).to_numpy()
    bound = np.maximum(goal, 4.0 * 2.0 ** (res["cancellation_bits"].to_numpy() - 51.0))
    bad = res[res["ulp_err"].to_numpy() > bound]
    assert bad.empty, bad.head().to_string()
