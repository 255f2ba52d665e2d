"""``ztbench refs``: round trip of a good file; one line and exit 2 for each bad one."""

import subprocess
import sys

import pandas as pd
import pytest

from ztbench.cli import main
from ztbench.reference import compute_references


def test_good_file_round_trips_exactly(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("theta,note,k,mu\n2.5,first,3,0.1\n1e10,second,1,1e-30\n0.3,third,7,12.25\n")
    out = tmp_path / "out.csv"
    assert main(["refs", str(src), "-o", str(out), "--family", "ztnb", "--no-cache"]) == 0
    df = pd.read_csv(out, dtype={"note": str})
    assert list(df.columns) == [
        "theta",
        "note",
        "k",
        "mu",
        "nll",
        "nll_loss",
        "d_mu",
        "d_theta",
        "certified",
    ]
    assert df["note"].tolist() == ["first", "second", "third"]
    expected = compute_references(
        "ztnb",
        {"k": [3.0, 1.0, 7.0], "mu": [0.1, 1e-30, 12.25], "theta": [2.5, 1e10, 0.3]},
        cache_dir=False,
    )
    for q in ("nll", "nll_loss", "d_mu", "d_theta"):
        # repr floats read back bit for bit
        assert df[q].to_numpy().tobytes() == expected[q].to_numpy().tobytes()
    assert df["certified"].tolist() == [True, True, True]


BAD = {
    "missing column": ("k,mu\n1,2\n", "missing column(s) theta"),
    "non-numeric cell": ("k,mu,theta\n1,2,3\n2,x,3\n", "line 3: mu = 'x' is not a number"),
    "out of domain": ("k,mu,theta\n1,2,3\n1,2,1e11\n", "line 3: theta = 100000000000.0"),
    "non-integer k": ("k,mu,theta\n1.5,2,3\n", "line 2: k = 1.5"),
    "negative k": ("k,mu,theta\n-1,2,3\n", "line 2: k = -1.0"),
    "nan parameter": ("k,mu,theta\n1,nan,3\n", "line 2: mu = nan"),
    "empty file": ("", "not a readable CSV"),
    "header only": ("k,mu,theta\n", "no data rows"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_file_one_line_exit_2(tmp_path, case):
    text, needle = BAD[case]
    src = tmp_path / "in.csv"
    src.write_text(text)
    out = tmp_path / "out.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ztbench.cli",
            "refs",
            str(src),
            "-o",
            str(out),
            "--family",
            "ztnb",
            "--no-cache",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and str(src) in lines[0], proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--family", "ztfoo"], "unknown family 'ztfoo'"),
        (["--family", "ztnb", "--engine", "boost"], "unknown engine 'boost'"),
    ],
)
def test_bad_arguments_one_line_exit_2(tmp_path, capsys, args, needle):
    src = tmp_path / "in.csv"
    src.write_text("k,mu,theta\n1,2,3\n")
    rc = main(["refs", str(src), "-o", str(tmp_path / "o.csv"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0]


def test_missing_input_file(tmp_path, capsys):
    rc = main(
        ["refs", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o.csv"), "--family", "ztnb"]
    )
    assert rc == 2 and "no such file" in capsys.readouterr().err


def test_help_lists_verbs():
    proc = subprocess.run(
        [sys.executable, "-m", "ztbench.cli", "--help"], capture_output=True, text=True, check=True
    )
    for verb in ("refs", "bench-refs"):
        assert verb in proc.stdout
