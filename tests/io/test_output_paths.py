"""An output path replaces a regular file or nothing: links, FIFOs and devices are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ztbench.cli import main


def _input(tmp_path: Path) -> Path:
    inp = tmp_path / "in.csv"
    inp.write_text("k,lam\n1,0.5\n3,2.0\n")
    return inp


@pytest.mark.parametrize("kind", ["symlink", "fifo", "device"])
def test_special_output_paths_are_refused_and_left_alone(tmp_path: Path, capsys, kind: str):
    target = tmp_path / "target.csv"
    target.write_text("keep me\n")
    out = tmp_path / "out.csv"
    if kind == "symlink":
        out.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(out)
    else:
        out = Path("/dev/null")
    argv = ["refs", str(_input(tmp_path)), "--family", "ztpoisson", "-o", str(out), "--no-cache"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err, err
    assert target.read_text() == "keep me\n"
    if kind == "symlink":
        assert out.is_symlink()
    if kind == "fifo":
        assert out.exists() and not out.is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("verb", [["fit", "human_pbmc_1k_subset"],
                                  ["impact", "human_pbmc_1k_subset", "--family", "ztpoisson"]])
def test_fit_and_impact_check_their_output_before_fitting(tmp_path: Path, capsys, monkeypatch,
                                                          verb: list[str]) -> None:  # fmt: skip
    import ztbench.fit.run as fit_run

    def no_fit(*a, **k):
        raise AssertionError("fitted before checking the output path")

    monkeypatch.setattr(fit_run, "minimize", no_fit)
    a_file = tmp_path / "results"
    a_file.write_text("not a directory\n")
    extra = ["--no-progress"] if verb[0] == "impact" else []
    assert main([*verb, "-o", str(a_file), "--no-cache", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(a_file) in err, err
    assert a_file.read_text() == "not a directory\n"


def test_a_read_only_file_system_is_named_as_such(tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from ztbench.io.atomic import check_output_dir
    from ztbench.io.errors import UserError

    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_flag=os.ST_RDONLY))
    with pytest.raises(UserError, match="read-only file system"):
        check_output_dir(tmp_path / "out")
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_flag=0))
    with pytest.raises(UserError, match="permission denied"):
        check_output_dir(tmp_path / "out")


def test_an_empty_dataset_name_is_named_as_such(capsys) -> None:
    assert main(["fit", ""]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no dataset given" in err
