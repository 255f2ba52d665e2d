"""The accuracy runner: every candidate against certified references, per dtype/device/mode.

Data flow (one way)::

    suite -> points (per family) -> rounded to each dtype -> references (at the rounded
    inputs) -> evaluations (candidate x dtype x device x mode) -> per-point errors
    -> summaries (per quantity and region) + threshold sweeps -> files

Measurement rules:

- Each candidate's own inputs are rounded to the target dtype first (a candidate taking
  log theta gets log_theta = round_T(log theta)) and the reference is computed at the
  exact value those rounded inputs stand for (theta = exp(log_theta), inside the
  reference engine), so input rounding is never charged to a formula. Gradients are
  measured with respect to the candidate's own parameters (``d_log_theta`` against the
  certified theta d/dtheta). A point whose rounded
  inputs leave the family's domain (lam = 1e-30 underflows to 0 in float16) is counted as
  ``out_of_range`` for that dtype, not as an error.
- ``value`` is compared with ``nll`` or ``nll_loss`` according to the candidate's form;
  ``d_lam`` / ``d_mu`` / ``d_theta`` with the reference gradients.
- A reference the engine could not certify is excluded and counted (``uncertified``).
- A NaN or inf where the reference is finite is a failure: counted, and ranked worse than
  any finite error (its ulp error is +inf, so ``max_ulp`` is inf as soon as one fails).

Outputs (in ``out_dir``): ``points.parquet`` (every point x candidate x dtype x device x
mode x quantity: inputs, computed, reference, errors), ``summary.csv`` / ``summary.json``,
``thresholds.csv``, ``env.json``. Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from ztbench.candidates import Candidate, candidate_of
from ztbench.candidates.external import env_entries
from ztbench.candidates.rule_sweep import rule_fires
from ztbench.core import metrics, rules
from ztbench.core.dtypes import round_to
from ztbench.core.families import Family, domain_mask, to_natural, to_own
from ztbench.core.schema import LOG_COLUMNS, PARAMS, SUMMARY_COLUMNS, THRESHOLD_COLUMNS
from ztbench.io import atomic
from ztbench.io.atomic import atomic_path, atomic_paths, ensure_dir
from ztbench.io.environment import environment_info, stage_env_text
from ztbench.io.jsonfloat import encode
from ztbench.measure.evaluate import Evaluation, evaluate
from ztbench.points.datasets import membership
from ztbench.points.grids import build_points, region_mask
from ztbench.reference import compute_references
from ztbench.suite import Suite

HARMLESS_ULP: dict[str, float] = {"harmless_half_ulp": 0.5, "harmless_one_ulp": 1.0}
"""The rule's cost (ulp of the full NLL) a threshold must keep to, from it on, to be marked."""

@dataclass
class AccuracyResult:
    """What a run produced: the tables, the environment, the suite's goals (or None) and
    per-stage timings (seconds)."""

    summary: pd.DataFrame
    thresholds: pd.DataFrame
    env: dict
    goals: dict | None = None
    timings: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None


@dataclass
class _Dtyped:
    """The points of one family rounded to one dtype in one parameterisation, with their
    references."""

    dtype: str
    points: pd.DataFrame  # the parameterisation's columns, rounded, in-range rows only
    natural: pd.DataFrame  # the same points in natural columns (float64 exp of log ones)
    refs: pd.DataFrame  # aligned with points
    out_of_range: int
    log_params: tuple[str, ...] = ()
    # which rows are points of the family's dataset source (decided on the float64 points,
    # before rounding: a rounded point no longer equals the source's)
    from_dataset: np.ndarray | None = None


def _reference_of(candidate: Candidate, quantity: str) -> str:
    if quantity == "value":
        return "nll" if candidate.form == "full" else "nll_loss"
    return quantity


def _device_available(device: str) -> bool:
    return device == "cpu" or (device == "cuda" and torch.cuda.is_available())


def _inside(
    log_x: np.ndarray, x: pd.Series, bounds: tuple[float, float], dtype: str
) -> np.ndarray:
    """Rounded logs moved one float of dtype inwards where exp of them left the domain
    [lo, hi] that the natural point ``x`` lies in (theta = 1e10 exactly: log(1e10) rounded
    stands for a value just above it). The input stays the float nearest the suite's."""
    lo, hi = bounds
    x = x.to_numpy()
    with np.errstate(over="ignore"):
        nat = np.exp(log_x)
    step = np.where((nat < lo) & (x >= lo), 1, np.where((nat > hi) & (x <= hi), -1, 0))
    return np.where(step != 0, metrics.step_floats(log_x, dtype, step), log_x)


def _prepare(
    family: Family,
    suite: Suite,
    cache_dir,
    progress: bool | None,
    parameterisations: tuple[tuple[str, ...], ...] = ((),),
) -> dict[tuple[str, ...], list[_Dtyped]]:
    """Round the family's points to each dtype in each parameterisation (the log
    parameters of the candidates measured) and attach certified references.

    A log parameter is rounded as log_p = round_T(log p) (one float inwards at the domain's
    ends, :func:`_inside`) and its reference taken at exp(log_p) exactly. The references of
    all dtypes of a parameterisation are computed in one call (shared points are computed
    once, and the work is parallel over the cores).
    """
    points = build_points(suite, family.name)
    source = suite.families[family.name].dataset
    from_dataset = (membership(points, source) if source is not None
                    else np.zeros(len(points), dtype=bool))  # fmt: skip
    out: dict[tuple[str, ...], list[_Dtyped]] = {}
    for logp in parameterisations:
        own_cols = family.columns_for(logp)
        own = to_own(family, points, logp)
        per_dtype = []
        for dtype in suite.dtypes:
            rounded = pd.DataFrame({c: round_to(own[c], dtype) for c in own_cols})
            for p in (p for p in logp if p in family.params):  # (torch-nb: none)
                rounded[f"log_{p}"] = _inside(rounded[f"log_{p}"].to_numpy(), points[p],
                                              family.domain[p], dtype)  # fmt: skip
            natural = pd.DataFrame(to_natural(family, rounded, logp))
            keep = domain_mask(family, natural, allow_k0=False)
            per_dtype.append(
                (
                    dtype,
                    rounded[keep].reset_index(drop=True),
                    natural[keep].reset_index(drop=True),
                    int((~keep).sum()),
                    from_dataset[keep],
                )
            )
        stacked = pd.concat([p for _, p, _, _, _ in per_dtype], ignore_index=True)
        refs = compute_references(family, stacked, cache_dir=cache_dir, progress=progress,
                                  log_params=logp)  # fmt: skip
        out[logp], start = [], 0
        for dtype, pts, nat, n_out, from_ds in per_dtype:
            r = refs.iloc[start : start + len(pts)].reset_index(drop=True)
            out[logp].append(_Dtyped(dtype, pts, nat, r, n_out, logp, from_ds))
            start += len(pts)
    return out


def _jobs(suite: Suite, family: Family) -> Iterator[tuple[Candidate, str, str]]:
    for cid in suite.candidates_of(family.name):
        cand = candidate_of(suite, cid)
        for device in suite.devices:
            for mode in suite.modes_for(cid):
                yield cand, device, mode


class _Collector:
    """Accumulates summary rows and streams per-point rows to a Parquet file."""

    def __init__(self, points_path: Path | None) -> None:
        self.rows: list[dict] = []
        self.threshold_rows: list[dict] = []
        self._path = points_path
        self._writer: pq.ParquetWriter | None = None
        self._tmp_ctx = None
        self._tmp: Path | None = None
        self._finished = False

    def __enter__(self) -> _Collector:
        if self._path is not None:
            self._tmp_ctx = atomic_path(self._path)
            self._tmp = self._tmp_ctx.__enter__()
        return self

    def finish(self) -> None:
        """Complete the Parquet temporary (renamed into place when the block exits), so
        that the other result files can be written before anything is replaced."""
        if self._tmp is None or self._finished:
            return
        self._finished = True
        if self._writer is not None:
            self._writer.close()
        else:  # nothing evaluated: still leave a valid, empty file
            pq.write_table(pa.table({"family": pa.array([], pa.string())}), self._tmp)
        atomic.sync_file(self._tmp)  # a full disk shows now, before the other files are replaced

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._tmp_ctx is None:
            return False
        failed: BaseException | None = None
        if exc_type is None:
            try:
                self.finish()
            except BaseException as err:  # a full disk at close: the temporary goes too
                failed, exc_type, exc, tb = err, type(err), err, err.__traceback__
        elif self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        handled = self._tmp_ctx.__exit__(exc_type, exc, tb)
        if failed is not None:
            raise failed
        return bool(handled)

    def write_points(self, table: pd.DataFrame) -> None:
        if self._path is None or table.empty:
            return
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, arrow.schema, compression="zstd")
        self._writer.write_table(arrow.cast(self._writer.schema))


def _worst_inputs(
    family: Family, nat: pd.DataFrame, worst: int, own: pd.DataFrame | None = None
) -> dict[str, float]:
    """``worst_<col>`` of the natural columns, and ``worst_log_<p>``: the candidate's own
    rounded input where it takes a log parameter (exp of it is only float64's)."""
    out = {f"worst_{c}": math.nan for c in ("k", *PARAMS, *LOG_COLUMNS)}
    if worst >= 0:
        for c in family.columns:
            out[f"worst_{c}"] = float(nat[c].iloc[worst])
        for c in () if own is None else own.columns:
            if c in LOG_COLUMNS:
                out[f"worst_{c}"] = float(own[c].iloc[worst])
    return out


def _status_rows(base: dict, status: str, quantities, n_out: int) -> list[dict]:
    return [
        {**base, "quantity": q, "region": "all", "n": 0, "failures": 0, "status": status,
         "out_of_range": n_out, "uncertified": 0}
        for q in quantities
    ]  # fmt: skip


def _errors(computed: np.ndarray, reference: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    return {
        "ulp_err": metrics.ulp_error(computed, reference, dtype),
        "bits_err": metrics.bits_error(computed, reference, dtype),
        "abs_err": metrics.abs_error(computed, reference),
        "rel_err": metrics.rel_error(computed, reference),
        "failure": metrics.failures(computed, reference, dtype),
    }


def _summary_row(
    base: dict, family: Family, nat: pd.DataFrame, own: pd.DataFrame, err: dict, mask
) -> dict:
    s = metrics.summarise_errors(err["ulp_err"][mask], err["failure"][mask], err["bits_err"][mask])
    abs_err = err["abs_err"][mask]
    rel_err = err["rel_err"][mask]
    return {
        **base,
        "n": s.n,
        "failures": s.failures,
        "max_ulp": s.max_ulp,
        "p99_ulp": s.p99_ulp,
        "median_ulp": s.median_ulp,
        "mean_ulp": s.mean_ulp,
        "max_abs_err": float(abs_err.max()) if abs_err.size else math.nan,
        **_worst_inputs(family, nat[mask], s.worst, own[mask]),
        "max_bits": s.max_bits,
        "mean_bits": s.mean_bits,
        "rms_ulp": s.rms_ulp,
        "max_rel_err": float(rel_err.max()) if rel_err.size else math.nan,
    }


def _rows(mask: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
    return None if mask is None else mask[keep]


def _regions(
    suite: Suite, family: Family, nat: pd.DataFrame, from_dataset: np.ndarray | None
) -> list[tuple[str, np.ndarray]]:
    """("all", every point), then each suite region of the family; the published domain's
    region is followed by its complement (the points the published system cannot reach).
    ``from_dataset``: the rows of ``nat`` that are points of the family's dataset source."""
    out = [("all", np.ones(len(nat), dtype=bool))]
    for name, r in suite.regions.items():
        if r.applies_to(family.name):
            out.append((name, region_mask(nat, r, family.name, from_dataset)))
            if name == rules.PUBLISHED_DOMAIN_REGION:
                out.append((rules.OUTSIDE_PUBLISHED_DOMAIN_REGION, ~out[-1][1]))
    return out


def _measure(
    suite: Suite,
    family: Family,
    cand: Candidate,
    device: str,
    mode: str,
    data: _Dtyped,
    collector: _Collector,
    timings: dict[str, float],
) -> None:
    """Evaluate one candidate on one dtype/device/mode; add summary and per-point rows."""
    threshold = cand.threshold if cand.threshold is not None else math.nan
    base = {"family": family.name, "candidate": cand.id, "dtype": data.dtype, "device": device,
            "mode": mode, "threshold": threshold, "kind": cand.kind,
            "form": cand.form}  # fmt: skip
    quantities = ("value", *cand.gradients)
    if not _device_available(device):
        collector.rows += _status_rows(
            base, f"skipped: device {device} not available", ("value",), data.out_of_range
        )
        return
    if data.dtype not in cand.dtypes:
        collector.rows += _status_rows(
            base, f"unsupported: dtype {data.dtype}", quantities, data.out_of_range
        )
        return
    cert = data.refs["certified"].to_numpy()
    pts = data.points[cert].reset_index(drop=True)
    nat = data.natural[cert].reset_index(drop=True)
    refs = data.refs[cert].reset_index(drop=True)
    t0 = time.perf_counter()
    ev: Evaluation = evaluate(cand, {c: pts[c].to_numpy() for c in cand.columns}, data.dtype,
                              device, mode)  # fmt: skip
    timings["evaluation"] += time.perf_counter() - t0
    if ev.status != "ok":
        collector.rows += _status_rows(
            base, f"unsupported: {ev.reason}", quantities, data.out_of_range
        )
        return
    t0 = time.perf_counter()
    regions = _regions(suite, family, nat, _rows(data.from_dataset, cert))
    per_point = []
    for q in quantities:
        computed = ev.value if q == "value" else ev.grads.get(q)
        extra = {"out_of_range": data.out_of_range, "uncertified": int((~cert).sum())}
        if computed is None:
            collector.rows += _status_rows(base, "no gradient", (q,), data.out_of_range)
            continue
        reference = refs[_reference_of(cand, q)].to_numpy()
        err = _errors(computed, reference, data.dtype)
        full = (metrics.ulp_error_at(computed, reference, refs["nll"].to_numpy(), data.dtype)
                if q == "value" else None)  # fmt: skip
        for name, mask in regions:
            row = _summary_row({**base, "quantity": q, "region": name}, family, nat, pts, err,
                               mask)  # fmt: skip
            if full is not None:  # the value's error in ulps of the full NLL
                row["max_ulp_full"] = float(full[mask].max()) if mask.any() else math.nan
            collector.rows.append({**row, "status": "ok", **extra})
        per_point.append(
            pd.DataFrame(
                {
                    "family": family.name, "candidate": cand.id, "dtype": data.dtype,
                    "device": device, "mode": mode, "quantity": q,
                    "k": pts["k"].to_numpy(),
                    **{p: (nat[p].to_numpy() if p in nat else np.full(len(pts), np.nan))
                       for p in PARAMS},
                    **{c: (pts[c].to_numpy() if c in pts else np.full(len(pts), np.nan))
                       for c in LOG_COLUMNS},
                    "computed": computed, "reference": reference, **err,
                }
            )
        )  # fmt: skip
    timings["metrics"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    for table in per_point:
        collector.write_points(table)
    timings["writing"] += time.perf_counter() - t0


def _rule_cost(now: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Error added by the rule: max(0, now - base); a new failure is inf, an old one 0."""
    with np.errstate(invalid="ignore"):
        cost = np.maximum(now - base, 0.0)
    return np.where(np.isinf(base), 0.0, np.where(np.isinf(now), np.inf, cost))


def _mark_harmless(rows: list[dict]) -> None:
    """Per region, mark the smallest t from which every swept t costs at most the bound.

    No row is marked when even the largest swept t costs more: there is no harmless t in
    the swept range.
    """
    for region in dict.fromkeys(r["region"] for r in rows):
        group = sorted((r for r in rows if r["region"] == region), key=lambda r: r["t"])
        for col, bound in HARMLESS_ULP.items():
            for r in group:
                r[col] = False
            smallest = None
            for r in reversed(group):
                if r["n"] == 0 or not r["rule_max_ulp"] <= bound:
                    break
                smallest = r
            if smallest is not None:
                smallest[col] = True


def _threshold_evaluator(
    cand: Candidate, arrays: dict[str, np.ndarray], dtype: str, device: str, without: Evaluation
) -> Callable[[float], Evaluation]:
    """The candidate's values (no gradients) at threshold t, as a function of t.

    A threshold family's value at a point is its value without the rule (``without``, t =
    inf) or with the rule (t = -inf), as the rule's mask at t says (the candidate's own,
    :func:`~ztbench.candidates.rule_sweep.rule_fires`): two evaluations serve every t of a
    sweep. A candidate without a known rule variable is evaluated at each t.
    """
    if cand.threshold_variable is None or not without.ok:
        return lambda t: evaluate(cand, arrays, dtype, device, "eager", threshold=t,
                                  gradients=False)  # fmt: skip
    always = evaluate(cand, arrays, dtype, device, "eager", threshold=-math.inf,
                      gradients=False)  # fmt: skip
    if not always.ok:
        return lambda t: always
    # the inputs are already rounded to dtype: in float64 they are what the candidate sees
    params = {c: torch.tensor(arrays[c]) for c in cand.columns if c != "k"}

    def at(t: float) -> Evaluation:
        fires = rule_fires(cand.threshold_variable, t, **params).numpy()
        return Evaluation(np.where(fires, always.value, without.value))

    return at


def _sweep(
    suite: Suite,
    family: Family,
    cand: Candidate,
    ts: tuple[float, ...],
    device: str,
    data: _Dtyped,
) -> list[dict]:
    """Value errors of a threshold candidate at each t (eager), best and published marked.

    Beyond its error against the reference, each row gives the rule's own cost: the error
    the candidate makes at t beyond the same candidate without the rule (t = inf), per
    point max(0, err_t - err_inf), in ulps of the full NLL (-log P >= 0: no zero crossing
    for the ulp to blow up at) and in nats; over the whole domain and, when the suite
    defines it, the published domain; ``switched`` counts the points whose value the rule
    changed. ``harmless_half_ulp`` / ``harmless_one_ulp`` mark the smallest swept t from
    which the rule never costs more than 0.5 / 1 ulp.
    """
    cert = data.refs["certified"].to_numpy()
    pts = data.points[cert].reset_index(drop=True)
    nat = data.natural[cert].reset_index(drop=True)
    reference = data.refs[cert][_reference_of(cand, "value")].to_numpy()
    full = data.refs[cert]["nll"].to_numpy()
    arrays = {c: pts[c].to_numpy() for c in cand.columns}
    regions = [(n, m) for n, m in _regions(suite, family, nat, _rows(data.from_dataset, cert))
               if n in ("all", rules.PUBLISHED_DOMAIN_REGION)]  # fmt: skip
    common = {"family": family.name, "candidate": cand.id, "dtype": data.dtype,
              "device": device, "mode": "eager",
              "variable": cand.threshold_variable or ""}  # fmt: skip
    without = evaluate(cand, arrays, data.dtype, device, "eager", threshold=math.inf,
                       gradients=False)  # fmt: skip
    at = _threshold_evaluator(cand, arrays, data.dtype, device, without)
    if without.ok:
        base_ulp = metrics.ulp_error_at(without.value, reference, full, data.dtype)
        base_abs = metrics.abs_error(without.value, reference)
    rows = []
    for t in sorted(set(ts) | set(cand.published_thresholds)):
        ev = at(t)
        ok = ev.ok and without.ok
        for region, mask in regions:
            base = {**common, "t": t, "region": region,
                    "published": t in cand.published_thresholds}  # fmt: skip
            if not ok:
                rows.append({**base, "n": 0, "failures": 0, "max_ulp": math.nan,
                             "rule_max_ulp": math.nan})  # fmt: skip
                continue
            err = _errors(ev.value[mask], reference[mask], data.dtype)
            s = metrics.summarise_errors(err["ulp_err"], err["failure"])
            cost_ulp = _rule_cost(metrics.ulp_error_at(ev.value[mask], reference[mask],
                                                       full[mask], data.dtype),
                                  base_ulp[mask])  # fmt: skip
            cost_nats = _rule_cost(metrics.abs_error(ev.value[mask], reference[mask]),
                                   base_abs[mask])  # fmt: skip
            worst_rule = int(np.argmax(cost_ulp)) if cost_ulp.size and cost_ulp.max() > 0 else -1
            rule_worst = _worst_inputs(family, nat[mask], worst_rule)
            rows.append({**base, "n": s.n, "failures": s.failures, "max_ulp": s.max_ulp,
                         "p99_ulp": s.p99_ulp,
                         "max_abs_err": float(err["abs_err"].max()) if s.n else math.nan,
                         **_worst_inputs(family, nat[mask], s.worst, pts[mask]),
                         "switched": int((ev.value[mask] != without.value[mask]).sum()),
                         "rule_max_ulp": float(cost_ulp.max()) if s.n else math.nan,
                         "rule_max_nats": float(cost_nats.max()) if s.n else math.nan,
                         **{f"rule_{k}": rule_worst[k] for k in
                            ("worst_k", "worst_lam", "worst_mu", "worst_theta")}})  # fmt: skip
    # best t (per region): fewest failures, then the smallest cost of the rule (the
    # formulation's own error is the same at every t), then max, p99, then the smaller t
    for region, _ in regions:
        group = [r for r in rows if r["region"] == region]
        ranked = sorted(
            (r for r in group if r["n"] > 0),
            key=lambda r: (r["failures"], r["rule_max_ulp"], r["max_ulp"], r["p99_ulp"], r["t"]),
        )
        for r in group:
            r["best"] = bool(ranked) and r is ranked[0]
    _mark_harmless(rows)
    return rows


def run_accuracy(
    suite: Suite,
    out_dir: Path | str | None = None,
    cache_dir: Path | str | bool | None = None,
    progress: bool | None = None,
    write_points: bool = True,
) -> AccuracyResult:
    """Measure every candidate of ``suite``; write the result files when ``out_dir`` is set.

    Args:
        suite: a validated suite (:func:`ztbench.suite.load_suite`).
        out_dir: where to write points.parquet, summary.csv/json, thresholds.csv, env.json;
            None writes nothing.
        cache_dir: reference cache (None: default location, False: no cache).
        progress: progress bars (None: only for work that lasts over 2 s).
        write_points: also write the (large) per-point Parquet file.
    """
    timings = {"references": 0.0, "evaluation": 0.0, "metrics": 0.0, "writing": 0.0}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        ensure_dir(out)
    env = environment_info(suite.path, suite.devices)
    env["suite_sha256"] = suite.sha256  # the loader's hash also covers a `base` suite
    if suite.external:  # the user's own candidates: what was called, and its source's hash
        env.update(env_entries(suite.external))
    points_path = out / "points.parquet" if (out is not None and write_points) else None
    torch.manual_seed(0)  # no candidate draws random numbers; guards against one that would
    with _Collector(points_path) as collector:
        for fname in suite.families:
            family = suite.families[fname].family
            if not suite.candidates_of(fname):
                continue
            t0 = time.perf_counter()
            measured = [candidate_of(suite, c) for c in suite.candidates_of(fname)]
            measured += [candidate_of(suite, c) for c in suite.thresholds]
            logps = tuple(dict.fromkeys(c.log_params for c in measured if c.family == fname))
            prepared = _prepare(family, suite, cache_dir, progress, logps)
            timings["references"] += time.perf_counter() - t0
            jobs = [(c, dev, m, d) for c, dev, m in _jobs(suite, family)
                    for d in prepared[c.log_params]]  # fmt: skip
            bar = tqdm(jobs, desc=f"accuracy {fname}", unit="run", leave=False,
                       disable=progress is False, delay=0 if progress else 2)  # fmt: skip
            for cand, device, mode, data in bar:
                _measure(suite, family, cand, device, mode, data, collector, timings)
            t0 = time.perf_counter()
            for cid, ts in suite.thresholds.items():
                cand = candidate_of(suite, cid)
                if cand.family != fname:
                    continue
                for device in filter(_device_available, suite.devices):
                    for data in prepared[cand.log_params]:
                        collector.threshold_rows += _sweep(suite, family, cand, ts, device,
                                                           data)  # fmt: skip
            timings["evaluation"] += time.perf_counter() - t0

        summary = _frame(collector.rows, SUMMARY_COLUMNS)
        thresholds = _frame(collector.threshold_rows, THRESHOLD_COLUMNS)
        goals = dataclasses.asdict(suite.goals) if suite.goals is not None else None
        result = AccuracyResult(summary, thresholds, env, goals, timings, out)
        if out is not None:
            # all files or none: points.parquet is complete before the others are written,
            # and renamed into place only after they were
            t0 = time.perf_counter()
            collector.finish()
            write_results(result, out)
            timings["writing"] += time.perf_counter() - t0
    return result


def _frame(rows: list[dict], columns: tuple[str, ...]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(columns))
    for col in ("n", "failures", "out_of_range", "uncertified"):
        if col in df:
            df[col] = df[col].fillna(0).astype("int64")
    return df


def write_results(result: AccuracyResult, out: Path) -> None:
    """Write summary.csv/json, thresholds.csv and env.json into ``out`` (atomically)."""
    records = [{k: encode(v) for k, v in row.items()}
               for row in result.summary.to_dict(orient="records")]  # fmt: skip
    names = ["summary.csv", "summary.json", "thresholds.csv", "env.json"]
    if result.goals is not None:
        names.append("goals.json")
    with atomic_paths(*(out / n for n in names)) as tmps:
        result.summary.to_csv(tmps[0], index=False)
        tmps[1].write_text(
            "[\n" + ",\n".join(json.dumps(r, sort_keys=False) for r in records) + "\n]\n",
            encoding="utf-8",
        )
        result.thresholds.to_csv(tmps[2], index=False)
        tmps[3].write_text(stage_env_text(out, "accuracy", result.env), encoding="utf-8")
        if result.goals is not None:
            tmps[4].write_text(json.dumps(result.goals, indent=2) + "\n", encoding="utf-8")
    if result.goals is None:
        (out / "goals.json").unlink(missing_ok=True)
