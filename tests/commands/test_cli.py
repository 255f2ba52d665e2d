"""The command's own promises: one line and exit 2, whatever goes wrong inside a verb."""

from __future__ import annotations

import pytest

import ztbench.commands.candidates as verb
from ztbench.cli import main


@pytest.mark.parametrize("missing", ["matplotlib", "pyarrow", "flint"])
def test_a_missing_extra_met_while_running_is_the_install_line(capsys, monkeypatch, missing):
    def needs(args):
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    monkeypatch.setattr(verb, "run", needs)
    assert main(["candidates"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'ztbench[bench]'" in err and missing in err


def test_another_missing_module_is_not_disguised(monkeypatch):
    def needs(args):
        raise ModuleNotFoundError("No module named 'not_ours'", name="not_ours")

    monkeypatch.setattr(verb, "run", needs)
    with pytest.raises(ModuleNotFoundError):
        main(["candidates"])
