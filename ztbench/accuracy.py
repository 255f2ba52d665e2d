"""The accuracy runner: every candidate against certified references, per dtype/device/mode.

Data flow (one way)::

    suite -> points (per family) -> rounded to each dtype -> references (at the rounded
    inputs) -> evaluations (candidate x dtype x device x mode) -> per-point errors
    -> summaries (per quantity and region) + threshold sweeps -> files

Measurement rules:

- Inputs are rounded to the target dtype first and the reference is computed at the
  rounded input, so input rounding is never charged to a formula. A point whose rounded
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
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from ztbench import atomic, metrics
from ztbench.atomic import atomic_path, atomic_paths, ensure_dir
from ztbench.candidates import Candidate, get_candidate
from ztbench.dtypes import round_to
from ztbench.environment import environment_info
from ztbench.evaluate import Evaluation, evaluate
from ztbench.families import Family, domain_mask, get_family
from ztbench.grids import build_points, region_mask
from ztbench.jsonfloat import encode
from ztbench.reference import compute_references
from ztbench.suite import Suite

SUMMARY_COLUMNS: tuple[str, ...] = (
    "family", "candidate", "dtype", "device", "mode", "quantity", "region", "n", "failures",
    "max_ulp", "p99_ulp", "median_ulp", "mean_ulp", "max_abs_err",
    "worst_k", "worst_lam", "worst_mu", "worst_theta",
    # beyond the required columns:
    "max_bits", "mean_bits", "rms_ulp", "max_rel_err", "threshold", "status",
    "out_of_range", "uncertified",
)  # fmt: skip
THRESHOLD_COLUMNS: tuple[str, ...] = (
    "family", "candidate", "dtype", "device", "mode", "t", "n", "failures", "max_ulp",
    "p99_ulp", "max_abs_err", "worst_k", "worst_lam", "worst_mu", "worst_theta",
    "best", "published",
)  # fmt: skip
PARAMS: tuple[str, ...] = ("lam", "mu", "theta")


@dataclass
class AccuracyResult:
    """What a run produced: the tables, the environment and per-stage timings (seconds)."""

    summary: pd.DataFrame
    thresholds: pd.DataFrame
    env: dict
    timings: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None


@dataclass
class _Dtyped:
    """The points of one family rounded to one dtype, with their references."""

    dtype: str
    points: pd.DataFrame  # rounded, in-range rows only
    refs: pd.DataFrame  # aligned with points
    out_of_range: int


def _reference_of(candidate: Candidate, quantity: str) -> str:
    if quantity == "value":
        return "nll" if candidate.form == "full" else "nll_loss"
    return quantity


def _device_available(device: str) -> bool:
    return device == "cpu" or (device == "cuda" and torch.cuda.is_available())


def _prepare(family: Family, suite: Suite, cache_dir, progress: bool | None) -> list[_Dtyped]:
    """Round the family's points to each dtype and attach certified references.

    The references of all dtypes are computed in one call (shared points are computed once,
    and the work is parallel over the cores).
    """
    points = build_points(suite, family.name)
    per_dtype = []
    for dtype in suite.dtypes:
        rounded = pd.DataFrame({c: round_to(points[c].to_numpy(), dtype) for c in family.columns})
        keep = domain_mask(family, rounded, allow_k0=False)
        per_dtype.append((dtype, rounded[keep].reset_index(drop=True), int((~keep).sum())))
    stacked = pd.concat([p for _, p, _ in per_dtype], ignore_index=True)
    refs = compute_references(family, stacked, cache_dir=cache_dir, progress=progress)
    out, start = [], 0
    for dtype, pts, n_out in per_dtype:
        r = refs.iloc[start : start + len(pts)].reset_index(drop=True)
        out.append(_Dtyped(dtype, pts, r, n_out))
        start += len(pts)
    return out


def _jobs(suite: Suite, family: Family) -> Iterator[tuple[Candidate, str, str]]:
    for cid in suite.candidates_of(family.name):
        cand = get_candidate(cid)
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


def _worst_inputs(family: Family, pts: pd.DataFrame, worst: int) -> dict[str, float]:
    out = {f"worst_{c}": math.nan for c in ("k", *PARAMS)}
    if worst >= 0:
        for c in family.columns:
            out[f"worst_{c}"] = float(pts[c].iloc[worst])
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


def _summary_row(base: dict, family: Family, pts: pd.DataFrame, err: dict, mask) -> dict:
    s = metrics.summarise_errors(err["ulp_err"][mask], err["failure"][mask], err["bits_err"][mask])
    sub = pts[mask]
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
        **_worst_inputs(family, sub, s.worst),
        "max_bits": s.max_bits,
        "mean_bits": s.mean_bits,
        "rms_ulp": s.rms_ulp,
        "max_rel_err": float(rel_err.max()) if rel_err.size else math.nan,
    }


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
            "mode": mode, "threshold": threshold}  # fmt: skip
    quantities = ("value", *family.gradients)
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
    refs = data.refs[cert].reset_index(drop=True)
    t0 = time.perf_counter()
    ev: Evaluation = evaluate(cand, {c: pts[c].to_numpy() for c in family.columns}, data.dtype,
                              device, mode)  # fmt: skip
    timings["evaluation"] += time.perf_counter() - t0
    if ev.status != "ok":
        collector.rows += _status_rows(
            base, f"unsupported: {ev.reason}", quantities, data.out_of_range
        )
        return
    t0 = time.perf_counter()
    regions = [("all", np.ones(len(pts), dtype=bool))] + [
        (name, region_mask(pts, r)) for name, r in suite.regions.items() if r.family == family.name
    ]
    per_point = []
    for q in quantities:
        computed = ev.value if q == "value" else ev.grads.get(q)
        extra = {"out_of_range": data.out_of_range, "uncertified": int((~cert).sum())}
        if computed is None:
            collector.rows += _status_rows(base, "no gradient", (q,), data.out_of_range)
            continue
        reference = refs[_reference_of(cand, q)].to_numpy()
        err = _errors(computed, reference, data.dtype)
        for name, mask in regions:
            row = _summary_row({**base, "quantity": q, "region": name}, family, pts, err, mask)
            collector.rows.append({**row, "status": "ok", **extra})
        per_point.append(
            pd.DataFrame(
                {
                    "family": family.name, "candidate": cand.id, "dtype": data.dtype,
                    "device": device, "mode": mode, "quantity": q,
                    "k": pts["k"].to_numpy(),
                    **{p: (pts[p].to_numpy() if p in pts else np.full(len(pts), np.nan))
                       for p in PARAMS},
                    "computed": computed, "reference": reference, **err,
                }
            )
        )  # fmt: skip
    timings["metrics"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    for table in per_point:
        collector.write_points(table)
    timings["writing"] += time.perf_counter() - t0


def _sweep(
    family: Family, cand: Candidate, ts: tuple[float, ...], device: str, data: _Dtyped
) -> list[dict]:
    """Value errors of a threshold candidate at each t (eager), best and published marked."""
    cert = data.refs["certified"].to_numpy()
    pts = data.points[cert].reset_index(drop=True)
    reference = data.refs[cert][_reference_of(cand, "value")].to_numpy()
    arrays = {c: pts[c].to_numpy() for c in family.columns}
    rows = []
    for t in sorted(set(ts) | set(cand.published_thresholds)):
        ev = evaluate(cand, arrays, data.dtype, device, "eager", threshold=t, gradients=False)
        base = {"family": family.name, "candidate": cand.id, "dtype": data.dtype,
                "device": device, "mode": "eager", "t": t,
                "published": t in cand.published_thresholds}  # fmt: skip
        if ev.status != "ok":
            rows.append({**base, "n": 0, "failures": 0, "max_ulp": math.nan})
            continue
        err = _errors(ev.value, reference, data.dtype)
        s = metrics.summarise_errors(err["ulp_err"], err["failure"])
        rows.append({**base, "n": s.n, "failures": s.failures, "max_ulp": s.max_ulp,
                     "p99_ulp": s.p99_ulp,
                     "max_abs_err": float(err["abs_err"].max()) if s.n else math.nan,
                     **_worst_inputs(family, pts, s.worst)})  # fmt: skip
    # best t: fewest failures, then smallest max, then p99, then the smaller t
    ranked = sorted(
        (r for r in rows if r["n"] > 0),
        key=lambda r: (r["failures"], r["max_ulp"], r["p99_ulp"], r["t"]),
    )
    for r in rows:
        r["best"] = bool(ranked) and r is ranked[0]
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
    points_path = out / "points.parquet" if (out is not None and write_points) else None
    torch.manual_seed(0)  # no candidate draws random numbers; guards against one that would
    with _Collector(points_path) as collector:
        for fname in suite.families:
            family = get_family(fname)
            if not suite.candidates_of(fname):
                continue
            t0 = time.perf_counter()
            prepared = _prepare(family, suite, cache_dir, progress)
            timings["references"] += time.perf_counter() - t0
            jobs = [(c, dev, m, d) for c, dev, m in _jobs(suite, family) for d in prepared]
            bar = tqdm(jobs, desc=f"accuracy {fname}", unit="run", leave=False,
                       disable=progress is False, delay=0 if progress else 2)  # fmt: skip
            for cand, device, mode, data in bar:
                _measure(suite, family, cand, device, mode, data, collector, timings)
            t0 = time.perf_counter()
            for cid, ts in suite.thresholds.items():
                cand = get_candidate(cid)
                if cand.family != fname:
                    continue
                for device in filter(_device_available, suite.devices):
                    for data in prepared:
                        collector.threshold_rows += _sweep(family, cand, ts, device, data)
            timings["evaluation"] += time.perf_counter() - t0

        summary = _frame(collector.rows, SUMMARY_COLUMNS)
        thresholds = _frame(collector.threshold_rows, THRESHOLD_COLUMNS)
        result = AccuracyResult(summary, thresholds, env, timings, out)
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
    names = ("summary.csv", "summary.json", "thresholds.csv", "env.json")
    with atomic_paths(*(out / n for n in names)) as (summary_csv, summary_json, thr, env):
        result.summary.to_csv(summary_csv, index=False)
        summary_json.write_text(
            "[\n" + ",\n".join(json.dumps(r, sort_keys=False) for r in records) + "\n]\n",
            encoding="utf-8",
        )
        result.thresholds.to_csv(thr, index=False)
        env.write_text(json.dumps(result.env, indent=2, sort_keys=True) + "\n", encoding="utf-8")
