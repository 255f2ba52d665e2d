"""The report section "What it does to a fit", from ``impact_genes.csv`` and
``impact_summary.csv`` (written by ``ztbench impact`` or the bench's impact stage).

Real data first (a table per dataset, model and family over candidates and dtypes, then
histograms of the excess NLL and of the mu and theta errors), then the synthetic-truth
heatmaps over (mu, theta) with the published switch curves, then one verdict paragraph
per published rule or head naming the genes it hurts most.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ztbench.core.schema import DTYPE_NAMES
from ztbench.core.textfmt import file_name
from ztbench.io.errors import UserError
from ztbench.report import plots
from ztbench.report.tables import figure_markdown, fmt, markdown_table, ordered

TITLE = "## What it does to a fit"
GENES_FILE = "impact_genes.csv"
SUMMARY_FILE = "impact_summary.csv"
EXCESS_FLOOR = 1e-12  # log scales: an excess below this is drawn at it
# drawn in the histograms and heatmaps (when measured), with every published variant
MAIN = ("ztnb/ztbench", "ztnb/stable", "ztpoisson/ztbench", "ztpoisson/stable")
SOURCE_NOTE = (
    "Counts: 10x Genomics (CC BY 4.0), as kept in scanpy's test data; see the README's Data "
    "section."
)


def _read(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    gp = directory / GENES_FILE
    if not gp.is_file():
        return None
    summary = read_summary(directory)
    if summary is None:
        return None
    try:
        return pd.read_csv(gp, keep_default_na=False, na_values=["nan"]), summary
    except (OSError, ValueError) as exc:
        raise UserError(f"{directory}: cannot read the impact files ({exc})") from None


def read_summary(directory: Path) -> pd.DataFrame | None:
    """impact_summary.csv, or None when the directory has none."""
    sp = directory / SUMMARY_FILE
    if not sp.is_file():
        return None
    try:
        return pd.read_csv(sp)
    except (OSError, ValueError) as exc:
        raise UserError(f"{directory}: cannot read the impact files ({exc})") from None


def _published(frame: pd.DataFrame) -> set[str]:
    """The labels of the published rules and head (the impact files' ``published`` column)."""
    col = frame["published"].astype(str).str.lower() == "true"
    return set(frame.loc[col, "candidate"])


def _shown(frame: pd.DataFrame) -> list[str]:
    pub = _published(frame)
    return [c for c in dict.fromkeys(frame["candidate"]) if c in MAIN or c in pub]


def _table(s: pd.DataFrame) -> str:
    rows = []
    for r in s.to_dict(orient="records"):
        rows.append(
            {
                "candidate": f"`{r['candidate']}`",
                "dtype": r["dtype"],
                "genes": r["genes"],
                "ok / boundary / failed": f"{r['ok']} / {r['boundary']} / {r['failed']}",
                "> 1e-4": fmt(r["frac_excess_gt_0.0001"], 2),
                "> 1e-3": fmt(r["frac_excess_gt_0.001"], 2),
                "> 1e-2": fmt(r["frac_excess_gt_0.01"], 2),
                "median excess": fmt(r["median_excess"], 2),
                "max excess": fmt(r["max_excess"], 2),
                "mu err > 10%": fmt(r["frac_mu_err_gt_10pct"], 2),
                "theta err > 10%": fmt(r["frac_theta_err_gt_10pct"], 2),
                "E[k|k>0] err (median)": fmt(r["median_tmean_err"], 2),
            }
        )
    return markdown_table(pd.DataFrame(rows))


def _hist(g: pd.DataFrame, out: Path, name: str, title: str) -> plots.Figure | None:
    labels = _shown(g)
    dtypes = ordered(g["dtype"], DTYPE_NAMES)
    if not labels or not dtypes:
        return None
    fig, axes = plt.subplots(len(dtypes), 3, figsize=(13, 2.8 * len(dtypes)), squeeze=False)
    bins_ex = np.linspace(np.log10(EXCESS_FLOOR), 0.5, 40)
    bins_rel = np.linspace(-6, 1, 36)
    for i, d in enumerate(dtypes):
        for c in labels:
            sel = g[(g["candidate"] == c) & (g["dtype"] == d) & (g["status"] != "failed")]
            ex = np.log10(np.maximum(sel["excess_nll_per_count"].to_numpy(float), EXCESS_FLOOR))
            axes[i, 0].hist(ex, bins=bins_ex, histtype="step", label=c)
            inner = sel[sel["ref_status"] == "ok"]
            for j, p in ((1, "mu"), (2, "theta")):
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = np.abs(inner[p].to_numpy(float) / inner[f"{p}_ref"].to_numpy(float) - 1)
                rel = np.log10(np.maximum(rel[np.isfinite(rel)], 1e-6))
                axes[i, j].hist(rel, bins=bins_rel, histtype="step", label=c)
        axes[i, 0].set_ylabel(f"{d}\ngenes")
    for j, xl in enumerate(
        (
            "log10 excess NLL per count (nats)",
            "log10 |mu / mu_exact - 1| (interior)",
            "log10 |theta / theta_exact - 1| (interior)",
        )
    ):
        axes[-1, j].set_xlabel(xl)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    plots._save(fig, out / name)
    return plots.Figure(name, title)


def _heat(g: pd.DataFrame, out: Path, name: str, dtype: str, column: str) -> plots.Figure | None:
    labels = _shown(g)
    sel = g[g["dtype"] == dtype]
    if not labels or sel.empty:
        return None
    mus = np.unique(sel["mu_true"].to_numpy(float))
    ths = np.unique(sel["theta_true"].to_numpy(float))
    ncol = min(3, len(labels))
    nrow = -(-len(labels) // ncol)
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(4.3 * ncol, 3.4 * nrow), squeeze=False, layout="constrained"
    )
    xe = np.log10(np.geomspace(mus[0], mus[-1], len(mus)))
    dx = (xe[1] - xe[0]) / 2 if len(xe) > 1 else 0.5
    ye = np.log10(np.geomspace(ths[0], ths[-1], len(ths)))
    dy = (ye[1] - ye[0]) / 2 if len(ye) > 1 else 0.5
    xb = 10.0 ** np.append(xe - dx, xe[-1] + dx)
    yb = 10.0 ** np.append(ye - dy, ye[-1] + dy)
    mesh = None
    for ax, c in zip(axes.ravel(), labels, strict=False):
        cs = sel[sel["candidate"] == c]
        z = np.full((len(ths), len(mus)), np.nan)
        failed = np.zeros_like(z, dtype=bool)
        for r in cs.itertuples(index=False):
            i, j = np.searchsorted(ths, r.theta_true), np.searchsorted(mus, r.mu_true)
            if column == "excess":
                z[i, j] = np.log10(max(float(r.excess_nll_per_count), EXCESS_FLOOR))
            else:
                z[i, j] = np.log10(float(r.mu) / float(r.mu_ref))
            failed[i, j] = r.status == "failed"
        z[failed] = np.nan
        if column == "excess":
            mesh = ax.pcolormesh(xb, yb, z, cmap=plots.CMAP, vmin=np.log10(EXCESS_FLOOR), vmax=0)
        else:
            mesh = ax.pcolormesh(xb, yb, z, cmap="RdBu_r", vmin=-1, vmax=1)
        plots._log_axes(ax)
        plots._ztnb_rule_curves(ax, np.log10(xb), np.log10(yb))  # the published switches
        ax.set_title(c, fontsize=8)
        ax.set_xlabel("true mu")
        ax.set_ylabel("true theta")
    for ax in axes.ravel()[len(labels) :]:
        ax.axis("off")
    what = (
        "log10 excess NLL per count against the exact fit"
        if column == "excess"
        else "log10(mu / mu of the exact fit)"
    )
    fig.colorbar(mesh, ax=axes.ravel().tolist(), shrink=0.8, label=what)
    title = (
        f"Synthetic truth, {dtype}: {what}; the published switch curves: white the code as "
        "published, grey dotted the October 2024 code (theta + mu = 15), orange dashed the "
        "text; blank cells: failed fits"
    )
    plots._save(fig, out / name)
    return plots.Figure(name, title)


def _verdict(g: pd.DataFrame, s: pd.DataFrame, label: str) -> str | None:
    rows = s[s["candidate"] == label]
    if rows.empty:
        return None
    parts = []
    for r in rows.to_dict(orient="records"):
        d = r["dtype"]
        parts += [
            f"- {d}: {round(100 * r['frac_excess_gt_0.001'])}% of the {r['genes']} genes fit "
            "more than 1e-3 nats per count worse than the exact fit "
            f"({round(100 * r['frac_excess_gt_0.0001'])}% more than 1e-4)",
            f"- {d}: excess median {fmt(r['median_excess'], 2)}, max "
            f"{fmt(r['max_excess'], 2)} nats per count",
            f"- {d}: {r['failed']} fits failed, {r['boundary']} ran to a boundary",
            f"- {d}: mu off by more than 10% for {fmt(100 * r['frac_mu_err_gt_10pct'], 2)}% "
            f"of the {r['interior_genes']} genes with an interior exact fit",
        ]
    first = rows.iloc[0]
    worst = g[(g["candidate"] == label) & (g["dtype"] == first["dtype"])]
    worst = worst.sort_values("excess_nll_per_count", ascending=False, na_position="first")
    hurt = pd.DataFrame([{
        "gene": w["gene"], "sample mean": f"{w['sample_mean']:.3g}",
        "ones": f"{round(100 * w['frac_ones'])}%",
        "excess (nats / count)": "failed" if w["status"] == "failed"
        else fmt(w["excess_nll_per_count"], 2),
    } for w in worst.head(3).to_dict(orient="records")])  # fmt: skip
    if "exp(y) + 1" in label:
        parts.append("- with this head mu > 1 whatever the loss: a gene whose nonzero counts "
                     "are mostly 1 needs mu well below 1")  # fmt: skip
    return (f"**`{label}`** ({first['dataset']}, {first['model']} model):\n\n"
            + "\n".join(parts) + f"\n\nThe genes it hurts most ({first['dtype']}):\n\n"
            + markdown_table(hurt))  # fmt: skip


def impact_section(directory: Path | str) -> str:
    """The Markdown of the section (figures written into ``directory``)."""
    directory = Path(directory)
    read = _read(directory)
    if read is None:
        return (
            f"No {GENES_FILE} / {SUMMARY_FILE} in this directory (run `ztbench impact` or "
            "`ztbench bench`), so this section is empty.\n"
        )
    g, s = read
    md = [
        "Each gene (at least 20 nonzero cells) is fitted by maximum likelihood on its nonzero "
        "counts: once exactly (float64, certified stationary with the reference engine) and "
        "once per candidate loss and dtype (the candidate's own values and autograd gradients "
        "in that dtype, the same start, the same deterministic optimiser).\n",
        "- The headline is the excess NLL per count: the exact objective at the candidate's "
        "optimum minus at the exact optimum. A failed fit counts as above every level.\n"
        "- Parameter errors count only genes whose exact optimum is interior: for genes whose "
        "counts are almost all 1 the likelihood is flat towards mu -> 0 and the parameters "
        "are not identified.\n"
        "- Every fit starts at m = the sample mean (over the mean size factor) and theta = 1, "
        "below the published switch theta + mu = 15 for most genes: a rule whose loss jumps "
        "at its switch gives a fit that depends on the start, and started above the switch "
        "it can run away to a large theta.\n"
        "- " + SOURCE_NOTE + "\n",
    ]
    real = s[s["dataset"] != "synthetic"]
    for key, part in real.groupby(["dataset", "model", "family"], sort=False):
        ds, model, fam = key
        md.append(f"### {ds} · {model} · {fam}\n")
        md.append(_table(part) + "\n")
        gp = g[(g["dataset"] == ds) & (g["model"] == model) & (g["family"] == fam)]
        name = file_name("impact-hist", ds, model, fam, suffix=".png")
        md.append(figure_markdown(_hist(gp, directory, name, f"{ds}, {model} model, {fam}")))
    syn = g[g["dataset"] == "synthetic"]
    if not syn.empty:
        md.append("### Synthetic truth\n")
        n = int(syn["n_counts"].iloc[0])
        md.append(
            f"Each cell of the (mu, theta) grid is {n} exact zero-truncated NB draws (seeded); "
            "every fit is compared with the exact fit of the same sample, so the differences "
            "are free of sampling noise.\n"
        )
        md.append(_table(s[s["dataset"] == "synthetic"]) + "\n")
        for d in ordered(syn["dtype"], DTYPE_NAMES):
            for col in ("excess", "mu"):
                name = file_name("impact-synthetic", col, d, suffix=".png")
                fig = _heat(syn, directory, name, d, col)
                md.append(figure_markdown(fig))
    md.append("### Verdicts on the published rules\n")
    verdicts = []
    for key, part in real.groupby(["dataset", "model", "family"], sort=False):
        gp = g[(g["dataset"] == key[0]) & (g["model"] == key[1]) & (g["family"] == key[2])]
        pub = _published(part)
        for label in dict.fromkeys(part["candidate"]):
            if label in pub:
                v = _verdict(gp, part, label)
                if v:
                    verdicts.append(v)
    md.append("\n\n".join(verdicts) + "\n" if verdicts else "No published rule was fitted.\n")
    return "\n".join(md)
