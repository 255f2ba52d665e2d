"""The CI gate passes on a clean checkout under every CPU capability torch can run here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ztbench.core.schema import CPU_CAPABILITIES
from ztbench.io.environment import supported_capabilities


@pytest.mark.slow
@pytest.mark.parametrize("capability", CPU_CAPABILITIES)
def test_check_passes_under_each_cpu_capability(capability: str) -> None:
    if capability not in supported_capabilities():
        pytest.skip(f"this CPU cannot run torch's {capability} kernels")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    proc = subprocess.run(
        [sys.executable, "-m", "ztbench.cli", "check", "suites/quick.toml"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1].startswith("PASS:"), proc.stdout[-3000:]


def test_check_says_when_this_cpu_was_not_recorded(tmp_path, capsys) -> None:
    import json

    from ztbench.cli import main
    from ztbench.io.environment import cpu_capability

    doc = json.loads(open("results/baseline/quick.json").read())
    others = [c for c in CPU_CAPABILITIES if c != cpu_capability()] or ["sve256"]
    doc["env"]["cpu_capabilities"] = others[0]
    base = tmp_path / "b.json"
    base.write_text(json.dumps(doc))
    main(["check", "suites/quick.toml", "--baseline", str(base)])
    out = capsys.readouterr().out
    assert f"(cpu capabilities {others[0]})" in out
    assert f"this CPU runs torch's {cpu_capability()} kernels, which the baseline" in out
