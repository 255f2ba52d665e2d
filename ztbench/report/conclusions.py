"""What a results directory concludes, as plain rows: the facts a user acts on.

- ``recommended``: the recommended candidate of each family x dtype x device
  (:func:`~ztbench.report.tables.recommendations`);
- ``goal``: whether each accuracy goal of the shipped loss is met (candidate x dtype x
  device x quantity, :func:`~ztbench.report.goals.accuracy_goals`);
- ``harmless``: per threshold rule x dtype x device x region, the smallest swept threshold
  from which the rule never costs more than one ulp, or ``none`` where no swept threshold
  is harmless (thresholds.csv's ``harmless_one_ulp``).

Two runs of different sizes that agree on these rows agree on what the report tells a user
to do; :func:`compare_conclusions` lists where they do not.
"""

from __future__ import annotations

import pandas as pd

from ztbench.report.data import Results
from ztbench.report.goals import accuracy_goals
from ztbench.report.tables import recommendations

CONCLUSION_COLUMNS: tuple[str, ...] = ("kind", "subject", "conclusion")


def conclusions(results: Results) -> pd.DataFrame:
    """The conclusions of ``results``: one row per (kind, subject), the conclusion a string."""
    rows = []
    for r in recommendations(results).to_dict(orient="records"):
        rows.append(("recommended", f"{r['family']} {r['dtype']} {r['device']}", r["candidate"]))
    if results.goals is not None:
        for r in accuracy_goals(results).to_dict(orient="records"):
            subject = f"{r['candidate']} {r['dtype']} {r['device']} {r['quantity']}"
            rows.append(("goal", subject, "met" if r["met"] else "missed"))
    th = results.thresholds
    if not th.empty and "harmless_one_ulp" in th:
        for key, g in th.groupby(["candidate", "dtype", "device", "region"], sort=True):
            marked = g[g["harmless_one_ulp"].astype(bool)]
            t = "none" if marked.empty else f"{float(marked['t'].min()):g}"
            rows.append(("harmless", " ".join(map(str, key)), t))
    return pd.DataFrame(rows, columns=list(CONCLUSION_COLUMNS))


def compare_conclusions(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """The (kind, subject) rows where two sets of conclusions differ, or that only one
    has; columns kind, subject, a, b (missing: NaN)."""
    merged = a.merge(b, on=["kind", "subject"], how="outer", suffixes=("_a", "_b"))
    merged = merged.rename(columns={"conclusion_a": "a", "conclusion_b": "b"})
    return merged[merged["a"] != merged["b"]].reset_index(drop=True)
