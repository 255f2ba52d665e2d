"""A family and a float format are resolved once, where a suite is loaded or a candidate is
made; below that edge no stage looks one up by its name again."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from ztbench.candidates import load_suite
from ztbench.core import dtypes, families
from ztbench.core.dtypes import FloatFormat
from ztbench.core.families import Family
from ztbench.measure.accuracy import run_accuracy

SUITE = """\
dtypes = ["float64", "float32"]
[candidates]
include = ["ztpoisson/stable", "ztnb/stable", "ztnb/ztbench", "ztnb/threshold-w"]
[thresholds]
"ztnb/threshold-w" = [10.0]
[families.ztpoisson]
grid = { k = [1, 3], lam = { min = 0.01, max = 100, num = 5 } }
[families.ztnb]
grid = { k = [1, 3], mu = { min = 0.01, max = 100, num = 4 }, theta = [0.5, 50.0] }
[regions.tiny-mu]
family = "ztnb"
mu_max = 0.1
"""


def test_an_accuracy_run_looks_up_no_name(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SUITE)
    suite = load_suite(path)
    assert all(type(d) is FloatFormat for d in suite.dtypes)
    assert all(type(fp.family) is Family for fp in suite.families.values())
    calls: Counter[tuple[str, str]] = Counter()
    codes = {families.get_family.__code__: "family", dtypes.get_format.__code__: "format"}

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            given = frame.f_locals.get("name")
            calls[(codes[frame.f_code], "name" if type(given) is str else "object")] += 1

    sys.setprofile(profile)
    try:
        run_accuracy(suite, out_dir=None, progress=False)
    finally:
        sys.setprofile(None)
    assert calls[("family", "name")] == 0 and calls[("format", "name")] == 0, calls
    assert calls[("format", "object")] > 0  # objects flow down (the guard returns them)


def test_a_resolved_object_is_its_name() -> None:
    assert Family("ztnb") is families.ZTNB == "ztnb" and f"{families.ZTNB}" == "ztnb"
    assert dtypes.get_format("float32") is FloatFormat.float32 == "float32"
    assert dtypes.get_format(FloatFormat.float32) is FloatFormat.float32
