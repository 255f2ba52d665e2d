"""The shipped loss is a package of its own: importing it loads torch and nothing of the
benchmark (no other ztbench module, none of its heavy dependencies)."""

from __future__ import annotations

import json
import subprocess
import sys

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
    from pathlib import Path

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
