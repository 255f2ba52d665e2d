"""Bad input and faults, class by class: one line on stderr and exit code 2, nothing half
written, nothing left behind (the README's "Bad input and faults" table points here)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from faultkit import TINY_SUITE, assert_one_line, run_cli, temporaries, tree

from ztbench.candidates import load_suite
from ztbench.io import atomic, budget
from ztbench.reference.cache import MAGIC

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SUITE)
    return path


def _suite_with(tmp_path: Path, families: str, extra: str = "") -> Path:
    path = tmp_path / "big.toml"
    head = 'dtypes = ["float64"]\n[candidates]\ninclude = ["ztpoisson/*"]\nkinds = ["torch"]\n'
    path.write_text(f"{head}{extra}\n[families.ztpoisson]\n{families}\n")
    return path


# ------------------------------------------------------------------------ bounded work

HUGE = {
    "grid of 1e12 points": "grid = { k = { min = 1, max = 1e7, num = 1000000 }, "
    "lam = { min = 1e-30, max = 1e9, num = 1000000 } }",
    "one axis of 1e12": "grid = { k = [1], lam = { min = 1e-30, max = 1e9, num = 1000000000000 } }",
    "3e8 random points": "random = { n = 300000000, k = { min = 1, max = 10 }, "
    "lam = { min = 1, max = 10 } }",
    "int64-max samples": "random = { n = 9223372036854775807, k = { min = 1, max = 10 }, "
    "lam = { min = 1, max = 10 } }",
    "huge ulps": "near_thresholds = { k = [1], ulps = 1000000000000 }",
    "huge decade": "near_thresholds = { k = [1], decade = 1000000000000 }",
    "sum over blocks": "grid = [{ k = [1, 2], lam = { min = 1, max = 10, num = 6000000 } }]",
}


@pytest.mark.parametrize("case", sorted(HUGE))
def test_suite_sizes_past_the_budget_are_refused_before_allocation(tmp_path, case):
    suite = _suite_with(tmp_path, HUGE[case])
    run = run_cli(["accuracy", str(suite), "-o", str(tmp_path / "out"), "--no-progress"])
    line = assert_one_line(run, "asks for", "over the budget of 10,000,000", "--max-points")
    assert str(suite) in line
    assert not (tmp_path / "out").exists()


def test_a_huge_threshold_num_is_refused(tmp_path):
    suite = _suite_with(
        tmp_path,
        "edges = [[1, 1.0]]",
        '[thresholds]\n"ztpoisson/threshold" = { min = 1.0, max = 50.0, num = 1000000000000 }',
    )
    run = run_cli(["accuracy", str(suite), "-o", str(tmp_path / "out"), "--no-progress"])
    assert_one_line(run, "thresholds", "1,000,000,000,000", "--max-points")


def test_max_points_raises_the_limit(tmp_path):
    # 5000 x 5000 = 25 million points: over the default, within a raised limit (loading
    # allocates nothing, so this is cheap)
    body = "grid = { k = [1], lam = { min = 1, max = 10, num = 5000 } }\n"
    suite = _suite_with(tmp_path, body.replace("k = [1]", "k = { min = 1, max = 1e7, num = 5000 }"))
    with pytest.raises(Exception, match="25,000,000 points"):
        load_suite(suite)
    with budget.limited(30_000_000):
        assert load_suite(suite).families["ztpoisson"].grids[0].columns["lam"].num == 5000
    run = run_cli(["accuracy", str(suite), "--max-points", "zero", "-o", str(tmp_path / "o")])
    assert_one_line(run, "--max-points")


@pytest.mark.parametrize(
    "argv",
    [
        ["bench-refs", "--points", "0"],
        ["bench-refs", "--points", "-5"],
        ["bench-refs", "--mpmath-points", "-5"],
        ["bench-refs", "--mpmath-points", "-1"],
        ["bench-refs", "--mpmath-points", "0"],
        ["bench-refs", "--points", "1e12"],
        ["throughput", "suites/quick.toml", "--peer-max-size", "nan"],
        ["throughput", "suites/quick.toml", "--peer-max-size", "inf"],
        ["throughput", "suites/quick.toml", "--sizes", "1e15"],
        ["throughput", "suites/quick.toml", "--budget", "nan"],
        ["bench", "suites/quick.toml", "--throughput-budget", "-1"],
        ["bench", "suites/quick.toml", "--throughput-sizes", "1e15"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_numeric_flags_are_one_line(tmp_path, argv, monkeypatch):
    monkeypatch.chdir(REPO)
    run = run_cli([*argv, *(["-o", str(tmp_path / "o")] if argv[0] != "bench-refs" else [])])
    assert_one_line(run, argv[-2] if argv[-2].startswith("--") else "")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------ output paths


def test_output_paths_of_the_wrong_kind(tmp_path, tiny, monkeypatch):
    monkeypatch.chdir(REPO)
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me\n")
    a_dir = tmp_path / "a_dir"
    a_dir.mkdir()
    assert_one_line(run_cli(["accuracy", str(tiny), "-o", str(a_file)]), str(a_file))
    assert_one_line(run_cli(["accuracy", str(tiny), "-o", str(a_file / "sub")]), "is a file")
    assert_one_line(run_cli(["throughput", str(tiny), "-o", str(a_file)]), str(a_file))
    assert_one_line(run_cli(["baseline", str(tiny), "-o", str(a_dir)]), "is a directory")
    assert_one_line(run_cli(["baseline", str(tiny), "-o", str(tiny)]), "is also an input")
    assert_one_line(run_cli(["bench", str(tiny), "-o", str(a_file)]), str(a_file))
    assert a_file.read_text() == "keep me\n" and list(a_dir.iterdir()) == []


def test_unwritable_output_directory_is_refused_before_the_run(tmp_path, tiny, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access  # tests may run as root, whom chmod does not stop: deny here
    monkeypatch.setattr(
        atomic.os, "access", lambda p, m: False if Path(p) == locked else real_access(p, m)
    )
    run = run_cli(["accuracy", str(tiny), "-o", str(locked / "out"), "--no-cache"])
    assert_one_line(run, str(locked), "permission denied")
    src = _points_csv(tmp_path / "in.csv")
    run = run_cli(["eval", "ztpoisson/stable", str(src), "-o", str(locked / "o.csv")])
    assert_one_line(run, "permission denied")
    assert list(locked.iterdir()) == []


def _points_csv(path: Path, n: int = 5, family: str = "ztpoisson") -> Path:
    rng = np.random.default_rng(0)
    k = np.floor(np.exp(rng.uniform(0, np.log(1e3), n)))
    if family == "ztpoisson":
        df = pd.DataFrame({"k": k, "lam": np.exp(rng.uniform(np.log(1e-3), np.log(1e3), n))})
    else:
        df = pd.DataFrame({"k": k, "mu": np.exp(rng.uniform(-5, 5, n)),
                           "theta": np.exp(rng.uniform(-5, 5, n))})  # fmt: skip
    df.to_csv(path, index=False)
    return path


def test_cache_directory_that_is_a_file_or_unreadable(tmp_path, monkeypatch):
    src = _points_csv(tmp_path / "in.csv")
    a_file = tmp_path / "cache"
    a_file.write_text("x")
    argv = ["refs", str(src), "-o", str(tmp_path / "out.csv"), "--family", "ztpoisson"]
    assert_one_line(run_cli([*argv, "--cache-dir", str(a_file)]), "cache directory", str(a_file))
    # tests may run as root, for whom chmod 000 changes nothing: deny through os.access
    denied = tmp_path / "denied"
    denied.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        "ztbench.reference.cache.os.access",
        lambda p, mode: False if Path(p) == denied else real_access(p, mode),
    )
    assert_one_line(run_cli([*argv, "--cache-dir", str(denied)]), "permission denied")
    assert not (tmp_path / "out.csv").exists()


def test_output_equal_to_an_input_is_refused(tmp_path):
    src = _points_csv(tmp_path / "in.csv")
    before = src.read_bytes()
    link = tmp_path / "link.csv"
    os.link(src, link)
    for out in (src, link, tmp_path / "." / "in.csv"):
        run = run_cli(["eval", "ztpoisson/stable", str(src), "-o", str(out)])
        assert_one_line(run, "is also an input")
        run = run_cli(["refs", str(src), "-o", str(out), "--family", "ztpoisson", "--no-cache"])
        assert_one_line(run, "is also an input")
    assert src.read_bytes() == before


# ------------------------------------------------------------------------ a full disk


def _enospc(monkeypatch, under: Path, name: str | None = None) -> None:
    """Every atomic write under ``under`` (of files called ``name``, when given) fails as on
    a full disk when its temporary is flushed (delayed allocation), before any rename."""
    real = atomic.sync_file

    def sync(tmp: Path) -> None:
        ours = name is None or tmp.name.startswith(f".{name}.")
        if ours and tmp.resolve().is_relative_to(under.resolve()):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        real(tmp)

    monkeypatch.setattr(atomic, "sync_file", sync)


@pytest.fixture
def results(tmp_path, tiny) -> Path:
    out = tmp_path / "results"
    run = run_cli(["accuracy", str(tiny), "-o", str(out), "--no-progress", "--no-cache"])
    assert run.rc == 0, run.err
    return out


def _verb_argv(verb: str, d: Path, suite: Path) -> list[str]:
    c2 = str(d / "c2")
    eval_ = ["eval", "ztpoisson/stable", str(d / "in.csv"), "-o", str(d / "out.csv")]
    refs = ["refs", str(d / "in.csv"), "--family", "ztpoisson", "--no-progress"]
    timing = "--sizes 64 --budget 0.001 --min-rounds 1 --max-rounds 1 --no-memory --no-progress"
    timing += " --modes eager --passes forward"
    return {
        "eval": eval_,
        "refs (output)": [*refs, "-o", str(d / "out.csv"), "--no-cache"],
        "refs (cache)": [*refs, "-o", str(d / "x.csv"), "--cache-dir", str(d / "cache")],
        "accuracy": ["accuracy", str(suite), "-o", str(d / "results"), "--no-cache"],
        "baseline": ["baseline", str(suite), "-o", str(d / "base.json"), "--cache-dir", c2],
        "report": ["report", str(d / "results")],
        "throughput": ["throughput", str(suite), "-o", str(d / "results"), *timing.split()],
    }[verb]


VERBS = ("eval", "refs (output)", "refs (cache)", "accuracy", "baseline", "report", "throughput")


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_full_disk_is_one_line_and_keeps_the_previous_results(
    tmp_path, tiny, results, monkeypatch, verb
):
    monkeypatch.chdir(tmp_path)
    _points_csv(tmp_path / "in.csv")
    (tmp_path / "out.csv").write_text("previous\n")
    (tmp_path / "base.json").write_text("previous\n")
    (tmp_path / "cache").mkdir()
    before = tree(tmp_path)
    _enospc(monkeypatch, tmp_path / "cache" if verb == "refs (cache)" else tmp_path)
    run = run_cli(_verb_argv(verb, tmp_path, tiny))
    assert_one_line(run, "no space left", "free there")
    assert temporaries(tmp_path) == []
    after = tree(tmp_path)
    changed = {p for p in before if p in after and after[p] != before[p]}
    assert changed == set(), changed
    # what may appear: directories made on the way (the cache's fan-out, baseline's c2)
    assert all(after[p] is None for p in set(after) - set(before)), set(after) - set(before)


@pytest.mark.parametrize("name", ["summary.csv", "env.json", "points.parquet"])
def test_accuracy_replaces_all_its_files_or_none(tmp_path, tiny, monkeypatch, name):
    out = tmp_path / "results"
    argv = ["accuracy", str(tiny), "-o", str(out), "--no-progress", "--no-cache"]
    assert run_cli(argv).rc == 0
    for f in out.iterdir():
        f.write_bytes(b"previous " + f.name.encode())
    before = tree(out)
    _enospc(monkeypatch, out, name)
    assert_one_line(run_cli(argv), name, "no space left")
    assert tree(out) == before  # points.parquet too: it waits for the others


def _unshare_works() -> bool:
    try:
        probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _unshare_works(),
                    reason="needs unshare -rm to mount a small tmpfs")  # fmt: skip
def test_a_real_full_tmpfs(tmp_path):
    """A 64 KB tmpfs, filled for real: eval's output and refs' cache on it."""
    src = _points_csv(tmp_path / "in.csv", n=4000, family="ztnb")
    full = tmp_path / "full"
    full.mkdir()
    py = f"PYTHONPATH={REPO} {sys.executable} -m ztbench.cli"
    script = f"""
set -u
mount -t tmpfs -o size=64k tmpfs {full}
echo previous > {full}/out.csv
{py} eval ztnb/stable {src} -o {full}/out.csv 2>{tmp_path}/eval.err; echo "eval $?"
{py} refs {src} -o {tmp_path}/refs.csv --family ztnb --no-progress \\
    --cache-dir {full}/cache 2>{tmp_path}/refs.err; echo "refs $?"
cat {full}/out.csv
find {full} -name '*.tmp' | wc -l
"""
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    lines = proc.stdout.splitlines()
    assert lines[:4] == ["eval 2", "refs 2", "previous", "0"], (proc.stdout, proc.stderr)
    for verb in ("eval", "refs"):
        err = (tmp_path / f"{verb}.err").read_text().splitlines()
        assert len(err) == 1 and "no space left" in err[0] and "free there" in err[0], err
    assert not (tmp_path / "refs.csv").exists()


# ------------------------------------------------------------- collisions and CSV text


def test_input_columns_named_like_output_columns_are_refused(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("k,lam,nll\n1,2,3\n")
    out = tmp_path / "out.csv"
    run = run_cli(["refs", str(src), "-o", str(out), "--family", "ztpoisson", "--no-cache"])
    assert_one_line(run, "nll", "collide")
    src.write_text("k,lam\n1,2\n")
    assert run_cli(["refs", str(src), "-o", str(out), "--family", "ztpoisson",
                    "--no-cache"]).rc == 0  # fmt: skip
    run = run_cli(["refs", str(out), "-o", str(tmp_path / "o2.csv"), "--family", "ztpoisson",
                   "--no-cache"])  # fmt: skip
    assert_one_line(run, "collide")  # refs fed its own output
    src.write_text("k,lam,value\n1,2,3\n")
    assert_one_line(run_cli(["eval", "ztpoisson/stable", str(src), "-o", str(out)]), "value")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("k,lam\n1,2,3\n", "Expected 2 fields in line 2, saw 3"),
        ("k,lam\n1,2\n4,5,6\n", "Expected 2 fields in line 3, saw 3"),
        ("k,k,lam\n1,1,2\n", "appears twice"),
        ("k,,lam\n1,1,2\n", "column 2 has no name"),
        ("k,lam\n", "no data rows"),
        ('k,lam\n1,"2\n', "not a readable CSV"),
        ("\xff\xfek,lam\n", "not UTF-8"),
    ],
)
def test_malformed_csv_is_one_line(tmp_path, text, needle):
    src = tmp_path / "in.csv"
    src.write_bytes(text.encode("latin-1"))
    run = run_cli(["eval", "ztpoisson/stable", str(src), "-o", str(tmp_path / "o.csv")])
    assert_one_line(run, needle, str(src))


@pytest.mark.parametrize("header", ["k, lam", "k ,lam ", " k,\tlam", "\ufeffk,lam"])
def test_header_whitespace_is_trimmed(tmp_path, header):
    src = tmp_path / "in.csv"
    src.write_text(f"{header}\n3, 2.0\n")
    out = tmp_path / "o.csv"
    run = run_cli(["eval", "ztpoisson/naive", str(src), "-o", str(out)])
    assert run.rc == 0, run.err
    # hand-derived: the loss form -log P(k | lam, k > 0) - log k!
    #   = lam - k log lam + log1p(-exp(-lam))
    k, lam = 3.0, 2.0
    exact = lam - k * np.log(lam) + np.log1p(-np.exp(-lam))
    assert pd.read_csv(out)["value"][0] == pytest.approx(exact, rel=1e-14)


# -------------------------------------------------------------------- malformed files


def _baseline_text(obj) -> str:
    return json.dumps(obj)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"format": 1e999}', "out of the range of float64"),
        ('{"format": NaN}', "NaN"),
        ('{"format": -Infinity}', "Infinity"),
        ('{"format": 1' + "0" * 5000 + "}", "digits"),
        ("\xff", "utf-8"),
        ("", "not valid JSON"),
    ],
    ids=["deep", "1e999", "NaN", "-Infinity", "long int", "bytes", "empty"],
)
def test_malformed_baseline_json_is_one_line(tmp_path, text, needle, monkeypatch):
    monkeypatch.chdir(REPO)
    path = tmp_path / "b.json"
    path.write_bytes(text.encode("latin-1"))
    run = run_cli(["check", "suites/quick.toml", "--baseline", str(path)])
    assert_one_line(run, needle, str(path))


def test_non_finite_literals_in_env_json_are_refused(results):
    env = results / "env.json"
    env.write_text(env.read_text().replace("{", '{"x": 1e999,', 1))
    assert_one_line(run_cli(["report", str(results)]), "env.json", "out of the range")


@pytest.mark.parametrize("cut", ["inside the last row", "after the header"])
def test_a_cut_summary_is_refused_by_report(results, cut):
    path = results / "summary.csv"
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    path.write_text(text[:-7] if cut == "inside the last row" else lines[0])
    needle = "cut short" if cut == "inside the last row" else "no data rows"
    assert_one_line(run_cli(["report", str(results)]), "summary.csv", needle)
    assert not (results / "REPORT.md").exists()


def _filled_cache(tmp_path: Path) -> tuple[list[str], Path]:
    """A refs run that fills a fresh cache with one entry (its output a.csv): the refs
    argv to rerun (without -o) and the entry."""
    src = _points_csv(tmp_path / "in.csv")
    cache = tmp_path / "cache"
    argv = ["refs", str(src), "--family", "ztpoisson", "--cache-dir", str(cache), "--no-progress"]
    assert run_cli([*argv, "-o", str(tmp_path / "a.csv")]).rc == 0
    (entry,) = sorted(cache.rglob("*.ztref"))
    return argv, entry


def _npy_entry(path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    payload = buf.getvalue()
    path.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)


def _dir_entry(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "junk").write_text("x")


def _truncated_entry(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:50])


@pytest.mark.parametrize("damage", [_npy_entry, _dir_entry, _truncated_entry],
                         ids=["npy with a valid checksum", "directory", "truncated"])  # fmt: skip
def test_bad_cache_entries_are_reported_and_recomputed(tmp_path, damage):
    argv, entry = _filled_cache(tmp_path)
    good = entry.read_bytes()
    damage(entry)
    run = run_cli([*argv, "-o", str(tmp_path / "b.csv")])
    assert_one_line(run, "is corrupt", "recomputing", rc=0)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert entry.is_file() and entry.read_bytes() == good


def test_an_unreadable_fan_out_directory_is_recomputed(tmp_path, monkeypatch):
    argv, entry = _filled_cache(tmp_path)
    real = Path.read_bytes

    def read_bytes(self):  # root ignores chmod 000: deny the fan-out directory here
        if self.parent == entry.parent:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    run = run_cli([*argv, "-o", str(tmp_path / "b.csv")])
    assert_one_line(run, "cannot read cache file", "recomputing", rc=0)
    monkeypatch.undo()
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


# ----------------------------------------------------------------- devices and usage


@pytest.mark.parametrize("device", ["tpu", "cpu:abc", "cuda", "cuda:99", "meta"])
def test_unknown_or_absent_device_is_a_usage_error(tmp_path, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    src = _points_csv(tmp_path / "in.csv")
    run = run_cli(["eval", "ztpoisson/stable", str(src), "-o", str(tmp_path / "o.csv"),
                   "--device", device])  # fmt: skip
    assert_one_line(run, "--device", repr(device))
    assert not (tmp_path / "o.csv").exists()


def test_points_that_leave_the_domain_when_rounded_are_named(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("k,mu,theta\n2,1.0,1.0\n1,1.0,1e-12\n")  # theta rounds below 1e-12
    out = tmp_path / "o.csv"
    run = run_cli(["eval", "ztnb/stable", str(src), "-o", str(out), "--dtype", "float32"])
    line = assert_one_line(run, "1 point(s) leave the domain", "line 3", rc=0)
    assert f"theta = {float(np.float32(1e-12))!r}" in line and float(np.float32(1e-12)) < 1e-12
    assert len(pd.read_csv(out)) == 2


def test_no_verb_prints_the_usage():
    run = run_cli([])
    assert run.rc == 2 and run.out.startswith("usage: ztbench") and "accuracy" in run.out


# ----------------------------------------------------------------------------- debris


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_killed_runs_are_removed_by_the_next_write(tmp_path):
    out = tmp_path / "out.csv"
    host = atomic._HOST
    dead = tmp_path / f".out.csv.{host}-{_dead_pid()}.abcd1234.tmp"
    live = tmp_path / f".out.csv.{host}-{os.getppid()}.efgh5678.tmp"
    old = tmp_path / ".out.csv.ijkl9012.tmp"  # an older naming, no owner: removed by age
    young = tmp_path / ".out.csv.mnop3456.tmp"
    other = tmp_path / f".other.csv.{host}-{_dead_pid()}.qrst7890.tmp"
    for p in (dead, live, old, young, other):
        p.write_bytes(b"x" * 1000)
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    atomic.atomic_write_text(out, "new\n")
    assert out.read_text() == "new\n"
    assert not dead.exists() and not old.exists()
    assert live.exists() and young.exists() and other.exists()  # not ours to judge


def _children(pid: int) -> set[int]:
    """Descendants of ``pid`` (from /proc)."""
    found, frontier = set(), {pid}
    while frontier:
        nxt = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid in frontier:
                nxt.add(int(entry))
        found |= nxt
        frontier = nxt
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killing_a_pooled_refs_run_leaves_no_process(tmp_path, sig):
    src = _points_csv(tmp_path / "in.csv", n=60_000, family="ztnb")
    cache = tmp_path / "cache"
    script = (
        # a hang dumps its threads on SIGUSR1 (read below when the run does not stop)
        "import faulthandler, signal; faulthandler.register(signal.SIGUSR1, all_threads=True);"
        "import sys; from ztbench.cli import main; "
        f"sys.exit(main(['refs', {str(src)!r}, '-o', {str(tmp_path / 'o.csv')!r}, "
        # mpmath, not arb: arb finishes 60,000 points about a second after its pool starts,
        # and a signal that comes after the run is not what is under test
        f"'--family', 'ztnb', '--engine', 'mpmath', '--no-progress', "
        f"'--cache-dir', {str(cache)!r}]))"
    )
    # two workers even on a one-core machine: the pool is what is under test
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # stderr to a file, not a pipe: surviving workers would hold a pipe open forever
    with open(tmp_path / "err.txt", "w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import os; os.cpu_count = lambda: 2; " + script],
            env=env, stderr=err_file,
        )  # fmt: skip
    workers: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        workers = {p for p in _children(proc.pid) if _alive(p)}
        if len(workers) >= 2:
            break
        time.sleep(0.2)
    assert len(workers) >= 2, "the pool never started"
    time.sleep(1.0)  # let the workers get into their first chunk
    assert proc.poll() is None, "the run ended before it could be signalled"
    proc.send_signal(sig)
    try:
        rc = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        for p in {proc.pid, *workers}:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        pytest.fail("the run did not stop:\n" + (tmp_path / "err.txt").read_text()[-3000:])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    survivors = [p for p in workers if _alive(p)]
    for p in survivors:  # clean up before failing
        os.kill(p, signal.SIGKILL)
    assert not survivors, "worker processes outlived their parent"
    err = (tmp_path / "err.txt").read_text().strip().splitlines()
    if sig == signal.SIGTERM:  # like Ctrl-C: one line, exit code 130, no temporary left
        assert rc == 130 and err == ["ztbench refs: interrupted"], (rc, err)
        assert temporaries(tmp_path) == []
    # whatever the cache holds is whole: a rerun serves it and computes the rest
    for entry in cache.rglob("*.ztref"):
        blob = entry.read_bytes()
        digest, payload = blob[len(MAGIC) : len(MAGIC) + 32], blob[len(MAGIC) + 32 :]
        assert hashlib.sha256(payload).digest() == digest
    shutil.rmtree(cache, ignore_errors=True)
