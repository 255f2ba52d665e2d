"""The report model: what several sections of the report share, computed once per build.

:func:`build_model` reads nothing: it derives a :class:`ReportModel` from a loaded
:class:`~ztbench.report.data.Results`. Each section (:mod:`ztbench.report.sections` and the
section modules beside this one) renders Markdown from the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ztbench.core.schema import DEVICES, DTYPE_NAMES, FAMILY_NAMES
from ztbench.report.data import Results
from ztbench.report.tables import RANK_MODE, ordered, recommendations

# the main candidates drawn in the heatmaps and listed in the worst cases (plus the
# recommended one of each family, when it is not among them)
MAIN_CANDIDATES: dict[str, tuple[str, ...]] = {
    "ztpoisson": ("ztpoisson/naive", "ztpoisson/published", "ztpoisson/stable",
                  "ztpoisson/torch-distributions"),
    "ztnb": ("ztnb/naive", "ztnb/published-code", "ztnb/published-text", "ztnb/softplus",
             "ztnb/stable"),
}  # fmt: skip


@dataclass(frozen=True, eq=False)
class ReportModel:
    """What the report's sections share, computed once from one results directory.

    Frozen: no section rebinds a field; the frames and lists are shared by every section
    and must not be changed in place either. ``eq=False``: a model holds frames, which have
    no truth value, so models compare by identity.

    Attributes:
        results: the results directory as loaded (:func:`~ztbench.report.data.load_results`).
        recommendations: per family x dtype x device, the first leaderboard row a model can
            be trained with (:func:`~ztbench.report.tables.recommendations`); an empty
            frame when no candidate was measured successfully.
        main_candidates: per family (in :data:`~ztbench.core.schema.FAMILY_NAMES` order),
            the candidates drawn in the heatmaps and listed in the worst cases: those of
            :data:`MAIN_CANDIDATES` measured in eager mode, plus the recommended ones not
            among them; for a family outside :data:`MAIN_CANDIDATES`, the first four
            measured.
        dtypes: the dtypes of summary.csv, in :data:`~ztbench.core.schema.DTYPE_NAMES` order.
        devices: the devices of summary.csv, in :data:`~ztbench.core.schema.DEVICES` order.
        first_device: the first of ``devices`` (``"cpu"`` when there is none): the device
            the heatmaps are drawn for.
        with_speed: whether throughput was measured (throughput.csv is present): the
            speed columns and the Pareto plot need it.
        missing: the optional inputs absent from the directory, each with what the report
            leaves out for it (empty when none is missing).
    """

    results: Results
    recommendations: pd.DataFrame
    main_candidates: dict[str, list[str]]
    dtypes: list[str]
    devices: list[str]
    first_device: str
    with_speed: bool
    missing: list[str]


def main_candidates(results: Results, recs: pd.DataFrame) -> dict[str, list[str]]:
    """:attr:`ReportModel.main_candidates` of ``results`` with recommendations ``recs``."""
    s = results.summary
    ok = s[(s["status"] == "ok") & (s["mode"] == RANK_MODE)]
    present = set(ok["candidate"])
    out: dict[str, list[str]] = {}
    for fam in ordered(s["family"], FAMILY_NAMES):
        main = [c for c in MAIN_CANDIDATES.get(fam, ()) if c in present]
        if not recs.empty:
            for c in recs[recs["family"] == fam]["candidate"]:
                if c not in main and c in present:
                    main.append(c)
        if not main:  # unknown family set (e.g. a custom suite): the first few present
            main = [c for c in dict.fromkeys(ok[ok["family"] == fam]["candidate"])][:4]
        out[fam] = main
    return out


def missing_inputs(results: Results) -> list[str]:
    """:attr:`ReportModel.missing` of ``results``."""
    missing = []
    if results.throughput is None:
        missing.append("throughput.csv (no speed columns, no Pareto plot)")
    if results.points_path is None:
        missing.append("points.parquet (no heatmaps; worst cases without computed values)")
    return missing


def build_model(results: Results) -> ReportModel:
    """The report model of ``results`` (reads no file)."""
    s = results.summary
    recs = recommendations(results)
    devices = ordered(s["device"], DEVICES)
    return ReportModel(
        results=results,
        recommendations=recs,
        main_candidates=main_candidates(results, recs),
        dtypes=ordered(s["dtype"], DTYPE_NAMES),
        devices=devices,
        first_device=devices[0] if devices else "cpu",
        with_speed=results.throughput is not None,
        missing=missing_inputs(results),
    )


__all__ = ["MAIN_CANDIDATES", "ReportModel", "build_model", "main_candidates", "missing_inputs"]
