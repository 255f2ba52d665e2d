"""The report model (:mod:`ztbench.report.model`) and the section list of the report builder,
on the report tests' hand-made results directory. Each field of the model is checked against
one computed here from summary.csv and the leaderboards, not against the model's helpers."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from pathlib import Path

import pandas as pd
import pytest

from ztbench.report import SECTIONS, build_report, sections
from ztbench.report.build import RENDERERS
from ztbench.report.data import load_results
from ztbench.report.model import MAIN_CANDIDATES, ReportModel, build_model
from ztbench.report.tables import board_keys, leaderboard


def _dir(tmp_path: Path, throughput: bool, points: bool = True) -> Path:
    from test_report import _write_dir  # the report tests' hand-made directory (same folder)

    d = _write_dir(tmp_path / "run", throughput=throughput)
    if not points:
        (d / "points.parquet").unlink()
    return d


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ReportModel:
    """The model of the hand-made directory with throughput.csv and points.parquet."""
    return build_model(load_results(_dir(tmp_path_factory.mktemp("model"), throughput=True)))


def test_recommended_are_the_first_trainable_leaderboard_rows(model: ReportModel) -> None:
    res = model.results
    expected = {}
    for key in board_keys(res):
        board = leaderboard(res, key)
        usable = board[board["rank"].notna() & (board["failures"] == 0)
                       & (board["grad_failures"] == 0)]  # fmt: skip
        if not usable.empty:
            expected[(key.family, key.dtype, key.device)] = usable.iloc[0]["candidate"]
    got = model.recommendations.set_index(["family", "dtype", "device"])["candidate"].to_dict()
    assert got == expected and len(got) == 4
    # the peer leads the float64 ztpoisson leaderboard but has no gradient
    assert got[("ztpoisson", "float64", "cpu")] == "ztpoisson/stable"


def test_main_candidates_dtypes_and_devices(model: ReportModel) -> None:
    s = pd.read_csv(model.results.dir / "summary.csv")
    ok = s[(s["status"] == "ok") & (s["mode"] == "eager")]
    present = set(ok["candidate"])
    recommended = set(model.recommendations["candidate"])
    assert list(model.main_candidates) == ["ztpoisson", "ztnb"]
    for fam, main in model.main_candidates.items():
        listed = [c for c in MAIN_CANDIDATES[fam] if c in present]
        assert main[: len(listed)] == listed
        extra = sorted(c for c in recommended if c.startswith(fam + "/") and c not in listed)
        assert sorted(main[len(listed):]) == extra  # fmt: skip
    assert model.main_candidates["ztpoisson"] == [
        "ztpoisson/naive", "ztpoisson/published", "ztpoisson/stable"]  # fmt: skip
    assert model.dtypes == ["float64", "float32"]
    assert model.devices == ["cpu"] and model.first_device == "cpu"


def test_with_speed_and_missing_inputs(model: ReportModel, tmp_path: Path) -> None:
    assert model.with_speed and model.missing == []
    bare = build_model(load_results(_dir(tmp_path, throughput=False, points=False)))
    assert not bare.with_speed
    assert len(bare.missing) == 2
    assert bare.missing[0].startswith("throughput.csv")
    assert bare.missing[1].startswith("points.parquet")


def test_model_is_frozen(model: ReportModel) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.first_device = "cuda"  # type: ignore[misc]


def test_sections_are_the_report_headings_in_order(tmp_path: Path) -> None:
    text = build_report(_dir(tmp_path, throughput=False, points=False)).read_text()
    assert re.findall(r"^## .*$", text, flags=re.M) == list(SECTIONS)
    assert "**Not in this directory:** throughput.csv" in text
    assert SECTIONS == tuple(title for title, _ in RENDERERS)
    assert len(set(SECTIONS)) == len(SECTIONS)


def test_every_section_module_is_rendered() -> None:
    rendered = {render for _, render in RENDERERS}
    names = [m.name for m in pkgutil.iter_modules(sections.__path__)]
    assert names
    for name in names:
        mod = importlib.import_module(f"{sections.__name__}.{name}")
        assert mod.render in rendered and (mod.TITLE, mod.render) in RENDERERS, name
