"""The shipped loss is a package of its own: importing it loads torch and nothing of the
benchmark (no other ztbench module, none of its heavy dependencies)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_ONLY = ("pandas", "matplotlib", "scipy", "flint", "mpmath", "pyarrow", "statsmodels")


def _modules_after(statement: str) -> list[str]:
    script = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_loss_loads_nothing_of_the_benchmark() -> None:
    mods = _modules_after("import ztbench.loss")
    ours = [m for m in mods if m.startswith("ztbench")]
    outside = [m for m in ours if m not in ("ztbench",) and not m.startswith("ztbench.loss")]
    assert outside == [], outside
    heavy = [m for m in mods if m.split(".")[0] in BENCH_ONLY]
    assert heavy == [], heavy
    assert "torch" in mods


def test_top_level_reexport_is_the_shipped_loss() -> None:
    import ztbench
    import ztbench.loss

    assert ztbench.zt_poisson_nll is ztbench.loss.zt_poisson_nll
    assert ztbench.zt_negbin_nll is ztbench.loss.zt_negbin_nll


def test_loss_sources_do_not_import_the_benchmark() -> None:
    """Static check as well: no module under ztbench/loss names a benchmark module."""
    import ztbench.loss

    root = Path(ztbench.loss.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for line in path.read_text().splitlines():
            s = line.strip()
            if (s.startswith("from ztbench") or s.startswith("import ztbench")) and (
                "ztbench.loss" not in s
            ):
                offenders.append(f"{path.name}: {s}")
    assert offenders == []


def _closure(names: list[str]) -> set[str]:
    """The distributions that ``names`` need (their unconditional requirements, transitively)."""
    import re
    from importlib import metadata

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = re.split(r"[\s<>=!~;\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement not installed here
        seen.add(name)
        for req in dist.requires or []:
            marker = req.split(";", 1)[1] if ";" in req else ""
            if "extra" not in marker and ("platform" not in marker or "linux" in marker):
                todo.append(req)
    return seen


@pytest.mark.slow
def test_light_install_in_a_fresh_venv(tmp_path: Path) -> None:
    """``pip install .`` in a fresh virtual environment that holds torch, numpy and what
    they need, plus pip and setuptools (linked from this environment, so nothing is
    downloaded): pip finds every
    requirement satisfied (the core dependencies are torch and numpy only), and the
    shipped loss imports and runs with no pandas to be found."""
    from importlib import metadata

    root = Path(__file__).resolve().parents[2]
    deps = tmp_path / "deps"
    deps.mkdir()
    # the build and install tools too (the venv is made without them: nothing downloaded)
    for name in _closure(["torch", "numpy"]) | {"pip", "setuptools"}:
        dist = metadata.distribution(name)
        base = Path(str(dist.locate_file("")))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            src = base / top
            if src.exists() and not (deps / top).exists() and top != "..":
                (deps / top).symlink_to(src)
    assert not (deps / "pandas").exists()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    (Path(site) / "linked_deps.pth").write_text(str(deps) + "\n")
    src = tmp_path / "src"  # a copy: the build must not write into the worktree
    shutil.copytree(root, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "results", "tests", "*.egg-info", "build", "__pycache__", ".*cache"
    ))  # fmt: skip
    pip = [str(py), "-m", "pip", "-q", "--disable-pip-version-check"]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PIP_NO_INDEX": "1"}
    # --no-build-isolation: the linked setuptools builds it (nothing to download)
    subprocess.run(
        [*pip, "install", "--no-build-isolation", str(src)], check=True, env=env, cwd=tmp_path
    )
    subprocess.run([*pip, "check"], check=True, env=env, cwd=tmp_path)
    script = (
        "import importlib.util, torch\n"
        "assert importlib.util.find_spec('pandas') is None\n"
        "from ztbench.loss import zt_negbin_nll, ZeroTruncatedPoisson\n"
        "z = torch.zeros(2)\n"
        "v = zt_negbin_nll(torch.tensor([1.0, 3.0]), log_mu=z, log_theta=z)\n"
        "assert torch.isfinite(v)\n"
        "print(ZeroTruncatedPoisson(torch.tensor(2.0)).mean.item())\n"
    )
    out = subprocess.run(
        [str(py), "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert abs(float(out.stdout) - 2.0 / (1.0 - math.exp(-2.0))) < 1e-6
    # the benchmark's command, without its extra: one line naming the extra, exit code 2
    cli = subprocess.run(
        [str(venv / "bin" / "ztbench"), "check", "x.toml"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert cli.returncode == 2 and "ztbench[bench]" in cli.stderr, cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1
