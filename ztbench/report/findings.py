"""The report's first section, "Findings": what to use and what the published code costs.

On one screen (at most :data:`MAX_LINES` lines), in this order, each table linking to the
section that holds its evidence:

1. per family and dtype, the formulation to train with: the recommended candidate and, for
   the shipped loss, the ``ztbench.loss`` call; its forward+backward speed against naive;
2. what the published package and head cost a trained model (held-out nats per count,
   percent, seed spread): :mod:`ztbench.report.training`;
3. what they cost per-gene maximum-likelihood fits (the cheap bound):
   :mod:`ztbench.report.impact`;
4. per threshold rule and dtype, the smallest swept threshold from which the rule costs at
   most one ulp, or that none does (:mod:`ztbench.report.conclusions`).

Every number comes from a table of the results directory; the prose around them is fixed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ztbench.core.families import SHIPPED_CALLS
from ztbench.core.schema import DTYPE_NAMES
from ztbench.report.conclusions import conclusions
from ztbench.report.data import Results
from ztbench.report.impact import read_summary
from ztbench.report.tables import fmt, markdown_table, ordered, recommendations
from ztbench.report.training import HEAD_COST, head_text, read_training, training_costs

MAX_LINES = 40
TITLE = "## Findings"
LINKS: dict[str, str] = {
    "use": "#leaderboards",
    "training": "#training-impact",
    "per-gene": "#what-it-does-to-a-fit",
    "thresholds": "#threshold-sweeps",
}
PER_GENE_LEVEL = "frac_excess_gt_0.001"


def _use(results: Results) -> str:
    recs = recommendations(results)
    if recs.empty:
        return "No candidate was measured successfully: nothing to recommend.\n"
    rows = []
    for r in recs.to_dict(orient="records"):
        call = SHIPPED_CALLS.get(r["candidate"])
        rows.append({"family": r["family"], "dtype": r["dtype"],
                     "use": f"`{call}`" if call else f"`{r['candidate']}` (not shipped)",
                     "value max ulp": fmt(r["max_ulp"]),
                     "fwd+bwd time vs naive": fmt(r.get("cost_fb_vs_naive"), 2)})  # fmt: skip
    return (f"**Use** ([leaderboards]({LINKS['use']})); `from ztbench.loss import "
            "zt_poisson_nll, zt_negbin_nll`:\n\n" + markdown_table(pd.DataFrame(rows)) + "\n")


def _training(directory: Path) -> str:
    read = read_training(directory)
    if read is None:
        return "**Trained model:** not measured (no training_summary.csv).\n"
    rows = [{"family": c.family, "head": head_text(c.family, c.head),
             "loss": c.candidate if c.candidate == HEAD_COST else f"`{c.candidate}`",
             "held-out cost (nats / count)": f"{fmt(c.diff_nats, 3)} ± {fmt(c.diff_std, 1)}",
             "%": fmt(c.diff_percent, 2),
             "beyond seed noise": "yes" if c.exceeds_noise else "no"}
            for c in training_costs(read[1], read[0])]  # fmt: skip
    return (f"**What the published loss and head cost a trained model** ([training impact]"
            f"({LINKS['training']}); against the exact loss, and the published head against "
            "the free one, same seeds):\n\n"
            + markdown_table(pd.DataFrame(rows)) + "\n")  # fmt: skip


def _per_gene(directory: Path) -> str:
    s = read_summary(directory)
    if s is None:
        return "**Per-gene fits:** not measured (no impact_summary.csv).\n"
    s = s[(s["dataset"] != "synthetic") & (s["published"].astype(str).str.lower() == "true")]
    s = s[s["candidate"].str.contains("bento-sc|exp\\(y\\) \\+ 1", regex=True)]
    if s.empty:
        return ""
    first = ordered(s["dtype"], DTYPE_NAMES)[0]
    rows = [{"family": r["family"], "loss": f"`{r['candidate']}`", "dataset": r["dataset"],
             "genes costing > 1e-3 nats / count": fmt(r[PER_GENE_LEVEL], 2),
             "max (nats / count)": fmt(r["max_excess"], 2)}
            for r in s[s["dtype"] == first].to_dict(orient="records")]  # fmt: skip
    return (f"**Per-gene fits, the cheap bound** ([what it does to a fit]({LINKS['per-gene']}); "
            f"{first}; a per-gene fit can absorb what a shared model cannot):\n\n"
            + markdown_table(pd.DataFrame(rows)) + "\n")  # fmt: skip


def _thresholds(results: Results) -> str:
    c = conclusions(results)
    c = c[c["kind"] == "harmless"]
    if c.empty:
        return ""
    parts = c["subject"].str.split(" ", expand=True)
    c = c.assign(rule=parts[0], dtype=parts[1], region=parts[3])
    c = c[c["region"] == "all"]
    dtypes = ordered(c["dtype"], DTYPE_NAMES)
    rows = []
    for rule in dict.fromkeys(c["rule"]):
        row = {"rule": f"`{rule}`"}
        for d in dtypes:
            t = c[(c["rule"] == rule) & (c["dtype"] == d)]["conclusion"]
            row[d] = "" if t.empty else ("none is harmless" if t.iloc[0] == "none"
                                         else f"t >= {t.iloc[0]}")  # fmt: skip
        rows.append(row)
    return (f"**Harmless thresholds** ([threshold sweeps]({LINKS['thresholds']})): the smallest "
            "swept t from which the rule costs at most 1 ulp anywhere in the suite:\n\n"
            + markdown_table(pd.DataFrame(rows)) + "\n")  # fmt: skip


def findings_section(results: Results) -> str:
    """The Markdown of the Findings section (without its title)."""
    parts = [_use(results), _training(results.dir), _per_gene(results.dir), _thresholds(results)]
    text = "\n".join(p for p in parts if p)
    lines = text.count("\n")
    if lines > MAX_LINES:  # a bug, not a user's mistake: the section must fit one screen
        raise ValueError(f"the Findings section has {lines} lines (at most {MAX_LINES})")
    return text


__all__ = ["MAX_LINES", "TITLE", "findings_section"]
