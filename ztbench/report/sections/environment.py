"""The report section "Environment": versions, platform, devices, the suite, the bench's
stages and the throughput settings, then env.json in full."""

from __future__ import annotations

import json

from ztbench.report.model import ReportModel

TITLE = "## Environment"


def bench_line(record: dict) -> str:
    """``bench.json`` in one line: the total, each stage's time and peak memory."""

    def gb(b: int | None) -> str:
        return "?" if b is None else f"{b / 1e9:.2f} GB"

    parts = ", ".join(f"{k} {r['wall_s']:.1f} s, {gb(r['peak_rss_bytes'])}"
                      for k, r in record["stages"].items())  # fmt: skip
    return (f"{record['total_s']:.1f} s in all ({parts}); peak resident memory "
            f"{gb(record['peak_rss_bytes'])}, largest child process "
            f"{gb(record['children_peak_rss_bytes'])}")  # fmt: skip


def render(model: ReportModel) -> str:
    results = model.results
    env = results.env
    pk = env.get("packages", {}) or {}
    lines = [
        f"ztbench {env.get('ztbench', '?')}, Python {env.get('python', '?')}, "
        f"torch {env.get('torch', '?')}",
        "packages: " + ", ".join(f"{k} {v}" for k, v in sorted(pk.items()) if v),
        f"platform: {env.get('platform', '?')}",
        f"cpu: {env.get('cpu', '?')} ({env.get('cpu_count', '?')} cores), torch threads "
        f"{env.get('torch_threads', '?')}",
        f"devices: {', '.join(env.get('devices', []) or ['?'])}; CUDA "
        + (", ".join(env.get("cuda_devices") or []) or "not available"),
        f"suite: {env.get('suite_path', '?')} (sha256 {env.get('suite_sha256', '?')})",
    ]
    if results.bench:
        lines.append("ztbench bench: " + bench_line(results.bench))
    if results.throughput_settings:
        st = results.throughput_settings
        lines.append("throughput: " + ", ".join(f"{k} {v}" for k, v in st.items()
                                                 if not isinstance(v, dict | list)))  # fmt: skip
    return (
        "```\n" + "\n".join(lines) + "\n```\n\n<details><summary>env.json</summary>\n\n"
        "```json\n" + json.dumps(env, indent=2, sort_keys=True) + "\n```\n\n</details>\n"
    )
