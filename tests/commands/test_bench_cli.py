"""``ztbench bench`` end to end on the quick suite (tiny throughput sizes and budget)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ztbench.cli import main


@pytest.mark.slow
def test_bench_writes_everything_with_the_thread_count(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    rc = main(["bench", "suites/quick.toml", "-o", str(out), "--no-points", "--no-progress",
               "--throughput-sizes", "1e3", "--throughput-budget", "0.01",
               "--throughput-threads", "1", "--skip-impact"])  # fmt: skip
    assert rc in (0, None)
    for name in ("summary.csv", "summary.json", "thresholds.csv", "env.json",
                 "throughput.csv", "throughput.json", "REPORT.md"):  # fmt: skip
        assert (out / name).is_file(), name
    settings = json.loads((out / "throughput.json").read_text())["settings"]
    assert settings["threads"] == 1 and settings["budget_s"] == 0.01
    text = (out / "REPORT.md").read_text()
    assert "## The shipped loss against its goals" in text
    assert f"Report: {out}/REPORT.md" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["zero", "0"])
def test_bench_bad_thread_count_is_one_line(tmp_path: Path, capsys, value: str) -> None:
    argv = ["bench", "suites/quick.toml", "-o", str(tmp_path / "x"), "--no-progress",
            "--throughput-threads", value]  # fmt: skip
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--throughput-threads" in err[0]
    assert not (tmp_path / "x").exists()  # nothing ran
