"""File names built from values read out of result files stay in their directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from ztbench.core.textfmt import file_name


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("impact-hist", "mouse_brain_10k", "per-gene", "ztnb"),
         "impact-hist-mouse_brain_10k-per-gene-ztnb.png"),
        (("ztnb/naive", "float64"), "ztnb-naive-float64.png"),
        (("impact-hist", "../../etc/evil", "m", "f"), "impact-hist-..-..-etc-evil-m-f.png"),
        (("..",), "unnamed.png"),
        ((".hidden/x",), "hidden-x.png"),
        (("/abs\\path:x\x00y",), "abs-path-x-y.png"),
        (("caf\u00e9",), "caf.png"),
    ],
)  # fmt: skip
def test_file_names_are_safe(tmp_path: Path, parts: tuple[str, ...], expected: str) -> None:
    name = file_name(*parts, suffix=".png")
    assert name == expected
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert not name.startswith(".") and "/" not in name and "\\" not in name
