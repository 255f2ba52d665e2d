"""The command's own promises: one line and exit 2, whatever goes wrong inside a verb."""

from __future__ import annotations

import os

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


@pytest.mark.parametrize("delay", [0.1, 0.4, 0.8, 1.5])
def test_sigterm_during_start_up_is_one_line_never_a_traceback(tmp_path, delay) -> None:
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "ztbench.cli", "accuracy", "suites/quick.toml", "-o",
         str(tmp_path / "out"), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    # 130: ztbench's own "interrupted"; -15: killed before Python reached ztbench at all
    assert proc.returncode in (130, -signal.SIGTERM), (proc.returncode, err)
    assert "Traceback" not in err and "terminate" not in err and err.count("\n") <= 1, err


@pytest.mark.parametrize("given", [None, "4"])
def test_compile_threads_default_to_one_and_a_users_value_is_kept(monkeypatch, given) -> None:
    """torch.compile's inductor compiles in the calling process unless the user says
    otherwise (its worker pool costs minutes on a first `make bench`)."""
    if given is None:
        monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    else:
        monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", given)
    assert main(["candidates"]) == 0
    assert os.environ["TORCHINDUCTOR_COMPILE_THREADS"] == (given or "1")
