"""examples/own-loss: a project's own ZTNB loss gated in CI by ztbench, without editing it.

The gate passes on the example as committed (its baseline was recorded with `ztbench
baseline`), and fails with exit code 1, naming the candidate, on a copy of the example
whose loss writes log1p(x) as log(1 + x).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ztbench.commands.check import check

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own-loss"
CANDIDATE = "mylab/ztnb"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("own-loss-cache")


def run_check(example: Path, cache: Path) -> tuple[int, list[str], object]:
    lines: list[str] = []
    outcome = check(example / "suite.toml", example / "baseline.json", cache, say=lines.append)
    return outcome.exit_code, lines, outcome


def test_gate_passes_on_the_example(cache: Path) -> None:
    code, lines, outcome = run_check(EXAMPLE, cache)
    assert code == 0, "\n".join(lines)
    assert lines[-1].startswith("PASS: 12 rows compared, no regression (0 improvement(s), 0 new")
    assert set(outcome.summary["candidate"]) == {CANDIDATE}  # type: ignore[attr-defined]


def test_gate_fails_naming_the_candidate_on_a_degraded_copy(cache: Path, tmp_path: Path) -> None:
    copy = tmp_path / "own-loss"
    shutil.copytree(EXAMPLE, copy)
    loss = copy / "ztnb_loss.py"
    source = loss.read_text()
    assert source.count("torch.log1p(") == 2
    loss.write_text(source.replace("torch.log1p(", "torch.log(1 + "))
    code, lines, outcome = run_check(copy, cache)
    text = "\n".join(lines)
    assert code == 1, text
    assert outcome.result.regressed_candidates == (CANDIDATE,), text  # type: ignore[attr-defined]
    assert lines[-1].startswith("FAIL:") and CANDIDATE in lines[-1]
    # log(1 + x) loses x < eps/2 entirely: w = 0 and log(1 - e^-w) = -inf in float32
    assert any(ln.split()[:2] == [CANDIDATE, "float32"] and "failures" in ln.split()
               for ln in lines), text  # fmt: skip
