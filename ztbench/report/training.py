"""The report section "Training impact", from ``training_summary.csv`` and
``training_impact.csv`` (written by ``ztbench impact --model masked`` or the bench's impact
stage): what each loss does to a trained masked-count model.

Per family and head, a table over the candidates (held-out exact NLL per hidden count,
mean and spread over seeds, the paired difference against the family's exact loss and
whether it exceeds three seed standard deviations, non-finite runs, time per step, how
many fitted means fall below 1), and one figure: the held-out NLL of every run, seeds as
points.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ztbench.core.schema import FAMILY_NAMES
from ztbench.core.significance import exceeds_seed_noise
from ztbench.io.errors import UserError
from ztbench.report import plots
from ztbench.report.tables import fmt, markdown_table, ordered

TITLE = "## Training impact"
RUNS_FILE = "training_impact.csv"
SUMMARY_FILE = "training_summary.csv"
FIGURE = "training-heldout-nll.png"
HEAD_TEXT: dict[str, str] = {
    "published": "published head ({mean} = clamp(exp(y) + 1, max = 1e7))",
    "free": "free head (log {mean})",
}
HEAD_COST = "published head, exact loss"


def head_text(family: str, head: str) -> str:
    """How a head maps the network's output to the family's mean."""
    mean = "lam" if family == "ztpoisson" else "mu"
    return HEAD_TEXT.get(head, head).format(mean=mean)


@dataclass(frozen=True)
class TrainingCost:
    """What a candidate costs a trained model against its family's exact loss: held-out
    NLL difference per hidden count (mean and standard deviation of the per-seed paired
    differences), relative to the exact loss's NLL, and whether it exceeds 3 sd."""

    family: str
    head: str
    candidate: str
    reference: str
    diff_nats: float
    diff_std: float
    diff_percent: float
    exceeds_noise: bool
    nonfinite_seeds: int


def read_training(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(runs, summary), or None when the directory has no training files."""
    rp, sp = directory / RUNS_FILE, directory / SUMMARY_FILE
    if not rp.is_file() or not sp.is_file():
        return None
    try:
        return pd.read_csv(rp), pd.read_csv(sp)
    except (OSError, ValueError) as exc:
        raise UserError(f"{directory}: cannot read the training files ({exc})") from None


def training_costs(summary: pd.DataFrame, runs: pd.DataFrame) -> list[TrainingCost]:
    """One :class:`TrainingCost` per candidate other than its family's reference, and per
    family the published head's own cost: the exact loss through the published head
    against the exact loss through the free head (paired by seed)."""
    out = []
    for r in summary.to_dict(orient="records"):
        if r["candidate"] == r["reference"]:
            continue
        ref = summary[(summary["family"] == r["family"]) & (summary["head"] == r["head"])
                      & (summary["candidate"] == r["reference"])]  # fmt: skip
        ref_nll = float(ref["nll_mean"].iloc[0]) if not ref.empty else np.nan
        out.append(TrainingCost(
            r["family"], r["head"], r["candidate"], r["reference"], float(r["diff_mean"]),
            float(r["diff_std"]), 100.0 * float(r["diff_mean"]) / ref_nll,
            str(r["diff_exceeds_3sd"]).lower() == "true", int(r["nonfinite_seeds"]),
        ))  # fmt: skip
    for fam in dict.fromkeys(summary["family"]):
        ref_id = summary[summary["family"] == fam]["reference"].iloc[0]
        ref = runs[(runs["family"] == fam) & (runs["candidate"] == ref_id)]
        heads = ref.pivot_table(index="seed", columns="head", values="heldout_nll")
        if not {"published", "free"} <= set(heads.columns):
            continue
        diff = (heads["published"] - heads["free"]).to_numpy(dtype=np.float64)
        std = float(diff.std(ddof=1)) if len(diff) > 1 else np.nan
        mean = float(diff.mean())
        out.append(TrainingCost(
            fam, "published", HEAD_COST, ref_id, mean, std,
            100.0 * mean / float(heads["free"].mean()),
            exceeds_seed_noise(mean, std), 0,
        ))  # fmt: skip
    return out


def _table(part: pd.DataFrame) -> str:
    rows = []
    for r in part.to_dict(orient="records"):
        is_ref = r["candidate"] == r["reference"]
        rows.append({
            "candidate": f"`{r['candidate']}`" + (" (exact)" if is_ref else ""),
            "held-out NLL / count": f"{fmt(r['nll_mean'], 4)} ± {fmt(r['nll_std'], 1)}",
            "minus exact": "" if is_ref else f"{fmt(r['diff_mean'], 3)} ± {fmt(r['diff_std'], 1)}",
            "> 3 sd": "" if is_ref else ("yes" if str(r["diff_exceeds_3sd"]).lower() == "true"
                                         else "no"),
            "non-finite runs": f"{int(r['nonfinite_seeds'])} / {int(r['seeds'])}",
            "s / step": fmt(r["seconds_per_step"], 2),
            "mu < 1": fmt(r["frac_mu_lt_1"], 2),
        })  # fmt: skip
    return markdown_table(pd.DataFrame(rows))


def _figure(runs: pd.DataFrame, out: Path) -> plots.Figure | None:
    """Held-out NLL per run: one panel per family and head, candidates on the y axis,
    seeds as points (non-finite runs marked at the panel's right edge)."""
    keys = [(f, h) for f in ordered(runs["family"], FAMILY_NAMES)
            for h in dict.fromkeys(runs[runs["family"] == f]["head"])]  # fmt: skip
    if not keys:
        return None
    fig, axes = plt.subplots(len(keys), 1, figsize=(8.5, 1.2 + 1.0 * sum(
        runs[runs["family"] == f]["candidate"].nunique() for f, _ in keys)), squeeze=False,
        layout="constrained")  # fmt: skip
    for ax, (fam, head) in zip(axes[:, 0], keys, strict=True):
        part = runs[(runs["family"] == fam) & (runs["head"] == head)]
        cands = list(dict.fromkeys(part["candidate"]))
        finite = part["heldout_nll"].to_numpy(float)
        right = np.nanmax(finite) if np.isfinite(finite).any() else 1.0
        for i, c in enumerate(cands):
            y = part[part["candidate"] == c]["heldout_nll"].to_numpy(float)
            ok = np.isfinite(y)
            ax.plot(y[ok], np.full(ok.sum(), i), "o", ms=6, alpha=0.8)
            if (~ok).any():
                ax.plot(np.full((~ok).sum(), right), np.full((~ok).sum(), i), "x", color="red",
                        ms=8, label="non-finite run" if i == 0 else None)  # fmt: skip
        ax.set_yticks(range(len(cands)), cands, fontsize=9)
        ax.set_ylim(-0.6, len(cands) - 0.4)
        ax.set_title(f"{fam}, {head_text(fam, head)}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("held-out exact NLL per hidden count (nats; lower is better)")
    plots._save(fig, out / FIGURE)
    return plots.Figure(FIGURE, "Held-out exact NLL per hidden count of each training run "
                        "(one point per seed).")  # fmt: skip


def training_section(directory: Path | str) -> str:
    """The Markdown of the section (its figure written into ``directory``)."""
    directory = Path(directory)
    read = read_training(directory)
    if read is None:
        return (f"No {RUNS_FILE} / {SUMMARY_FILE} in this directory (run `ztbench impact "
                "DATASET --model masked` or `ztbench bench`): no training impact.\n")
    runs, summary = read
    first = runs.iloc[0]
    md = [
        f"A masked-count network is trained on {first['dataset']} ({int(first['genes'])} most "
        f"expressed genes, {int(first['train_cells'])} training cells) with each loss: the "
        "same initialisation, batches and hidden counts per seed for every loss. Each run is "
        f"then scored on {int(first['heldout_cells'])} held-out cells by the exact "
        "zero-truncated NLL (float64) of their hidden nonzero counts. `minus exact`: the "
        "paired per-seed difference against the family's exact loss, mean ± standard "
        "deviation over seeds; `> 3 sd`: whether it exceeds three of those deviations. The "
        "settings are in env.json (`stages.impact.training`).\n"
    ]
    for (fam, head), part in summary.groupby(["family", "head"], sort=False):
        md.append(f"### {fam} · {head_text(fam, head)}\n")
        md.append(_table(part) + "\n")
    fig = _figure(runs, directory)
    if fig is not None:
        md.append(f"![{fig.caption}]({fig.path})\n\n{fig.caption}\n")
    return "\n".join(md)
