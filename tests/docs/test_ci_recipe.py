"""The CI recipe of docs/ci.md runs as written, the way a user's CI runs it.

The ```sh block under "## Recipe" is taken from docs/ci.md and run with bash in a fresh
virtual environment, from the root of a small "user repository" made in a temporary
directory: a ZTNB loss of its own, a suite naming it beside the shipped loss, and a
baseline recorded from that suite by this environment's ``ztbench baseline`` (as a user
records it once and commits it). The recipe installs torch, then this checkout with its
``bench`` extra, then runs ``ztbench check``: it must exit 0 with a last line ``PASS:``.

Only the recipe's own variables are set:

- ``TORCH_VERSION``: this environment's torch release (the Makefile's pin, 2.13.0), the
  version the baseline was recorded with;
- ``TORCH_INDEX_URL``: the index pip uses here, in place of the PyTorch CPU index, which a
  test machine may not reach; ``torch==2.13.0`` then comes from the wheel pip finds there
  (on a machine with a wheel already on disk, that one);
- ``ZTBENCH_SPEC``: a copy of this checkout with ``[bench]``, so that building the package
  writes nothing into the working tree.

Slow: it installs the benchmark's dependencies into a new environment (minutes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

LOSS = '''\
import torch


def ztnb_nll(k, mu, log_theta):
    """-log P(K = k | K > 0) + lgamma(k + 1) of NB(mean mu, size theta = exp(log_theta))."""
    theta = torch.exp(log_theta)
    w = theta * torch.log1p(mu / theta)
    return (
        torch.lgamma(theta)
        - torch.lgamma(k + theta)
        + k * torch.log1p(theta / mu)
        + w
        + torch.log(-torch.expm1(-w))
    )
'''

SUITE = """\
name = "accuracy"
dtypes = ["float64", "float32"]

[candidates]
include = ["ztnb/ztbench"]

[[candidates.external]]
id = "mylab/ztnb"
target = "../src/mylab/losses.py:ztnb_nll"
family = "ztnb"
form = "loss"
parameters = { mu = "natural", theta = "log" }

[[families.ztnb.grid]]
k = [1, 2, 5, 20, 100]
mu = { min = 1e-4, max = 1e4, num = 9 }
theta = { min = 1e-2, max = 1e5, num = 8 }
"""


def recipe() -> str:
    """The shell commands of docs/ci.md: the ```sh block directly under '## Recipe'."""
    text = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    found = re.findall(r"^## Recipe\n+```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    assert len(found) == 1, "docs/ci.md: expected one ```sh block under '## Recipe'"
    return found[0]


def test_the_recipe_block_installs_the_benchmark_and_runs_the_gate() -> None:
    block = recipe()
    assert "ztbench[bench]" in block  # plain `ztbench` lacks what `ztbench check` needs
    assert re.search(r"^ztbench check ", block, flags=re.MULTILINE)


def _own_ztbench() -> str:
    """This environment's ztbench command (the one that records the baseline)."""
    here = Path(sys.executable).parent / "ztbench"
    found = str(here) if here.exists() else shutil.which("ztbench")
    if found is None:
        pytest.skip("no ztbench command in this environment to record the baseline with")
    return found


def _environment(**extra: str) -> dict[str, str]:
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "ZTBENCH_SCHEDULER")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def _tail(proc: subprocess.CompletedProcess[str], n: int = 60) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-n:])


def test_the_recipe_passes_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    script = tmp_path / "accuracy-gate.sh"
    script.write_text(recipe(), encoding="utf-8")

    # the user's repository: a loss, a suite naming it, the committed baseline
    repo = tmp_path / "repo"
    (repo / "src" / "mylab").mkdir(parents=True)
    (repo / "src" / "mylab" / "losses.py").write_text(LOSS, encoding="utf-8")
    (repo / "ci").mkdir()
    (repo / "ci" / "accuracy.toml").write_text(SUITE, encoding="utf-8")
    cache = tmp_path / "reference-cache"  # the CI job's restored reference cache
    record = subprocess.run(
        [_own_ztbench(), "baseline", "ci/accuracy.toml", "-o", "ci/accuracy-baseline.json"],
        cwd=repo, env=_environment(ZTBENCH_CACHE_DIR=str(cache)),
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert record.returncode == 0, _tail(record)

    # this checkout, copied: building it must not write into the working tree
    src = tmp_path / "ztbench-src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "results", "tests", "*.egg-info", "build", "__pycache__", ".*cache",
        ".benchmarks",
    ))  # fmt: skip

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=600)
    bin_dir = venv / "bin"
    env = _environment(
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        ZTBENCH_CACHE_DIR=str(cache),
        TORCH_VERSION=metadata.version("torch").split("+")[0],
        TORCH_INDEX_URL=os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple",
        ZTBENCH_SPEC=f"{src}[bench]",
    )
    run = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        cwd=repo, env=env, capture_output=True, text=True, timeout=3000,
    )  # fmt: skip
    assert run.returncode == 0, _tail(run)
    assert (bin_dir / "ztbench").exists(), "the recipe did not install ztbench into the venv"
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("PASS:"), _tail(run, 20)
