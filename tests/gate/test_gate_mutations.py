"""Proof that the gate works, end to end: real suite runs, real candidates.

A tiny suite (two candidates, float64 and float32, ~1,100 points per dtype) is written to
a temporary directory and its baseline recorded once, unmutated, with ``ztbench
baseline``. Each mutation test then perturbs a primitive or a candidate on the fly (with
pytest's monkeypatch, undone after the test) and asserts that ``ztbench check`` fails with
exit code 1 and names the affected candidate in its regression table. The no-false-alarm
test reruns the unmutated suite three times: each passes, and the summary is bit-identical
to the recorded one.

How the mutations are injected (no edit of the candidate modules):

- torch functions used by :mod:`ztbench.loss.primitives` are replaced in that
  module's namespace only (``primitives.torch`` becomes a proxy that overrides one
  function and forwards the rest), so torch itself and other modules are untouched;
- primitives and thresholds are module attributes looked up at call time
  (``P.log_expm1``, ``STIRLING_MIN``), patched with ``monkeypatch.setattr``;
- a candidate's function is swapped in the registry (``base._REGISTRY``), which the
  accuracy runner reads through :func:`ztbench.candidates.get_candidate`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from ztbench import gate
from ztbench.candidates import base
from ztbench.cli import main
from ztbench.commands.baseline import record
from ztbench.commands.check import CheckOutcome, check
from ztbench.io.environment import cpu_capability
from ztbench.loss import primitives

# Mutations are monkeypatched into this process: record under its own capability only.
HERE = (cpu_capability(),)

SUITE = """\
name = "gate-mutations"
description = "tiny suite for the gate's mutation tests"
dtypes = ["float64", "float32"]
devices = ["cpu"]
modes = ["eager"]

[candidates]
include = ["ztpoisson/stable", "ztnb/stable"]

[[families.ztpoisson.grid]]
k = [1, 3, 30, 1000]
lam = { min = 1e-12, max = 1000, num = 40 }

[[families.ztnb.grid]]
k = [1, 3, 100]
mu = { min = 1e-10, max = 10000, num = 12 }
theta = [1e-3, 0.1, 1, 2.5, 6, 30, 1e3, 1e6, 1e8]

[gate]
max_ratio = 2.0
min_ulp = 1.0
"""


@dataclasses.dataclass(frozen=True)
class Setup:
    suite: Path
    baseline: Path
    cache: Path
    record_log: tuple[str, ...]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """The tiny suite and its baseline, recorded once (unmutated) for the whole module."""
    root = tmp_path_factory.mktemp("gate")
    suite = root / "gate-mutations.toml"
    suite.write_text(SUITE)
    cache = root / "cache"
    path = root / "baseline" / "gate-mutations.json"
    log: list[str] = []
    record(suite, path, cache, say=log.append, capabilities=HERE)
    return Setup(suite, path, cache, tuple(log))


def run_check(s: Setup, baseline: Path | None = None) -> tuple[CheckOutcome, str]:
    lines: list[str] = []
    outcome = check(s.suite, baseline or s.baseline, s.cache, say=lines.append)
    return outcome, "\n".join(lines)


def regression_table(text: str) -> list[str]:
    """The body lines of the REGRESSIONS table of a check report."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("REGRESSIONS ("))
    body = []
    for ln in lines[start + 3 :]:
        if not ln.strip():
            break
        body.append(ln)
    return body


def assert_fails_naming(s: Setup, candidate: str) -> CheckOutcome:
    outcome, text = run_check(s)
    assert outcome.exit_code == 1, text
    assert candidate in outcome.result.regressed_candidates, text
    assert any(ln.split()[0] == candidate for ln in regression_table(text)), text
    assert text.splitlines()[-1].startswith("FAIL:") and candidate in text.splitlines()[-1]
    return outcome


class TorchWith:
    """The torch module with some functions replaced (for one module's namespace)."""

    def __init__(self, **overrides: Callable[..., Any]) -> None:
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return getattr(torch, name)


def frame_bits(df: pd.DataFrame) -> list[tuple[str, bytes | tuple]]:
    """Column name and exact content (float bytes, so -0.0 != 0.0 and NaN payloads count)."""
    out: list[tuple[str, bytes | tuple]] = []
    for col in df.columns:
        values = df[col].to_numpy()
        if values.dtype.kind in "fiub":
            out.append((col, np.ascontiguousarray(values).tobytes()))
        else:
            out.append((col, tuple(values.tolist())))
    return out


# --------------------------------------------------------------------------- no false alarm


def test_recording_the_baseline_reports_a_first_baseline(setup: Setup) -> None:
    log = "\n".join(setup.record_log)
    assert "no previous baseline" in log and f"wrote {setup.baseline}" in log
    b = gate.load_baseline(setup.baseline, "gate-mutations")
    cands = {k[1] for k in b.rows}
    assert cands == {"ztpoisson/stable", "ztnb/stable"}
    assert all(r["status"] == "ok" and r["n"] > 0 for k, r in b.rows.items() if k[-1] == "all")


def test_unchanged_reruns_pass_three_times_bit_identical(setup: Setup) -> None:
    recorded = setup.baseline.read_text()
    bits = []
    for _ in range(3):
        outcome, text = run_check(setup)
        res = outcome.result
        assert outcome.exit_code == 0, text
        assert res.regressions == res.improvements == res.missing == res.new == ()
        assert res.compared == len(outcome.summary) > 0
        assert text.splitlines()[-1].startswith("PASS:")
        bits.append(frame_bits(outcome.summary))
        again = gate.Baseline.from_summary(
            outcome.summary, "gate-mutations", _sha(setup), outcome.env
        )
        assert gate.baseline_to_json(gate.envelope([again], HERE)) == recorded
    assert bits[0] == bits[1] == bits[2]


def _sha(s: Setup) -> str:
    return gate.load_baseline(s.baseline).suite_sha256


# --------------------------------------------------------------------------- mutations


def test_mutation_log1p_replaced_by_log_of_one_plus(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(primitives, "torch", TorchWith(log1p=lambda x: torch.log(1 + x)))
    assert_fails_naming(setup, "ztpoisson/stable")


def test_mutation_expm1_replaced_by_exp_minus_one(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(primitives, "torch", TorchWith(expm1=lambda x: torch.exp(x) - 1))
    outcome = assert_fails_naming(setup, "ztnb/stable")
    # log_expm1's expm1 branch serves w <= 1; ztpoisson/stable uses a series there instead.
    assert "ztpoisson/stable" not in outcome.result.regressed_candidates


def test_mutation_truncation_term_dropped(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # log(e^w - 1) -> w: the published approximation everywhere (drops log(1 - e^-w)).
    monkeypatch.setattr(primitives, "log_expm1", lambda w: w)
    code = main(
        [
            "check",
            str(setup.suite),
            "--baseline",
            str(setup.baseline),
            "--cache-dir",
            str(setup.cache),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    names = {ln.split()[0] for ln in regression_table(out)}
    assert {"ztpoisson/stable", "ztnb/stable"} <= names


def test_mutation_float32_inside_float64_candidate(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    cand = base._REGISTRY["ztnb/stable"]

    def in_float32(k: torch.Tensor, *params: torch.Tensor, threshold: float | None = None):
        out = cand.fn(k.float(), *(p.float() for p in params), threshold=threshold)
        return out.to(k.dtype)

    monkeypatch.setitem(base._REGISTRY, cand.id, dataclasses.replace(cand, fn=in_float32))
    outcome = assert_fails_naming(setup, "ztnb/stable")
    regressed = outcome.result.regressions
    assert {c.key[2] for c in regressed} == {"float64"}  # float32 rows are unchanged
    assert {c.key[5] for c in regressed} >= {"value", "d_mu", "d_theta"}


def test_mutation_threshold_moved(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    # lgamma_difference switches to the Stirling difference at theta >= 10; at 5 the
    # 7-term series is off by ~1e-12 relative (theta = 6 is in the grid).
    assert primitives.STIRLING_MIN == 10.0
    monkeypatch.setattr(primitives, "STIRLING_MIN", 5.0)
    outcome = assert_fails_naming(setup, "ztnb/stable")
    assert outcome.result.regressed_candidates == ("ztnb/stable",)


# --------------------------------------------------------------------------- ratchet


def test_improvement_passes_and_ratchet_records_it(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A baseline recorded from a worse formula: the fix passes, listed as an improvement;
    ``ztbench baseline`` then ratchets, printing what moved, to the clean numbers."""
    worse = tmp_path / "worse.json"
    with monkeypatch.context() as m:
        m.setattr(primitives, "log_expm1", lambda w: w)
        record(setup.suite, worse, setup.cache, say=lambda _: None, capabilities=HERE)
    outcome, text = run_check(setup, worse)
    assert outcome.exit_code == 0, text
    assert "ztnb/stable" in {c.candidate for c in outcome.result.improvements}
    assert "IMPROVEMENTS (" in text

    log: list[str] = []
    record(setup.suite, worse, setup.cache, say=log.append, capabilities=HERE)
    joined = "\n".join(log)
    assert "BETTER than the previous baseline" in joined and "0 worse" in joined
    assert worse.read_text() == setup.baseline.read_text()


def test_recording_a_regression_prints_it(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "b.json"
    path.write_text(setup.baseline.read_text())
    monkeypatch.setattr(primitives, "STIRLING_MIN", 5.0)
    log: list[str] = []
    record(setup.suite, path, setup.cache, say=log.append, capabilities=HERE)
    joined = "\n".join(log)
    assert "WORSE than the previous baseline" in joined and "ztnb/stable" in joined
    assert path.read_text() != setup.baseline.read_text()


def test_environment_change_fails_the_check(setup: Setup, tmp_path: Path) -> None:
    text = setup.baseline.read_text().replace('"device_kind": "', '"device_kind": "other-')
    path = tmp_path / "b.json"
    path.write_text(text)
    outcome, out = run_check(setup, path)
    assert outcome.exit_code == 1
    assert "record a baseline for this environment" in out
