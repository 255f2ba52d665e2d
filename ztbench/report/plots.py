"""Report figures (matplotlib, Agg backend): error heatmaps, threshold sweeps, Pareto fronts.

Every figure is written atomically as a modest-dpi PNG (the committed report must stay
small) and returned with its caption. Colour maps are colour-blind safe (cividis); a bin
with a failure (NaN/inf where the reference is finite) is drawn red AND hatched, so it
reads as distinct without colour; a bin without points is light grey.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

from ztbench.core.schema import DEVICES, DTYPE_NAMES, FAMILY_NAMES

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, PathPatch
from matplotlib.path import Path as MplPath
from matplotlib.ticker import LogLocator, NullFormatter, NullLocator
from PIL import Image

from ztbench.core import rules
from ztbench.io.atomic import atomic_path
from ztbench.report.data import Results
from ztbench.report.tables import RANK_MODE, ordered, speed_table

DPI = 72
PNG_COLORS = 256
CMAP = "cividis"
FAIL_COLOR = "#d62728"
EMPTY_COLOR = "#e6e6e6"
# colour scale cap (log10 ulp): 1e20 ulp is past every digit even in float64 (2^53 ~ 9e15);
# larger errors take the top colour (the colour bar shows an arrow)
VMAX_CAP = 20.0
NBINS_X = 48
NBINS_Y = 28
# ztnb heatmaps: one column per band of k (a max over the band, so random samples count)
K_BANDS: tuple[tuple[str, float, float], ...] = (
    ("k = 1", 1.0, 1.0),
    ("2 ≤ k ≤ 100", 2.0, 100.0),
    ("k > 100", 101.0, math.inf),
)
SWEEP_STYLES = {"float64": ("#0072b2", "o"), "float32": ("#e69f00", "s"),
                "bfloat16": ("#009e73", "^"), "float16": ("#cc79a7", "D")}  # fmt: skip


@dataclass(frozen=True)
class Figure:
    """A written figure: its file (relative to the results directory) and caption."""

    path: str
    caption: str


def _save(fig: plt.Figure, path: Path) -> None:
    """Write ``fig`` as a PNG of at most :data:`PNG_COLORS` colours (a palette: a third of
    the bytes of matplotlib's RGBA, the same figure to the eye), atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    buf.seek(0)
    with Image.open(buf) as image:
        small = image.convert("RGB").quantize(PNG_COLORS, method=Image.Quantize.MEDIANCUT)
    with atomic_path(path) as tmp:
        small.save(tmp, format="PNG", optimize=True)


# ----------------------------------------------------------------------------- heatmaps


def _log_ulp(ulp: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log10(np.maximum(ulp, 1e-300))


def bin_max(x: np.ndarray, y: np.ndarray, err: np.ndarray, fail: np.ndarray,
            xedges: np.ndarray, yedges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Max of ``err`` per (log10 x, log10 y) bin, and whether a bin holds a failure.

    Returns ``(values, failed)`` of shape (len(yedges)-1, len(xedges)-1); bins without
    points are NaN in ``values``.
    """
    nx, ny = len(xedges) - 1, len(yedges) - 1
    lx, ly = np.log10(x), np.log10(y)
    ix = np.clip(np.searchsorted(xedges, lx, side="right") - 1, 0, nx - 1)
    iy = np.clip(np.searchsorted(yedges, ly, side="right") - 1, 0, ny - 1)
    flat = iy * nx + ix
    vals = np.full(nx * ny, -np.inf)
    count = np.zeros(nx * ny, dtype=np.int64)
    np.add.at(count, flat, 1)
    good = ~fail & np.isfinite(err)
    np.maximum.at(vals, flat[good], err[good])
    failed = np.zeros(nx * ny, dtype=bool)
    failed[flat[~good]] = True
    vals[count == 0] = np.nan
    vals[failed] = np.nan
    vals[(count > 0) & ~failed & np.isneginf(vals)] = np.nan
    return vals.reshape(ny, nx), failed.reshape(ny, nx)


def nbins_for(n_points: int, most: int) -> int:
    """Bins per axis: fewer for sparse data (about 16 points per bin on a full grid, so
    that grids and samples of a few thousand points leave few empty bins)."""
    return int(min(most, max(10, math.sqrt(max(n_points, 1)) / 4)))


def _edges(values: list[np.ndarray], nbins: int) -> np.ndarray:
    allv = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values] or [np.array([1.0])])
    if allv.size == 0:
        allv = np.array([1.0, 10.0])
    lo, hi = np.log10(allv.min()), np.log10(allv.max())
    if hi - lo < 1:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) / nbins / 2
    return np.linspace(lo - pad, hi + pad, nbins + 1)


def _panel(ax: plt.Axes, xe: np.ndarray, ye: np.ndarray, vals: np.ndarray, failed: np.ndarray,
           vmax: float) -> object:  # fmt: skip
    X, Y = 10.0**xe, 10.0**ye
    ax.set_facecolor(EMPTY_COLOR)
    mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(vals), cmap=CMAP, vmin=0.0, vmax=vmax,
                         shading="flat", rasterized=True)  # fmt: skip
    if failed.any():
        ax.pcolormesh(
            X,
            Y,
            np.ma.masked_where(~failed, np.ones_like(vals)),
            cmap=ListedColormap([FAIL_COLOR]),
            shading="flat",
            rasterized=True,
        )
        ax.add_artist(_hatch_patch(X, Y, failed))  # add_patch would scan it for limits
    _log_axes(ax)
    return mesh


def _hatch_patch(X: np.ndarray, Y: np.ndarray, failed: np.ndarray) -> PathPatch:
    """One compound patch over every failed cell, hatched (one hatch pass, fast to draw)."""
    iy, ix = np.nonzero(failed)
    x0, x1, y0, y1 = X[ix], X[ix + 1], Y[iy], Y[iy + 1]
    verts = np.stack(
        [
            np.stack([x0, y0], 1),
            np.stack([x1, y0], 1),
            np.stack([x1, y1], 1),
            np.stack([x0, y1], 1),
            np.stack([x0, y0], 1),
        ],
        axis=1,
    ).reshape(-1, 2)
    cell = [MplPath.MOVETO, *[MplPath.LINETO] * 3, MplPath.CLOSEPOLY]
    codes = np.tile(cell, len(ix))
    return PathPatch(MplPath(verts, codes), facecolor="none", edgecolor="black", hatch="xxx",
                     linewidth=0.0)  # fmt: skip


def _log_axes(ax: plt.Axes) -> None:
    """Log axes with a few major ticks and no minor ones (fast, legible when small)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10.0, numticks=5))
        axis.set_minor_locator(NullLocator())


def rule_curves(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The published ztnb switch curves as theta(mu), NaN where a curve does not exist.

    Each is the boundary of the set where the rule approximates
    (:mod:`ztbench.core.rules`): the code as published (bento-sc 0.0.8), min(t - mu,
    pair_curve_theta(mu)) (its product condition is empty for mu <= 1 - 1e-8); the
    October 2024 code, t - mu; the text, min(t - mu, 1 + t/(mu - 1)) for mu > 1.
    """
    t = rules.ZTNB_THRESHOLD
    total = np.where(mu < t, rules.sum_curve_theta(mu, t), np.nan)
    pair = rules.pair_curve_theta(mu, t)
    hyper = np.where(mu > 1, rules.product_curve_theta(mu, t), np.inf)
    return np.minimum(total, pair), total, np.minimum(total, hyper)


def _ztnb_rule_curves(ax: plt.Axes, xe: np.ndarray, ye: np.ndarray) -> None:
    mu = np.logspace(xe[0], min(xe[-1], np.log10(rules.ZTNB_THRESHOLD) - 1e-9), 300)
    code, code_2024, text = rule_curves(mu)
    ax.plot(mu, code, color="white", lw=2.0)
    ax.plot(mu, code_2024, color="#bbbbbb", lw=1.2, ls=":")
    ax.plot(mu, text, color="#ff7f0e", lw=1.4, ls="--")
    ax.set_xlim(10.0 ** xe[0], 10.0 ** xe[-1])
    ax.set_ylim(10.0 ** ye[0], 10.0 ** ye[-1])


def rule_curve_legend() -> list[Line2D]:
    """Legend entries of the published ztnb switch curves that :func:`_ztnb_rule_curves`
    draws (same colours and styles)."""
    t = rules.ZTNB_THRESHOLD
    return [Line2D([], [], color="white", lw=1.6,
                   label=f"code: (mu-1+1e-8)(theta+1e-8) > {t:g} or mu + theta > {t:g}"),
            Line2D([], [], color="#bbbbbb", lw=1.2, ls=":",
                   label=f"October 2024 code: theta + mu > {t:g}"),
            Line2D([], [], color="#ff7f0e", lw=1.4, ls="--",
                   label=f"text: mu + theta > {t:g} or (mu-1)(theta-1) > {t:g}")]  # fmt: skip


def _read_heat(results: Results, family: str, cand: str, dtype: str, device: str,
               quantity: str, xcol: str, ycol: str) -> pd.DataFrame:  # fmt: skip
    cols = [xcol, ycol, "ulp_err", "failure"] + (["k"] if "k" not in (xcol, ycol) else [])
    return results.read_points(cols, family=family, candidate=cand, dtype=dtype, device=device,
                               mode=RANK_MODE, quantity=quantity)  # fmt: skip


def heatmap_ztpoisson(results: Results, out: Path, name: str, candidates: list[str],
                      dtypes: list[str], device: str, quantity: str) -> Figure | None:  # fmt: skip
    """log10 ulp error over (lam, k): rows candidates, columns dtypes."""
    data = {(c, d): _read_heat(results, "ztpoisson", c, d, device, quantity, "lam", "k")
            for c in candidates for d in dtypes}  # fmt: skip
    data = {key: df for key, df in data.items() if not df.empty}
    if not data:
        return None
    rows = [c for c in candidates if any((c, d) in data for d in dtypes)]
    n = max(len(df) for df in data.values())
    xe = _edges([df["lam"].to_numpy() for df in data.values()], nbins_for(n, NBINS_X))
    ye = _edges([df["k"].to_numpy() for df in data.values()], nbins_for(n, NBINS_Y))
    binned = {key: bin_max(df["lam"].to_numpy(), df["k"].to_numpy(),
                           _log_ulp(df["ulp_err"].to_numpy()), df["failure"].to_numpy(), xe, ye)
              for key, df in data.items()}  # fmt: skip
    vmax = _vmax(binned)
    fig, axes = plt.subplots(
        len(rows),
        len(dtypes),
        figsize=(3.3 * len(dtypes) + 1.2, 2.5 * len(rows) + 1.3),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    mesh = None
    for i, c in enumerate(rows):
        for j, d in enumerate(dtypes):
            ax = axes[i, j]
            if (c, d) not in binned:
                ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
                ax.set_facecolor(EMPTY_COLOR)
            else:
                mesh = _panel(ax, xe, ye, *binned[(c, d)], vmax)
                ax.axvline(rules.ZTP_THRESHOLD, color="white", lw=1.8)
            ax.set_title(f"{c.split('/', 1)[1]} · {d}", fontsize=10)
            if i == len(rows) - 1:
                ax.set_xlabel("lam (mean, log scale)")
            if j == 0:
                ax.set_ylabel("k (count, log scale)")
    what = "value" if quantity == "value" else f"gradient {quantity}"
    fig.suptitle(f"ztpoisson: log10 ulp error of the {what} over (lam, k), {device}, eager\n"
                 "max over each bin", fontsize=12)  # fmt: skip
    legend = [Patch(facecolor=FAIL_COLOR, hatch="xxx", edgecolor="black",
                    label="failure (NaN/inf) in bin"),
              Patch(facecolor=EMPTY_COLOR, edgecolor="grey", label="no points"),
              Line2D([], [], color="white", lw=1.6, marker="",
                     label=f"published switch lam = {rules.ZTP_THRESHOLD:g}",
                     markeredgecolor="black", path_effects=None)]  # fmt: skip
    _finish(fig, axes, mesh, legend)
    _save(fig, out / name)
    return Figure(
        name,
        f"ztpoisson {what}: log10 ulp error over (lam, k); rows "
        f"{', '.join(f'`{c}`' for c in rows)}; columns {', '.join(dtypes)}.",
    )


def heatmap_ztnb(results: Results, out: Path, name: str, candidates: list[str], dtype: str,
                 device: str, quantity: str,
                 zoom: tuple[tuple[float, float], tuple[float, float]] | None = None,
                 window: str = "the published rules' neighbourhood") -> Figure | None:  # fmt: skip
    """log10 ulp error over (mu, theta): rows candidates, columns bands of k.

    ``zoom``: ``((mu_min, mu_max), (theta_min, theta_max))`` to draw only that window,
    named ``window`` in the title and caption.
    """
    data = {c: _read_heat(results, "ztnb", c, dtype, device, quantity, "mu", "theta")
            for c in candidates}  # fmt: skip
    data = {c: df for c, df in data.items() if not df.empty}
    if not data:
        return None
    if zoom is not None:
        (x0, x1), (y0, y1) = zoom
        data = {c: df[(df["mu"] >= x0) & (df["mu"] <= x1) & (df["theta"] >= y0)
                      & (df["theta"] <= y1)] for c, df in data.items()}  # fmt: skip
        data = {c: df for c, df in data.items() if not df.empty}
        if not data:
            return None
    rows = list(data)
    n = max(len(df) for df in data.values()) // len(K_BANDS)
    xe = _edges([df["mu"].to_numpy() for df in data.values()], nbins_for(n, NBINS_X))
    ye = _edges([df["theta"].to_numpy() for df in data.values()], nbins_for(n, NBINS_Y + 8))
    binned = {}
    for c, df in data.items():
        k = df["k"].to_numpy()
        for b, (_, lo, hi) in enumerate(K_BANDS):
            m = (k >= lo) & (k <= hi)
            if m.any():
                binned[(c, b)] = bin_max(df["mu"].to_numpy()[m], df["theta"].to_numpy()[m],
                                         _log_ulp(df["ulp_err"].to_numpy()[m]),
                                         df["failure"].to_numpy()[m], xe, ye)  # fmt: skip
    vmax = _vmax(binned)
    nb = len(K_BANDS)
    fig, axes = plt.subplots(len(rows), nb, figsize=(3.3 * nb + 1.2, 2.5 * len(rows) + 1.3),
                             squeeze=False, sharex=True, sharey=True)  # fmt: skip
    mesh = None
    for i, c in enumerate(rows):
        for j, (label, _, _) in enumerate(K_BANDS):
            ax = axes[i, j]
            if (c, j) not in binned:
                ax.text(0.5, 0.5, "no points", ha="center", transform=ax.transAxes)
                ax.set_facecolor(EMPTY_COLOR)
                _log_axes(ax)
            else:
                mesh = _panel(ax, xe, ye, *binned[(c, j)], vmax)
                _ztnb_rule_curves(ax, xe, ye)
            ax.set_title(f"{c.split('/', 1)[1]} · {label}", fontsize=10)
            if i == len(rows) - 1:
                ax.set_xlabel("mu (mean, log scale)")
            if j == 0:
                ax.set_ylabel("theta (log scale)")
    what = "value" if quantity == "value" else f"gradient {quantity}"
    window = "" if zoom is None else f" ({window})"
    fig.suptitle(f"ztnb: log10 ulp error of the {what} over (mu, theta){window}, {dtype}, "
                 f"{device}, eager\nmax over each bin and band of k", fontsize=12)  # fmt: skip
    legend = [Patch(facecolor=FAIL_COLOR, hatch="xxx", edgecolor="black",
                    label="failure (NaN/inf) in bin"),
              Patch(facecolor=EMPTY_COLOR, edgecolor="grey", label="no points"),
              *rule_curve_legend()]  # fmt: skip
    _finish(fig, axes, mesh, legend)
    _save(fig, out / name)
    return Figure(
        name,
        f"ztnb {what}, {dtype}: log10 ulp error over (mu, theta){window} by "
        "band of k; "
        f"rows {', '.join(f'`{c}`' for c in rows)}.",
    )


def _vmax(binned: dict) -> float:
    finite = [v[np.isfinite(v)] for v, _ in binned.values()]
    finite = [f for f in finite if f.size]
    vmax = max((float(f.max()) for f in finite), default=1.0)
    return float(min(VMAX_CAP, max(1.0, math.ceil(vmax))))


def _finish(fig: plt.Figure, axes: np.ndarray, mesh: object, legend: list) -> None:
    h = fig.get_figheight()
    # as many legend columns as the figure's width holds (about 4.5 inches each), and the
    # bottom margin for its rows: the legend never covers the axes' labels
    ncol = max(1, min(len(legend), int(fig.get_figwidth() / 4.5)))
    rows = -(-len(legend) // ncol)
    fig.subplots_adjust(left=0.1, right=0.88, top=1 - 0.95 / h, bottom=(0.75 + 0.25 * rows) / h,
                        hspace=0.32, wspace=0.08)  # fmt: skip
    if mesh is not None:
        cax = fig.add_axes((0.9, 0.15, 0.018, 0.7))
        vmax = mesh.norm.vmax  # type: ignore[attr-defined]
        cb = fig.colorbar(mesh, cax=cax, extend="max" if vmax >= VMAX_CAP else "neither")
        cb.set_label(
            "log10(ulp error)  (0 = within 1 ulp"
            + (f"; top colour = {VMAX_CAP:g} or more)" if vmax >= VMAX_CAP else ")")
        )
    leg = fig.legend(handles=legend, loc="lower center", ncol=ncol, fontsize=9, frameon=True,
                     facecolor="#b0b0b0")  # fmt: skip
    leg.get_frame().set_edgecolor("black")


# ----------------------------------------------------------------------------- sweeps


def sweep_plot(results: Results, out: Path, name: str) -> Figure | None:
    """Max and p99 ulp error of each threshold family against t, per dtype (first device),
    over the whole domain; and the rule's own cost (ulp of the full NLL) where measured."""
    t = results.thresholds
    t = t[t["region"] == "all"]
    if t.empty:
        return None
    cands = list(dict.fromkeys(t["candidate"]))
    fig, axes = plt.subplots(1, len(cands), figsize=(4.6 * len(cands), 4.4), squeeze=False)
    for ax, cand in zip(axes[0], cands, strict=True):
        ct = t[t["candidate"] == cand]
        device = ordered(ct["device"], DEVICES)[0]
        ct = ct[ct["device"] == device]
        for dtype in ordered(ct["dtype"], DTYPE_NAMES):
            d = ct[ct["dtype"] == dtype].sort_values("t")
            color, marker = SWEEP_STYLES.get(dtype, ("black", "o"))
            fin = np.isfinite(d["max_ulp"])
            ax.plot(d["t"][fin], d["max_ulp"][fin], color=color, marker=marker, ms=3.5,
                    label=f"{dtype} max")  # fmt: skip
            ax.plot(d["t"], d["p99_ulp"], color=color, ls="--", lw=1, label=f"{dtype} p99")
            if d["rule_max_ulp"].notna().any():
                ax.plot(d["t"], d["rule_max_ulp"], color=color, ls=":", lw=1.4,
                        label=f"{dtype} rule's cost")  # fmt: skip
            best = d[d["best"]]
            if not best.empty:
                ax.plot(best["t"], best["max_ulp"], marker="*", ms=14, color=color,
                        markeredgecolor="black", ls="none")  # fmt: skip
        for tp in sorted(set(ct[ct["published"]]["t"])):
            ax.axvline(tp, color="black", ls=":", lw=1.2)
            ax.annotate(f"published t={tp:g}", (tp, 0), xycoords=("data", "axes fraction"),
                        xytext=(3, 4), textcoords="offset points", fontsize=8)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("threshold t (log scale)")
        ax.set_ylabel("value error (ulp, log scale)")
        ax.set_title(f"{cand} ({device}, eager)", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(Line2D([], [], marker="*", ms=12, color="grey", markeredgecolor="black",
                          ls="none"))  # fmt: skip
    labels.append("best t (per dtype)")
    handles.append(Line2D([], [], color="black", ls=":"))
    labels.append("published t")
    fig.suptitle("Threshold sweeps: max (solid) and p99 (dashed) ulp error of the value, "
                 "and the rule's own cost (dotted, ulp of the full NLL), against t",
                 fontsize=12)  # fmt: skip
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=9)
    _save(fig, out / name)
    return Figure(
        name,
        "Threshold sweeps: max and p99 ulp error against t per dtype, and the rule's own "
        "cost (dotted: the error beyond the same formulation without the rule); stars "
        "mark the best t, vertical dotted lines the published t. Points where the max is "
        "infinite (failures) are left out of the solid line.",
    )


# ----------------------------------------------------------------------------- Pareto


def pareto_front(speed: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (higher speed, lower error), by speed."""
    order = np.argsort(-speed, kind="stable")
    front, best = [], math.inf
    for i in order:
        if err[i] < best:
            front.append(i)
            best = err[i]
    return np.array(front, dtype=np.int64)


def pareto_plot(results: Results, out: Path, name: str, device: str,
                pass_: str = "forward+backward") -> Figure | None:  # fmt: skip
    """Max ulp error of the value against elements/s (eager, largest size), per dtype."""
    speed = speed_table(results)
    if speed.empty:
        return None
    s = results.summary
    s = s[(s["quantity"] == "value") & (s["region"] == "all") & (s["mode"] == RANK_MODE)
          & (s["device"] == device) & (s["status"] == "ok")]  # fmt: skip
    sp = speed[(speed["device"] == device) & (speed["mode"] == RANK_MODE)
               & (speed["pass"] == pass_)]  # fmt: skip
    merged = s.merge(sp, on=["family", "candidate", "dtype", "device", "mode"])
    if merged.empty:
        return None
    fams = ordered(merged["family"], FAMILY_NAMES)
    dtypes = ordered(merged["dtype"], DTYPE_NAMES)
    fig, axes = plt.subplots(len(fams), len(dtypes), figsize=(4.8 * len(dtypes),
                             4.0 * len(fams) + 0.8), squeeze=False)  # fmt: skip
    for i, fam in enumerate(fams):
        for j, dtype in enumerate(dtypes):
            ax = axes[i, j]
            d = merged[(merged["family"] == fam) & (merged["dtype"] == dtype)]
            if d.empty:
                ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
                continue
            x = d["elements_per_s"].to_numpy(dtype=float)
            y = d["max_ulp"].to_numpy(dtype=float)
            fin = np.isfinite(y)
            top = (np.nanmax(y[fin]) if fin.any() else 1.0) * 30
            yp = np.where(fin, np.maximum(y, 0.1), top)
            ax.scatter(x[fin], yp[fin], color="#0072b2", s=28, zorder=3)
            if (~fin).any():
                ax.scatter(x[~fin], yp[~fin], color=FAIL_COLOR, marker="X", s=50, zorder=3)
            front = pareto_front(x, np.where(fin, y, np.inf))
            front = front[np.isfinite(y[front])]
            if front.size:
                ax.step(x[front], yp[front], where="post", color="#e69f00", lw=1.5, zorder=2)
                ax.scatter(x[front], yp[front], s=110, facecolors="none", edgecolors="#e69f00",
                           linewidths=1.8, zorder=4)  # fmt: skip
            order = np.argsort(x)
            for n, m in enumerate(o for o in order if fin[o]):
                ax.annotate(d["candidate"].iloc[m].split("/", 1)[1], (x[m], yp[m]),
                            xytext=(4, 4 if n % 2 == 0 else -10), textcoords="offset points",
                            fontsize=7.5)  # fmt: skip
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_minor_locator(NullLocator())
            ax.set_ylim(top=top * 30)
            size = int(d["size"].iloc[0])
            ax.set_title(f"{fam} · {dtype} (size {size:.0e})", fontsize=10)
            ax.set_xlabel(f"throughput, {pass_} (elements/s, log scale)")
            ax.set_ylabel("max ulp error of the value (log)")
            ax.grid(True, alpha=0.3)
    fig.suptitle(f"Accuracy against throughput ({device}, eager, {pass_}): lower right is "
                 "better", fontsize=12)  # fmt: skip
    handles = [
        Line2D([], [], ls="none", marker="o", color="#0072b2", label="candidate (labelled)"),
        Line2D([], [], ls="none", marker="X", color=FAIL_COLOR, ms=8,
               label="failures (max ulp = inf), drawn at the top; see the leaderboards"),
        Line2D([], [], color="#e69f00", marker="o", mfc="none", ms=10, mew=1.8,
               label="Pareto front (no other candidate is both faster and more accurate)"),
    ]  # fmt: skip
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9)
    _save(fig, out / name)
    return Figure(
        name,
        f"Accuracy against throughput on {device} ({pass_}, eager, the largest "
        "size measured); the orange steps join the Pareto-optimal candidates.",
    )
