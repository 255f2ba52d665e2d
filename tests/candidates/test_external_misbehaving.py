"""The user's code misbehaving while measured (sys.exit, a lost graph) never reads as a pass."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ztbench.cli import main
from ztbench.io.environment import cpu_capability

GOOD = '''
import torch

def ztp(k, lam):
    return lam + torch.log(-torch.expm1(-lam)) - k * torch.log(lam)
'''
# exits once it sees more points than the load-time probe passes
EXITS_WHILE_MEASURED = GOOD + '''
def _exit(code):
    import sys
    sys.exit(code)

_ok = ztp

def ztp(k, lam):
    if k.numel() > 16:
        _exit(0)
    return _ok(k, lam)
'''
SUITE = """\
name = "exits"
dtypes = ["float64"]
[candidates]
include = ["ztpoisson/stable"]
[[candidates.external]]
id = "mine/ztp"
target = "user_loss.py:ztp"
family = "ztpoisson"
form = "loss"
[families.ztpoisson]
grid = { k = [1, 2, 7], lam = { min = 0.01, max = 100, num = 12 } }
"""


def _project(tmp_path: Path, code: str) -> Path:
    (tmp_path / "user_loss.py").write_text(textwrap.dedent(code))
    suite = tmp_path / "exits.toml"
    suite.write_text(SUITE)
    return suite


def test_exit_while_measured_is_a_failed_row_and_the_gate_says_fail(tmp_path, capsys) -> None:
    suite = _project(tmp_path, GOOD)
    base = tmp_path / "base.json"
    here = cpu_capability()
    assert main(["baseline", str(suite), "-o", str(base), "--cpu-capabilities", here]) == 0
    (tmp_path / "user_loss.py").write_text(textwrap.dedent(EXITS_WHILE_MEASURED))
    capsys.readouterr()
    rc = main(["check", str(suite), "--baseline", str(base)])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert out.splitlines()[-1].startswith("FAIL:") and "mine/ztp" in out.splitlines()[-1]
    assert "SystemExit" in out or "unsupported" in out


@pytest.mark.parametrize("code", ["import sys\nsys.exit(0)\n", "import sys\nsys.exit(3)\n"])
def test_exit_at_import_is_one_line_and_exit_2(tmp_path, capsys, code: str) -> None:
    suite = _project(tmp_path, code + GOOD)
    for argv in (["accuracy", str(suite), "-o", str(tmp_path / "out")], ["check", str(suite)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "user_loss.py" in err and "SystemExit" in err, err
    assert not (tmp_path / "out").exists()


def test_exit_inside_a_verb_is_never_a_silent_exit_0(tmp_path, capsys, monkeypatch) -> None:
    import ztbench.commands.candidates as verb

    def leave(args):
        raise SystemExit(0)

    monkeypatch.setattr(verb, "run", leave)
    assert main(["candidates"]) == 2
    assert "sys.exit(0)" in capsys.readouterr().err


LOSES_GRAPH_WHILE_MEASURED = GOOD + '''
_ok = ztp

def ztp(k, lam):
    if k.numel() > 16:
        return _ok(k, lam).detach()
    return _ok(k, lam)
'''


def test_a_gradient_lost_while_measured_is_no_gradient_not_zero(tmp_path) -> None:
    import pandas as pd

    suite = _project(tmp_path, LOSES_GRAPH_WHILE_MEASURED)
    assert main(["accuracy", str(suite), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    s = pd.read_csv(tmp_path / "out" / "summary.csv")
    mine = s[(s["candidate"] == "mine/ztp") & (s["region"] == "all")]
    grad = mine[mine["quantity"] != "value"]
    assert len(grad) == 1 and grad["status"].iloc[0] == "no gradient", grad
    assert mine[mine["quantity"] == "value"]["status"].iloc[0] == "ok"


HANGS_WHILE_MEASURED = GOOD + '''
_ok = ztp

def ztp(k, lam):
    while k.numel() > 16:
        pass
    return _ok(k, lam)
'''


def test_a_target_that_hangs_while_measured_is_a_row_naming_it(tmp_path, monkeypatch) -> None:
    import pandas as pd

    import ztbench.measure.evaluate as evaluate

    monkeypatch.setattr(evaluate, "TARGET_TIMEOUT_S", 1.0)
    suite = _project(tmp_path, HANGS_WHILE_MEASURED)
    assert main(["accuracy", str(suite), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    s = pd.read_csv(tmp_path / "out" / "summary.csv")
    mine = s[(s["candidate"] == "mine/ztp") & (s["region"] == "all")]
    assert len(mine) and mine["status"].str.contains("user_loss.py:ztp").all(), mine["status"]
    assert mine["status"].str.contains("no result within 1 s").all()


INTERRUPTS_WHILE_MEASURED = GOOD + '''
_ok = ztp

def ztp(k, lam):
    if k.numel() > 16:
        raise KeyboardInterrupt
    return _ok(k, lam)
'''


def test_a_keyboard_interrupt_raised_by_the_users_code_is_not_read_as_ctrl_c(tmp_path, capsys
                                                                             ) -> None:  # fmt: skip
    suite = _project(tmp_path, INTERRUPTS_WHILE_MEASURED)
    rc = main(["accuracy", str(suite), "-o", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and "raised KeyboardInterrupt" in err and "interrupted" not in err


RETURNS_META = GOOD + '''
_ok = ztp

def ztp(k, lam):
    out = _ok(k, lam)
    return torch.empty_like(out, device="meta") if k.numel() > 16 else out
'''


def test_a_meta_tensor_from_the_users_code_is_not_a_missing_kernel(tmp_path) -> None:
    import pandas as pd

    suite = _project(tmp_path, RETURNS_META)
    assert main(["accuracy", str(suite), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    s = pd.read_csv(tmp_path / "out" / "summary.csv")
    row = s[(s["candidate"] == "mine/ztp") & (s["region"] == "all") & (s["quantity"] == "value")]
    status = str(row["status"].iloc[0])
    assert status.startswith("unsupported: user_loss.py:ztp:"), status
    assert "missing kernel" not in status and "meta tensor" in status, status
