"""Writing throughput.csv and throughput.json, and the terminal summary.
"""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path
from typing import Any

import pandas as pd
import pytest_benchmark
from pytest_benchmark.stats import Stats

from ztbench.io.atomic import atomic_paths
from ztbench.io.environment import stage_env_text
from ztbench.io.jsonfloat import encode
from ztbench.throughput.config import (
    ThroughputResult,
)


def write_throughput(result: ThroughputResult, out: Path, env: dict[str, Any]) -> list[Path]:
    """Write throughput.csv, throughput.json, env.json and pytest-benchmark.json (the same
    timings in pytest-benchmark's format) into ``out``, as one set (atomically).

    JSON: ``{"columns", "rows" (objects, columns in order; non-finite floats as in
    :mod:`ztbench.io.jsonfloat`), "settings",
    "peak_memory_measures", "env"}``. Returns the paths written.
    """
    out = Path(out)
    table = result.table
    csv_path, json_path, env_path = (
        out / "throughput.csv",
        out / "throughput.json",
        out / "env.json",
    )
    cfg = result.config
    doc = {
        "columns": list(table.columns),
        "settings": {
            "threads": result.threads,
            "seed": result.seed,
            "budget_s": cfg.budget_s,
            "min_rounds": cfg.min_rounds,
            "max_rounds": cfg.max_rounds,
            "min_round_s": cfg.min_round_s,
            "warmup": cfg.warmup,
            "peer_max_size": cfg.peer_max_size,
            "loadavg": result.loadavg,
            "ratios": "cost multiples: median_s / copy_median_s and median_s / naive_median_s",
        },
        "peak_memory_measures": result.memory_measures,
        "rows": [{k: encode(v) for k, v in rec.items()} for rec in table.to_dict(orient="records")],
        "env": env,
    }
    bench_path = out / BENCHMARK_FILE
    bench_doc = pytest_benchmark_document(result, env)
    paths = [csv_path, json_path, env_path, bench_path]
    with atomic_paths(*paths) as (csv_tmp, json_tmp, env_tmp, bench_tmp):
        table.to_csv(csv_tmp, index=False, float_format="%.9g")
        json_tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        env_tmp.write_text(stage_env_text(out, "throughput", env), encoding="utf-8")
        bench_tmp.write_text(json.dumps(bench_doc, indent=1) + "\n", encoding="utf-8")
    return paths


BENCHMARK_FILE = "pytest-benchmark.json"


def pytest_benchmark_document(result: ThroughputResult, env: dict[str, Any]) -> dict[str, Any]:
    """The timed rows in pytest-benchmark's JSON format, so that the field's tool reads
    them: ``pytest-benchmark compare DIR/pytest-benchmark.json`` (two files compare).

    One benchmark per timed row: named after the candidate, with the dtype, device, mode,
    pass, size and input kind as its parameters; its statistics are pytest-benchmark's own
    (:class:`pytest_benchmark.stats.Stats`) over the rounds' per-call seconds, and the
    element rate and cost ratios ride along as ``extra_info``.
    """
    cfg = result.config
    benchmarks = []
    for row, rounds in zip(result.table.to_dict(orient="records"), result.round_s, strict=True):
        if row["status"] != "ok" or not rounds:
            continue
        stats = Stats()
        for t in rounds:
            stats.update(t)
        params = {k: row[k] for k in ("dtype", "device", "mode", "pass", "size", "inputs")}
        param = "-".join(str(v) for v in params.values())
        benchmarks.append({
            "group": f"{row['family']} {row['pass']} {row['dtype']} {row['device']} "
                     f"{row['mode']} {row['inputs']} {row['size']}",
            "name": f"{row['candidate']}[{param}]",
            "fullname": f"ztbench throughput::{row['candidate']}[{param}]",
            "params": params,
            "param": param,
            "extra_info": {k: encode(row[k]) for k in ("elements_per_s", "cost_vs_copy",
                                                       "cost_vs_naive", "calls_per_round")},
            "options": {"disable_gc": False, "timer": "perf_counter",
                        "min_rounds": cfg.min_rounds, "max_time": cfg.budget_s,
                        "min_time": cfg.min_round_s, "warmup": cfg.warmup > 0},
            "stats": {**stats.as_dict(), "iterations": int(row["calls_per_round"])},
        })  # fmt: skip
    return {
        "machine_info": {
            "node": "", "processor": env.get("cpu", ""), "machine": platform.machine(),
            "python_implementation": platform.python_implementation(),
            "python_version": env.get("python", platform.python_version()),
            "python_compiler": platform.python_compiler(), "release": platform.release(),
            "system": platform.system(), "cpu": {"brand_raw": env.get("cpu", "")},
        },
        "commit_info": {},
        "benchmarks": benchmarks,
        "datetime": datetime.datetime.now(datetime.UTC).isoformat(),
        "version": pytest_benchmark.__version__,
    }  # fmt: skip


def summary_lines(table: pd.DataFrame) -> list[str]:
    """Short human summary: counts by status and the element-rate ratios to naive."""
    lines = []
    counts = table["status"].value_counts()
    lines.append("rows: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    ok = table[table["status"] == "ok"]
    for _, r in ok.iterrows():
        lines.append(
            f"{r['candidate']:<28} {r['dtype']:<8} {r['device']:<5} {r['mode']:<7} "
            f"{r['pass']:<16} {r['size']:>9.0e}  {r['elements_per_s']:.3g} el/s  "
            f"x{r['cost_vs_copy']:.2f} copy  x{r['cost_vs_naive']:.2f} naive"
        )
    return lines
