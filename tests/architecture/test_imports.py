"""Imports run one way: the gate, the report and the CLI's help load neither torch nor the
reference engines (they read plain files through the torch-free ztbench.core.schema)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "flint", "mpmath")


def _heavy_after(statement: str) -> list[str]:
    script = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    mods = json.loads(out.strip().splitlines()[-1])
    return [m for m in HEAVY if m in mods]


@pytest.mark.parametrize(
    "statement",
    [
        "import ztbench.gate",
        "import ztbench.report",
        "import ztbench.core.schema",
        "import ztbench.core.rules",
        "from ztbench.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
        "from ztbench.cli import main\ntry:\n    main(['report', '--help'])\n"
        "except SystemExit:\n    pass",
    ],
    ids=["gate", "report", "schema", "rules", "help", "report-help"],
)
def test_no_torch(statement: str) -> None:
    assert _heavy_after(statement) == []
