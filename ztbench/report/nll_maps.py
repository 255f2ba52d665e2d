"""The original write-up's view: the exact NLL itself, with a candidate's error in nats on it.

The published loss's write-up showed the ZTNB NLL as heatmaps over (mu, theta) at a few
fixed k; the report's other heatmaps show log10 ulp errors. These figures draw the NLL
(the certified reference, in nats) where the suite has a lattice of points, and overlay
one candidate's absolute error |computed - reference| in nats:

- :func:`nll_map_ztnb`: one panel per k that has a (near-)full mu x theta lattice of at
  least :data:`MIN_SIDE` x :data:`MIN_SIDE` points (up to :data:`MAX_PANELS` of them, those
  sharing the largest lattice); colour = the NLL (log scale), hatching = the error bands
  of :data:`ERR_LEVELS`, lines = the published switch curves (:func:`plots.rule_curves`).
- :func:`nll_map_ztpoisson`: the NLL against lam, one line per small k that shares a lam
  lattice with the others, and the error in nats against lam below it; the published
  switch lam = 10 marked.

The NLL drawn is the full one, -log P(X = k | X > 0) >= 0: a loss-form candidate's
reference (without lgamma(k + 1)) gets lgamma(k + 1) back. The form is read from
summary.csv (or throughput.csv); without it the reference is drawn as it is (the caption
says so). The error is the same in either form. Only the columns needed are read from
points.parquet, filtered by pyarrow (:meth:`Results.read_points`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, LogNorm, Normalize
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogLocator, NullLocator

from ztbench.core import rules
from ztbench.report import plots
from ztbench.report.data import Results
from ztbench.report.tables import RANK_MODE

MIN_SIDE = 10
"""A ztnb lattice needs at least this many mu and theta values."""
MAX_PANELS = 4
"""At most this many values of k (ztnb panels)."""
FILL = 0.95
"""A lattice may lack this fraction of its points (uncertified references); they are grey."""
LINE_FILL = 0.8
"""...and one line of it (a row or a column) this fraction."""
ZTP_SMALL_K = 20
"""ztpoisson: the lines are drawn for k up to this (the small counts)."""
ZTP_MIN_LAM = 20
"""ztpoisson: a line needs at least this many lam values shared with the other lines."""
ERR_LEVELS: tuple[float, float] = (1e-3, 1.0)
"""|error| bands (nats) hatched on the ztnb maps: above the first, and above the second."""
HATCHES: tuple[str, str] = ("//", "xx")
"""Their hatches: sparse diagonals, then a dense cross."""
FIG_WIDTH = 12.5
"""Inches: 900 px at :data:`plots.DPI`."""
LEGEND_FACE = "#8f8f8f"
"""Mid grey behind the ztnb legend: the white, light grey and orange curves all show."""
ZTP_COLORS = "viridis"
"""The ztpoisson lines' colours, in order of k (the light end is left out)."""


@dataclass(frozen=True)
class NllPanel:
    """The data one panel (ztnb) or one line (ztpoisson) shows, at one k.

    Attributes:
        k: the count.
        x: the sorted lattice values of mu (ztnb) or lam (ztpoisson).
        y: the sorted lattice values of theta (ztnb); None for ztpoisson.
        nll: the exact NLL in nats, shape ``(len(y), len(x))`` (ztnb) or ``(len(x),)``;
            NaN where the lattice lacks the point.
        err: the candidate's ``|computed - reference|`` in nats, same shape; NaN where the
            point is missing or failed.
        failed: where the candidate's value is NaN/inf and the reference is finite.
    """

    k: float
    x: np.ndarray
    y: np.ndarray | None
    nll: np.ndarray
    err: np.ndarray
    failed: np.ndarray


# ----------------------------------------------------------------------------- lattices


def find_lattice(x: np.ndarray, y: np.ndarray, min_x: int,
                 min_y: int) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
    """The largest near-full lattice ``xs`` x ``ys`` among the points ``(x[i], y[i])``.

    Near-full: at most a fraction 1 - :data:`FILL` of its points missing (1 -
    :data:`LINE_FILL` of any one row or column); at least ``min_x`` values of x and
    ``min_y`` of y. Values are matched exactly (a suite's grid rounds the same way at every
    point). Each column's x values seed a candidate lattice; the largest is returned,
    sorted, as ``(xs, ys)``; None when there is none.
    """
    pairs = pd.DataFrame({"x": x, "y": y}).drop_duplicates()
    while not pairs.empty:  # values on too few lines of the other cannot be a lattice's
        keep = ((pairs.groupby("x")["y"].transform("size") >= LINE_FILL * min_y)
                & (pairs.groupby("y")["x"].transform("size") >= LINE_FILL * min_x))  # fmt: skip
        if keep.all():
            break
        pairs = pairs[keep]
    if pairs.empty:
        return None
    cols = {yv: frozenset(g) for yv, g in pairs.groupby("y", sort=True)["x"]}
    best: tuple[list[float], list[float]] | None = None
    for seed in dict.fromkeys(cols.values()):  # each column's x values, as a candidate
        ys = [yv for yv, s in cols.items() if len(s & seed) >= LINE_FILL * len(seed)]
        counts = Counter(xv for yv in ys for xv in cols[yv] & seed)
        xs = sorted(xv for xv, c in counts.items() if c >= LINE_FILL * len(ys))
        size = len(xs) * len(ys)
        if len(xs) < min_x or len(ys) < min_y or (best and size <= len(best[0]) * len(best[1])):
            continue
        if sum(len(cols[yv].intersection(xs)) for yv in ys) >= FILL * size:
            best = (xs, ys)
    if best is None:
        return None
    return np.array(best[0], dtype=np.float64), np.array(best[1], dtype=np.float64)


def _on(values: np.ndarray, lattice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each value in the sorted ``lattice`` and whether it is on it (exactly)."""
    i = np.clip(np.searchsorted(lattice, values), 0, len(lattice) - 1)
    return i, lattice[i] == values


def _form(results: Results, candidate: str) -> str | None:
    """The candidate's form ("full" or "loss") as summary.csv records it, or throughput.csv
    for results that predate summary.csv's column; else None."""
    for table in (results.summary, results.throughput):
        if table is None or "form" not in table:
            continue
        forms = set(table.loc[table["candidate"] == candidate, "form"].dropna().astype(str))
        if len(forms) == 1 and forms <= {"full", "loss"}:
            return forms.pop()
    return None


def _offset(form: str | None, k: float) -> float:
    """What makes the candidate's reference the full NLL at ``k``."""
    return math.lgamma(k + 1.0) if form == "loss" else 0.0


def _read(results: Results, family: str, candidate: str, dtype: str, device: str,
          params: list[str]) -> pd.DataFrame:  # fmt: skip
    return results.read_points(["k", *params, "reference", "abs_err", "failure"],
                               family=family, candidate=candidate, dtype=dtype, device=device,
                               mode=RANK_MODE, quantity="value")  # fmt: skip


def _fill(df: pd.DataFrame, index: tuple[np.ndarray, ...], shape: tuple[int, ...],
          offset: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(nll, err, failed) on the lattice from the rows of ``df`` at ``index``."""
    nll, err = np.full(shape, np.nan), np.full(shape, np.nan)
    failed = np.zeros(shape, dtype=bool)
    fail = df["failure"].to_numpy(dtype=bool)
    nll[index] = df["reference"].to_numpy(dtype=np.float64) + offset
    err[index] = np.where(fail, np.nan, df["abs_err"].to_numpy(dtype=np.float64))
    failed[index] = fail
    return nll, err, failed


def ztnb_panels(results: Results, candidate: str, dtype: str,
                device: str) -> tuple[list[NllPanel], str | None]:  # fmt: skip
    """The ztnb panels of :func:`nll_map_ztnb` and the candidate's form (None: unknown).

    Every k with a near-full mu x theta lattice (:func:`find_lattice`, at least
    :data:`MIN_SIDE` values each way) is a candidate panel; those whose lattice spans the
    same window as the largest one are kept, by k, up to :data:`MAX_PANELS` (evenly spread
    over them when there are more).
    """
    df = _read(results, "ztnb", candidate, dtype, device, ["mu", "theta"])
    form = _form(results, candidate)
    if df.empty:
        return [], form
    found: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    counts = df["k"].value_counts()
    for k in sorted(counts.index[counts >= MIN_SIDE * MIN_SIDE]):
        at = df[df["k"] == k]
        lattice = find_lattice(at["mu"].to_numpy(), at["theta"].to_numpy(), MIN_SIDE, MIN_SIDE)
        if lattice is not None:
            found[float(k)] = lattice
    if not found:
        return [], form

    def window(k: float) -> tuple[float, ...]:
        xs, ys = found[k]
        return tuple(round(math.log10(v), 2) for v in (xs[0], xs[-1], ys[0], ys[-1]))

    largest = max(found, key=lambda k: (len(found[k][0]) * len(found[k][1]), -k))
    ks = [k for k in found if window(k) == window(largest)]
    if len(ks) > MAX_PANELS:
        ks = [ks[int(i)] for i in np.unique(np.round(np.linspace(0, len(ks) - 1, MAX_PANELS)))]
    panels = []
    for k in ks:
        xs, ys = found[k]
        at = df[df["k"] == k]
        ix, on_x = _on(at["mu"].to_numpy(), xs)
        iy, on_y = _on(at["theta"].to_numpy(), ys)
        on = on_x & on_y
        grids = _fill(at[on], (iy[on], ix[on]), (len(ys), len(xs)), _offset(form, k))
        panels.append(NllPanel(k, xs, ys, *grids))
    return panels, form


def ztpoisson_lines(results: Results, candidate: str, dtype: str,
                    device: str) -> tuple[list[NllPanel], str | None]:  # fmt: skip
    """The lines of :func:`nll_map_ztpoisson` (one per k, ``y`` None) and the form.

    The k up to :data:`ZTP_SMALL_K` that share the largest near-full lam lattice (at least
    :data:`ZTP_MIN_LAM` values of lam, two values of k).
    """
    df = _read(results, "ztpoisson", candidate, dtype, device, ["lam"])
    form = _form(results, candidate)
    df = df[df["k"] <= ZTP_SMALL_K]
    lattice = (find_lattice(df["lam"].to_numpy(), df["k"].to_numpy(), ZTP_MIN_LAM, 2)
               if not df.empty else None)  # fmt: skip
    if lattice is None:
        return [], form
    lams, ks = lattice
    lines = []
    for k in ks:
        at = df[df["k"] == k]
        i, on = _on(at["lam"].to_numpy(), lams)
        grids = _fill(at[on], (i[on],), (len(lams),), _offset(form, k))
        lines.append(NllPanel(float(k), lams, None, *grids))
    return lines, form


# ----------------------------------------------------------------------------- drawing


def _what(form: str | None) -> str:
    if form is None:
        return "the candidate's reference (its form, full or loss, is not recorded here)"
    return "the full NLL, -log P(X = k | X > 0)" + (
        " (the candidate's loss-form reference plus lgamma(k + 1))" if form == "loss" else ""
    )


def _norm(values: np.ndarray) -> Normalize:
    """A log colour scale over whole decades when every value is positive, else linear."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return Normalize(0.0, 1.0)
    if (v > 0).all():
        lo, hi = math.floor(math.log10(v.min())), math.ceil(math.log10(v.max()))
        return LogNorm(10.0**lo, 10.0 ** max(hi, lo + 1))
    return Normalize(float(v.min()), float(v.max()))


def _edges(values: np.ndarray) -> np.ndarray:
    """log10 cell edges around sorted lattice values (log midpoints, half a step outside)."""
    lv = np.log10(values)
    mid = (lv[:-1] + lv[1:]) / 2
    return np.concatenate([[2 * lv[0] - mid[0]], mid, [2 * lv[-1] - mid[-1]]])


def _hatch(ax: plt.Axes, X: np.ndarray, Y: np.ndarray, mask: np.ndarray, hatch: str,
           color: str) -> None:  # fmt: skip
    if mask.any():
        patch = plots._hatch_patch(X, Y, mask)
        patch.set_hatch(hatch)
        patch.set_edgecolor(color)
        if hasattr(patch, "set_hatchcolor"):  # matplotlib >= 3.10 keeps it apart
            patch.set_hatchcolor(color)
        ax.add_artist(patch)  # add_patch would scan it for limits


def _ztnb_panel(ax: plt.Axes, p: NllPanel, norm: Normalize) -> object:
    """The NLL as cells, failures red and hatched, error bands hatched (black on light
    cells, white on dark ones), the published switch curves."""
    assert p.y is not None
    xe, ye = _edges(p.x), _edges(p.y)
    X, Y = 10.0**xe, 10.0**ye
    ax.set_facecolor(plots.EMPTY_COLOR)
    mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(p.nll), cmap=plots.CMAP, norm=norm,
                         shading="flat", rasterized=True)  # fmt: skip
    if p.failed.any():
        ax.pcolormesh(X, Y, np.ma.masked_where(~p.failed, np.ones_like(p.nll)),
                      cmap=ListedColormap([plots.FAIL_COLOR]), shading="flat",
                      rasterized=True)  # fmt: skip
        _hatch(ax, X, Y, p.failed, "xxx", "black")
    rgb = plt.get_cmap(plots.CMAP)(norm(np.nan_to_num(p.nll, nan=norm.vmax)))[..., :3]
    dark = rgb @ np.array([0.299, 0.587, 0.114]) < 0.45
    with np.errstate(invalid="ignore"):
        bands = [(p.err > ERR_LEVELS[0]) & ~(p.err > ERR_LEVELS[1]), p.err > ERR_LEVELS[1]]
    for band, hatch in zip(bands, HATCHES, strict=True):
        _hatch(ax, X, Y, band & ~dark, hatch, "black")
        _hatch(ax, X, Y, band & dark, hatch, "white")
    plots._log_axes(ax)
    plots._ztnb_rule_curves(ax, xe, ye)
    return mesh


def _max_text(err: np.ndarray, failed: np.ndarray) -> str:
    finite = err[np.isfinite(err)]
    text = f"max |error| {finite.max():.2g} nats" if finite.size else "no error measured"
    return text + (f", {int(failed.sum())} failures" if failed.any() else "")


def nll_map_ztnb(results: Results, out: Path, name: str, candidate: str, dtype: str,
                 device: str) -> plots.Figure | None:  # fmt: skip
    """The ztnb NLL over (mu, theta) at fixed k, ``candidate``'s error in nats hatched on it.

    One panel per k of :func:`ztnb_panels`; written to ``out / name``. None when
    points.parquet has no such lattice for the candidate.
    """
    panels, form = ztnb_panels(results, candidate, dtype, device)
    if not panels:
        return None
    ncols = 1 if len(panels) == 1 else 2
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(FIG_WIDTH, 4.4 * nrows + 2.2),
                             squeeze=False, sharex=True, sharey=True,
                             layout="constrained")  # fmt: skip
    norms = [_norm(p.nll) for p in panels]
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.set_axis_off()
            continue
        p = panels[i]
        mesh = _ztnb_panel(ax, p, norms[i])
        fig.colorbar(mesh, ax=ax, fraction=0.05, pad=0.02).set_label("NLL (nats)")
        ax.set_title(f"k = {p.k:g}  ·  {_max_text(p.err, p.failed)}", fontsize=11)
        if i + ncols >= len(panels):  # the lowest panel of its column
            ax.set_xlabel("mu (mean, log scale)")
        if i % ncols == 0:
            ax.set_ylabel("theta (inverse dispersion, log scale)")
    fig.suptitle(f"ztnb: the exact NLL over (mu, theta) at fixed k; hatched where `{candidate}` "
                 f"({dtype}, {device}, eager) is off by more than {ERR_LEVELS[0]:g} nats",
                 fontsize=12)  # fmt: skip
    lo, hi = ERR_LEVELS
    legend = [Patch(facecolor="#cccccc", edgecolor="black", hatch=HATCHES[0],
                    label=f"{lo:g} < |error| ≤ {hi:g} nats"),
              Patch(facecolor="#cccccc", edgecolor="black", hatch=HATCHES[1],
                    label=f"|error| > {hi:g} nat" + ("" if hi == 1 else "s")),
              Patch(facecolor=plots.FAIL_COLOR, hatch="xxx", edgecolor="black",
                    label="failure (NaN/inf)"),
              Patch(facecolor=plots.EMPTY_COLOR, edgecolor="grey", label="no point"),
              *plots.rule_curve_legend()]  # fmt: skip
    leg = fig.legend(handles=legend, loc="outside lower center", ncol=2, fontsize=9,
                     facecolor=LEGEND_FACE, framealpha=1.0)  # fmt: skip
    leg.get_frame().set_edgecolor("black")
    plots._save(fig, out / name)
    ks = ", ".join(f"{p.k:g}" for p in panels)
    scale = "log" if all(isinstance(n, LogNorm) for n in norms) else "linear or log"
    return plots.Figure(
        name,
        f"ztnb, the original write-up's view: {_what(form)} in nats at k = {ks} ({scale} "
        f"colour scale per panel); hatched where `{candidate}` ({dtype}, {device}) is off by "
        f"more than {lo:g} nats (dense cross: more than {hi:g}); lines: the published switch "
        "curves, each rule approximating above and to the right of its own.",
    )


def nll_map_ztpoisson(results: Results, out: Path, name: str, candidate: str, dtype: str,
                      device: str) -> plots.Figure | None:  # fmt: skip
    """The ztpoisson NLL against lam at small k (top) and ``candidate``'s error in nats
    (bottom), the published switch lam = 10 marked; written to ``out / name``. None when
    points.parquet has no lam lattice at small k for the candidate."""
    lines, form = ztpoisson_lines(results, candidate, dtype, device)
    if not lines:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(FIG_WIDTH, 9.0), sharex=True,
                                      layout="constrained")  # fmt: skip
    colors = plt.get_cmap(ZTP_COLORS)(np.linspace(0.0, 0.85, len(lines)))
    any_failed = False
    for line, color in zip(lines, colors, strict=True):
        top.plot(line.x, line.nll, color=color, lw=1.6, label=f"k = {line.k:g}")
        with np.errstate(invalid="ignore"):
            err = np.where(line.err > 0, line.err, np.nan)  # log scale: exact zeros are gaps
        bottom.plot(line.x, err, color=color, lw=1.2, marker=".", ms=3)
        if line.failed.any():
            any_failed = True
            bottom.plot(line.x[line.failed], np.full(int(line.failed.sum()), 0.96), ls="none",
                        marker="X", ms=8, color=color, markeredgecolor=plots.FAIL_COLOR,
                        transform=bottom.get_xaxis_transform())  # fmt: skip
    positive = all((ln.nll[np.isfinite(ln.nll)] > 0).all() for ln in lines)
    top.set_yscale("log" if positive else "linear")
    for ax in (top, bottom):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10.0, numticks=13))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.axvline(rules.ZTP_THRESHOLD, color="black", ls="--", lw=1.3)
        ax.grid(True, which="major", alpha=0.3)
    bottom.set_yscale("log")
    bottom.yaxis.set_major_locator(LogLocator(base=10.0, numticks=8))
    bottom.yaxis.set_minor_locator(NullLocator())
    top.set_ylabel("NLL (nats" + (", log scale)" if positive else ")"))
    bottom.set_ylabel("|error| (nats, log scale)")
    bottom.set_xlabel("lam (mean, log scale)")
    what = _what(form)
    top.set_title(what[0].upper() + what[1:], fontsize=11)
    bottom.set_title(f"absolute error of `{candidate}` ({dtype}, {device}, eager)", fontsize=11)
    fig.suptitle("ztpoisson: the exact NLL and a candidate's error in nats against lam, "
                 "by count k", fontsize=12)  # fmt: skip
    handles, _ = top.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", ls="--", lw=1.3,
                          label=f"published switch lam = {rules.ZTP_THRESHOLD:g}"))  # fmt: skip
    if any_failed:
        handles.append(Line2D([], [], ls="none", marker="X", ms=8, color="grey",
                              markeredgecolor=plots.FAIL_COLOR,
                              label="failure (NaN/inf), at the top"))  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5),
               fontsize=9)  # fmt: skip
    plots._save(fig, out / name)
    ks = ", ".join(f"{ln.k:g}" for ln in lines)
    return plots.Figure(
        name,
        f"ztpoisson, the original write-up's view: top, {_what(form)} in nats against lam, "
        f"one line per k = {ks} (the suite's lam lattice at small counts); bottom, the "
        f"absolute error of `{candidate}` ({dtype}, {device}) in nats at the same points (log "
        "scale: exact zeros leave gaps). The dashed line is the published switch lam = "
        f"{rules.ZTP_THRESHOLD:g}, past which the rule drops log(1 - e^-lam), at most "
        f"e^-{rules.ZTP_THRESHOLD:g} = {math.exp(-rules.ZTP_THRESHOLD):.1e} nats.",
    )
