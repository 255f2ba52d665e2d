"""Reference cache: resumes after kill -9, detects corrupt files, never serves them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ztbench.reference import CHUNK_POINTS, compute_references


def _points(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "k": np.floor(np.exp(rng.uniform(0, np.log(1e4), n))),
            "mu": np.exp(rng.uniform(np.log(1e-3), np.log(1e3), n)),
            "theta": np.exp(rng.uniform(np.log(1e-2), np.log(1e8), n)),
        }
    )


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.ztref"))


@pytest.mark.slow
def test_kill_and_resume(tmp_path):
    n = 40 * CHUNK_POINTS
    points = _points(n)
    csv = tmp_path / "points.csv"
    points.to_csv(csv, index=False)
    cache = tmp_path / "cache"
    script = (
        "import sys, pandas as pd; from ztbench.reference import compute_references;"
        f"compute_references('ztnb', pd.read_csv({str(csv)!r}), cache_dir={str(cache)!r},"
        " progress=False, workers=1)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while len(_entries(cache)) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = len(_entries(cache))
    assert 3 <= done < n // CHUNK_POINTS, "the run was not interrupted half-way"

    resumed = compute_references("ztnb", points, cache_dir=cache, progress=False)
    stats = resumed.attrs["reference_stats"]
    assert stats["cached_points"] == done * CHUNK_POINTS
    assert stats["computed_points"] == n - done * CHUNK_POINTS
    fresh = compute_references("ztnb", points, cache_dir=False, progress=False)
    pd.testing.assert_frame_equal(resumed, fresh, check_exact=True)
    again = compute_references("ztnb", points, cache_dir=cache, progress=False)
    assert again.attrs["reference_stats"]["computed_points"] == 0


def _corrupt_flip(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[-20] ^= 0x01
    path.write_bytes(bytes(blob))


def _corrupt_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:50])


def _corrupt_header(path: Path) -> None:
    path.write_bytes(b"garbage" + path.read_bytes()[7:])


def test_corrupt_files_are_detected_and_recomputed(tmp_path, capsys):
    points = _points(3 * CHUNK_POINTS)
    fresh = compute_references("ztnb", points, cache_dir=tmp_path, progress=False)
    files = _entries(tmp_path)
    assert len(files) == 3
    for damage, path in zip(
        (_corrupt_flip, _corrupt_truncate, _corrupt_header), files, strict=True
    ):
        damage(path)
    capsys.readouterr()
    again = compute_references("ztnb", points, cache_dir=tmp_path, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("is corrupt" in line and "recomputing" in line for line in err)
    assert again.attrs["reference_stats"]["computed_points"] == 3 * CHUNK_POINTS
    pd.testing.assert_frame_equal(again, fresh, check_exact=True)
    # and the recomputed entries are whole again
    third = compute_references("ztnb", points, cache_dir=tmp_path, progress=False)
    assert third.attrs["reference_stats"]["computed_points"] == 0


def test_key_depends_on_engine_and_inputs(tmp_path):
    points = _points(10)
    compute_references("ztnb", points, cache_dir=tmp_path, progress=False)
    other = compute_references("ztnb", points, engine="mpmath", cache_dir=tmp_path, progress=False)
    assert other.attrs["reference_stats"]["computed_points"] == 10
    moved = points.copy()
    moved.loc[0, "mu"] = np.nextafter(moved.loc[0, "mu"], np.inf)
    out = compute_references("ztnb", moved, cache_dir=tmp_path, progress=False)
    assert out.attrs["reference_stats"]["computed_points"] == 10
