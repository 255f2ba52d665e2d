"""Report tables: leaderboards, recommendations, threshold sweeps, worst cases.

Ranking (leaderboard and recommendation use the same key: the recommended candidate is
the leaderboard's first row that a model can be trained with, i.e. without failures and
with gradients, :func:`trainable`): among the candidates measured (status ``ok``) in
eager mode on one family x dtype x device, region ``all``:

1. value failures (NaN/inf where the reference is finite), fewest first (zero first);
2. max ulp error of the value, smallest first (compared at 1/8 ulp, :data:`ULP_RESOLUTION`);
3. gradients: total gradient failures, then the worst max ulp over the parameters
   (candidates without gradients, i.e. peers, rank after every candidate with them);
4. speed: forward+backward cost relative to naive (throughput.csv, eager, the largest size
   measured; missing: last), then forward; among candidates with equal errors, those
   within 10% of the fastest count as equally fast, so that timing noise cannot flip the
   ranking (the id then decides);
5. the candidate id (a deterministic last resort).

Unsupported candidates (dtype not supported, evaluation failed) are listed below the
ranked rows, without a rank.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from ztbench.core.families import get_family
from ztbench.core.schema import DEVICES, DTYPE_NAMES, FAMILY_NAMES, INPUT_KINDS
from ztbench.core.textfmt import file_name, fmt, markdown_table
from ztbench.io.atomic import atomic_path
from ztbench.report.data import Results

RANK_MODE = "eager"
SPEED_PASSES: tuple[str, ...] = ("forward+backward", "forward")

# ----------------------------------------------------------------------------- formatting


def fmt_input(x: float) -> str:
    """An input value, exactly enough to find it again (shortest repr of the float64)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def ordered(values: Iterable[str], order: tuple[str, ...]) -> list[str]:
    """Unique values, those in ``order`` first (in that order), then the rest sorted."""
    uniq = list(dict.fromkeys(values))
    return [v for v in order if v in uniq] + sorted(v for v in uniq if v not in order)


class Captioned(Protocol):
    """A written figure (:class:`ztbench.report.plots.Figure`: plots imports this module)."""

    path: str
    caption: str


def figure_markdown(fig: Captioned | None, caption: str | None = None) -> str:
    """A written figure as Markdown: the image and its caption (``caption`` in place of the
    figure's own); "" for no figure."""
    if fig is None:
        return ""
    text = caption or fig.caption
    return f"![{text}]({fig.path})\n\n*{text}*\n\n"


def inputs_text(family: str, k: float, lam: float, mu: float, theta: float) -> str:
    """``k = 1, lam = 1e-30`` style text for one input point."""
    if family == "ztpoisson":
        return f"k = {fmt_input(k)}, lam = {fmt_input(lam)}"
    return f"k = {fmt_input(k)}, mu = {fmt_input(mu)}, theta = {fmt_input(theta)}"


# ----------------------------------------------------------------------------- speed


def speed_table(results: Results, inputs: str | None = None) -> pd.DataFrame:
    """Per family x candidate x dtype x device x mode x pass: throughput at the largest size,
    on one input kind (``inputs``; default: ``realistic`` when it was timed, what training
    sees and what the leaderboards rank by, else log-uniform over the whole domain).

    The largest size with an ``ok`` row for the family's naive candidate (else for any
    candidate) in that dtype/device/mode/pass; columns ``size``, ``elements_per_s``,
    ``cost_vs_naive``. Empty when there is no throughput.csv.
    """
    cols = ["family", "candidate", "dtype", "device", "mode", "pass", "size",
            "elements_per_s", "cost_vs_naive"]  # fmt: skip
    tp = results.throughput
    if tp is None or tp.empty:
        return pd.DataFrame(columns=cols)
    # files from before the input kinds were timed on log-uniform inputs only
    kinds = tp["inputs"] if "inputs" in tp else pd.Series(INPUT_KINDS[0], index=tp.index)
    if inputs is None:
        inputs = "realistic" if (kinds == "realistic").any() else INPUT_KINDS[0]
    ok = tp[(tp["status"] == "ok") & (kinds == inputs)].copy()
    if ok.empty:
        return pd.DataFrame(columns=cols)
    group = ["family", "dtype", "device", "mode", "pass"]
    naive = ok[ok["candidate"] == ok["family"] + "/naive"]
    sizes = naive.groupby(group)["size"].max()
    sizes_any = ok.groupby(group)["size"].max()
    sizes = sizes.combine_first(sizes_any).rename("ref_size").reset_index()
    ok = ok.merge(sizes, on=group)
    ok = ok[ok["size"] == ok["ref_size"]]
    return ok[cols].reset_index(drop=True)


def _speed_of(speed: pd.DataFrame, family: str, cand: str, dtype: str, device: str,
              mode: str, pass_: str) -> tuple[float, float, float]:  # fmt: skip
    """(cost_vs_naive, elements_per_s, size) or NaNs."""
    if speed.empty:
        return math.nan, math.nan, math.nan
    m = speed[(speed["family"] == family) & (speed["candidate"] == cand)
              & (speed["dtype"] == dtype) & (speed["device"] == device)
              & (speed["mode"] == mode) & (speed["pass"] == pass_)]  # fmt: skip
    if m.empty:
        return math.nan, math.nan, math.nan
    r = m.iloc[0]
    return float(r["cost_vs_naive"]), float(r["elements_per_s"]), float(r["size"])


# ----------------------------------------------------------------------------- leaderboard


# Speed ratios within a factor of this of each other rank as equally fast (timing noise).
SPEED_TIE = 1.1


@dataclass(frozen=True)
class BoardKey:
    """One leaderboard: a family on one dtype and device (eager mode)."""

    family: str
    dtype: str
    device: str


def board_keys(results: Results) -> list[BoardKey]:
    """Every family x dtype x device the summary has rows for, in report order."""
    s = results.summary
    keys = []
    for fam in ordered(s["family"], FAMILY_NAMES):
        fs = s[s["family"] == fam]
        for dtype in ordered(fs["dtype"], DTYPE_NAMES):
            for device in ordered(fs[fs["dtype"] == dtype]["device"], DEVICES):
                keys.append(BoardKey(fam, dtype, device))
    return keys


def _kind(row: pd.Series, env: dict | None = None) -> str:
    """The candidate's kind as its run recorded it ("?" in summaries that predate it),
    marked ", external" for the user's own candidates (env.json lists them)."""
    kind = row.get("kind")
    kind = kind if isinstance(kind, str) and kind else "?"
    external = {e.get("id") for e in (env or {}).get("external_candidates", [])}
    return f"{kind}, external" if row.get("candidate") in external else kind


def gradient_rows(rows: pd.DataFrame, gradient: str) -> pd.DataFrame:
    """The summary rows of ``gradient`` (``d_<p>``) among ``rows``, or of ``d_log_<p>`` where
    the candidate takes log p (it is measured on the gradient of its own input)."""
    out = rows[rows["quantity"] == gradient]
    return out if not out.empty else rows[rows["quantity"] == gradient.replace("d_", "d_log_", 1)]


ULP_RESOLUTION = 0.125
"""Ranking compares ulp errors rounded to this: finer differences (0.499 against 0.500007
ulp) are the last bits of one sample's worst point, and change with the sample."""


def _ulp_class(ulp: pd.Series) -> pd.Series:
    return (ulp / ULP_RESOLUTION).round() * ULP_RESOLUTION


def leaderboard(results: Results, key: BoardKey, mode: str = RANK_MODE) -> pd.DataFrame:
    """Numeric leaderboard of ``key``: ranked rows (``rank`` 1..n) then unranked ones.

    Columns: rank, candidate, kind, status, failures, max_ulp, p99_ulp, max_abs_err, n,
    form ("loss", "full" or NaN where summary.csv predates it), worst_k/lam/mu/theta, one
    ``<grad>_max_ulp``, ``<grad>_failures`` and ``<grad>_status`` per gradient,
    grad_failures, grad_max_ulp, cost_fb_vs_naive, cost_fwd_vs_naive, speed_size.
    """
    fam = get_family(key.family)
    grads = fam.gradients
    s = results.summary
    s = s[(s["family"] == key.family) & (s["dtype"] == key.dtype) & (s["device"] == key.device)
          & (s["mode"] == mode) & (s["region"] == "all")]  # fmt: skip
    speed = speed_table(results)
    rows = []
    for cand in dict.fromkeys(s["candidate"]):
        cs = s[s["candidate"] == cand]
        val = cs[cs["quantity"] == "value"]
        if val.empty:
            continue
        v = val.iloc[0]
        row: dict = {"candidate": cand, "kind": _kind(v, results.env), "status": v["status"],
                     "failures": int(v["failures"]), "max_ulp": float(v["max_ulp"]),
                     "p99_ulp": float(v["p99_ulp"]), "max_abs_err": float(v["max_abs_err"]),
                     "n": int(v["n"]), "form": v["form"]}  # fmt: skip
        for c in ("k", "lam", "mu", "theta"):
            row[f"worst_{c}"] = float(v[f"worst_{c}"])
        gfail, gmax, has_grad = 0, 0.0, False
        for g in grads:
            gr = gradient_rows(cs, g)
            status = gr.iloc[0]["status"] if not gr.empty else "no gradient"
            row[f"{g}_status"] = status
            if status == "ok":
                has_grad = True
                row[f"{g}_max_ulp"] = float(gr.iloc[0]["max_ulp"])
                row[f"{g}_failures"] = int(gr.iloc[0]["failures"])
                gfail += row[f"{g}_failures"]
                gmax = max(gmax, row[f"{g}_max_ulp"])
            else:
                row[f"{g}_max_ulp"], row[f"{g}_failures"] = math.nan, 0
        row["grad_failures"] = gfail if has_grad else math.inf
        row["grad_max_ulp"] = gmax if has_grad else math.inf
        fb = _speed_of(speed, key.family, cand, key.dtype, key.device, mode, SPEED_PASSES[0])
        fw = _speed_of(speed, key.family, cand, key.dtype, key.device, mode, SPEED_PASSES[1])
        row["cost_fb_vs_naive"], row["cost_fwd_vs_naive"] = fb[0], fw[0]
        row["eps_fb"], row["eps_fwd"] = fb[1], fw[1]
        row["speed_size"] = fb[2] if not math.isnan(fb[2]) else fw[2]
        rows.append(row)
    board = pd.DataFrame(rows)
    if board.empty:
        return board
    ok = board[board["status"] == "ok"].copy()
    rest = board[board["status"] != "ok"].copy()

    def nan_last(x: pd.Series) -> pd.Series:
        return x.fillna(math.inf)

    errors = ["failures", "max_ulp", "grad_failures", "grad_max_ulp"]
    for col in errors[1:]:
        ok[col + "_key"] = nan_last(ok[col])
    for col in ("max_ulp", "grad_max_ulp"):
        ok[col + "_key"] = _ulp_class(ok[col + "_key"])
    error_key = ["failures", "max_ulp_key", "grad_failures_key", "grad_max_ulp_key"]

    def speed_key(col: str) -> pd.Series:
        # within a group of equal errors, every candidate within SPEED_TIE of the fastest
        # counts as the fastest (its speed key is the group's minimum)
        x = nan_last(ok[col])
        fastest = x.groupby([ok[c] for c in error_key]).transform("min")
        return x.where(x > SPEED_TIE * fastest, fastest)

    ok["_k"] = list(zip(*(ok[c] for c in error_key), speed_key("cost_fb_vs_naive"),
                        speed_key("cost_fwd_vs_naive"), ok["candidate"], strict=True))  # fmt: skip
    ok = ok.drop(columns=[c for c in error_key if c.endswith("_key")])
    ok = ok.sort_values("_k", kind="stable").drop(columns="_k")
    ok.insert(0, "rank", np.arange(1, len(ok) + 1))
    rest = rest.sort_values("candidate", kind="stable")
    rest.insert(0, "rank", np.nan)
    return pd.concat([ok, rest], ignore_index=True)


def trainable(board: pd.DataFrame) -> pd.Series:
    """The leaderboard rows a model can be trained with: measured, no value failure,
    gradients without failures (a peer, without gradients, is not one), and the loss form
    (without lgamma(k + 1): the full form's constant changes nothing a model learns; rows
    of results that predate the ``form`` column count as loss form)."""
    # an all-empty form column reads back as float64: compare, never fill with a string
    full = board["form"] == "full" if "form" in board else pd.Series(False, index=board.index)
    return (board["rank"].notna() & (board["failures"] == 0) & (board["grad_failures"] == 0)
            & ~full)  # fmt: skip


def recommendations(results: Results) -> pd.DataFrame:
    """Per family x dtype x device, the first leaderboard row a model can be trained with
    (:func:`trainable`); none where no candidate is (empty frame if none at all)."""
    out = []
    for key in board_keys(results):
        board = leaderboard(results, key)
        ranked = board[trainable(board)].head(1) if not board.empty else board
        if not ranked.empty:
            out.append({"family": key.family, "dtype": key.dtype, "device": key.device,
                        **ranked.iloc[0].to_dict()})  # fmt: skip
    return pd.DataFrame(out)


def _ulp_cell(max_ulp: float, failures: int, n: int | None = None) -> str:
    if failures:
        return f"inf ({failures} fail)"
    return fmt(max_ulp)


def board_markdown(board: pd.DataFrame, family: str, with_speed: bool) -> str:
    """The leaderboard as a Markdown table (strings)."""
    grads = get_family(family).gradients
    rows = []
    for r in board.to_dict(orient="records"):
        cells = {"#": "" if pd.isna(r["rank"]) else str(int(r["rank"])),
                 "candidate": f"`{r['candidate']}`"}  # fmt: skip
        if r["status"] != "ok":
            cells |= {"max ulp": r["status"], "p99 ulp": "", "max abs err (nats)": "",
                      "failures": ""}  # fmt: skip
            cells |= {f"{g} max ulp": "" for g in grads}
        else:
            # nats beside ulp: near a zero of the NLL a tiny absolute error is many ulp
            cells |= {"max ulp": _ulp_cell(r["max_ulp"], r["failures"]),
                      "p99 ulp": fmt(r["p99_ulp"]),
                      "max abs err (nats)": fmt(r["max_abs_err"], 2),
                      "failures": str(r["failures"])}  # fmt: skip
            for g in grads:
                st = r[f"{g}_status"]
                cells[f"{g} max ulp"] = (
                    _ulp_cell(r[f"{g}_max_ulp"], r[f"{g}_failures"]) if st == "ok" else st
                )
        if with_speed:
            cells["fwd+bwd cost_vs_naive"] = fmt(r["cost_fb_vs_naive"], 2)
            cells["fwd cost_vs_naive"] = fmt(r["cost_fwd_vs_naive"], 2)
        rows.append(cells)
    return markdown_table(pd.DataFrame(rows))


# ----------------------------------------------------------------------------- threshold sweeps


def sweep_best(results: Results, candidate: str, dtype: str, device: str) -> dict | None:
    """The sweep's best and published rows of ``candidate`` over the whole domain, and the
    smallest harmless t per region and bound (None when it was not swept).

    ``harmless``: ``{region: {"harmless_half_ulp": t or None, "harmless_one_ulp": ...}}``,
    None meaning no harmless t in the swept range.
    """
    t = results.thresholds
    t = t[(t["candidate"] == candidate) & (t["dtype"] == dtype) & (t["device"] == device)]
    if t.empty:
        return None
    allt = t[t["region"] == "all"]
    best = allt[allt["best"]]
    pub = allt[allt["published"]]
    harmless: dict[str, dict[str, float | None]] = {}
    for region, g in t.groupby("region", sort=False):
        if g["rule_max_ulp"].isna().all():
            continue  # a sweep written before the rule's cost was measured
        harmless[str(region)] = {
            col: (float(g[g[col]]["t"].iloc[0]) if g[col].any() else None)
            for col in ("harmless_half_ulp", "harmless_one_ulp")
        }
    return {"best": best.iloc[0].to_dict() if not best.empty else None,
            "published": [r for r in pub.to_dict(orient="records")],
            "harmless": harmless}  # fmt: skip


# ----------------------------------------------------------------------------- worst cases


WORST_CASES_DIR = "worst_cases"
"""The folder of the results directory that holds the input files of reproducible cases."""


def own_inputs(family: str, point: Mapping[str, float], prefix: str = "") -> dict[str, float]:
    """The candidate's own inputs of one point, by column: ``log_<p>`` where ``point`` has
    a number for it (a candidate taking log p: exp(log_p) in float64 would not round back
    to the same input), else ``<p>``. ``prefix``: of the keys (``"worst_"`` in a summary
    row)."""
    columns = tuple(f"log_{c}" if not pd.isna(point.get(f"{prefix}log_{c}", math.nan)) else c
                    for c in get_family(family).columns)  # fmt: skip
    return {c: float(point[f"{prefix}{c}"]) for c in columns}


def reproduce_command(results: Results, candidate: str, inputs: Mapping[str, float],
                      dtype: str, device: str, threshold: float, name: str,
                      ) -> tuple[str, Path]:  # fmt: skip
    """Write ``inputs`` (one point, the candidate's own columns, float64 repr, already
    rounded to the dtype) to ``DIR/worst_cases/<name>.csv`` and return the ``ztbench
    eval`` command that recomputes it, with the file's path."""
    path = results.dir / WORST_CASES_DIR / file_name(name, suffix=".csv")
    with atomic_path(path) as tmp:
        tmp.write_text(",".join(inputs) + "\n" + ",".join(repr(v) for v in inputs.values()) + "\n")
    external = {e.get("id"): e.get("eval") for e in results.env.get("external_candidates", [])}
    # the external candidate's arguments are already quoted for the shell
    target = external.get(candidate) or shlex.quote(candidate)
    cmd = (f"ztbench eval {target} {shlex.quote(str(path))} --dtype {dtype}"
           + ("" if pd.isna(threshold) else f" --threshold {fmt_input(threshold)}")
           + (f" --device {device}" if device != "cpu" else "")
           + " -o out.csv")  # fmt: skip
    return cmd, path


def worst_cases(results: Results, candidates: dict[str, list[str]],
                dtypes: list[str]) -> pd.DataFrame:  # fmt: skip
    """The worst value error of each listed candidate per dtype (eager, first device).

    Writes one input CSV per case under ``DIR/worst_cases/`` (``k,lam`` or ``k,mu,theta``
    as float64 repr, already rounded to the dtype) so that the printed ``ztbench eval``
    command reproduces it (:func:`reproduce_command`). Computed/reference come from
    points.parquet when present.
    """
    rows = []
    s = results.summary
    for fam, cands in candidates.items():
        for cand in cands:
            for dtype in dtypes:
                r = s[(s["candidate"] == cand) & (s["dtype"] == dtype) & (s["quantity"] == "value")
                      & (s["mode"] == RANK_MODE) & (s["region"] == "all")
                      & (s["status"] == "ok")]  # fmt: skip
                if r.empty:
                    continue
                r = r.iloc[0]
                point = own_inputs(fam, r, prefix="worst_")
                if any(math.isnan(v) for v in point.values()):
                    continue
                computed = reference = math.nan
                pts = results.read_points(
                    [*point, "computed", "reference", "ulp_err"],
                    candidate=cand, dtype=dtype, device=r["device"], mode=RANK_MODE,
                    quantity="value",
                )  # fmt: skip
                if not pts.empty:
                    m = np.ones(len(pts), dtype=bool)
                    for c, v in point.items():
                        m &= pts[c].to_numpy() == v
                    if m.any():
                        hit = pts[m].iloc[0]
                        computed, reference = float(hit["computed"]), float(hit["reference"])
                cmd, path = reproduce_command(results, cand, point, dtype, r["device"],
                                              r["threshold"], f"{cand}-{dtype}")  # fmt: skip
                rows.append({"family": fam, "candidate": cand, "dtype": dtype,
                             "input": inputs_text(fam, r["worst_k"], r["worst_lam"],
                                                  r["worst_mu"], r["worst_theta"]),
                             "reference": reference, "computed": computed,
                             "max_ulp": float(r["max_ulp"]), "failures": int(r["failures"]),
                             "abs_err": abs(computed - reference), "command": cmd,
                             "csv": path})  # fmt: skip
    return pd.DataFrame(rows)


def worst_cases_markdown(cases: pd.DataFrame, labels: tuple[str, ...] = ("candidate", "dtype"),
                         ) -> str:  # fmt: skip
    """The worst-case table (Markdown) and, under it, the command of each case.

    ``labels``: the columns of ``cases`` that name a case, first after its number
    (``max_ulp`` is the case's ulp error, infinite for a failure)."""
    rows = []
    for i, r in enumerate(cases.to_dict(orient="records"), 1):
        rows.append({"#": str(i),
                     **{c: f"`{r[c]}`" if c == "candidate" else str(r[c]) for c in labels},
                     "input": r["input"], "reference": fmt(r["reference"], 17),
                     "computed": fmt(r["computed"], 17),
                     "ulp error": "inf (failure)" if not np.isfinite(r["max_ulp"])
                     else fmt(r["max_ulp"]),
                     "abs error (nats)": fmt(r["abs_err"])})  # fmt: skip
    cmds = "\n".join(f"{i}. `{r['command']}`" for i, r in enumerate(cases.to_dict("records"), 1))
    return markdown_table(pd.DataFrame(rows)) + "\n\nTo reproduce a case:\n\n" + cmds
