"""Writing throughput.csv and throughput.json, and the terminal summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ztbench.io.atomic import atomic_paths
from ztbench.io.environment import stage_env_text
from ztbench.io.jsonfloat import encode
from ztbench.throughput.config import (
    ThroughputResult,
)


def write_throughput(result: ThroughputResult, out: Path, env: dict[str, Any]) -> list[Path]:
    """Write throughput.csv, throughput.json and env.json into ``out`` (atomically).

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
    with atomic_paths(csv_path, json_path, env_path) as (csv_tmp, json_tmp, env_tmp):
        table.to_csv(csv_tmp, index=False, float_format="%.9g")
        json_tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        env_tmp.write_text(stage_env_text(out, "throughput", env), encoding="utf-8")
    return [csv_path, json_path, env_path]


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
