"""The report section "Leaderboards" (one table per family x dtype x device, ranked by the
value's max ulp error) and its short text form for the terminal."""

from __future__ import annotations

import math
from pathlib import Path

from ztbench.report.data import load_results
from ztbench.report.model import ReportModel
from ztbench.report.tables import board_keys, board_markdown, fmt, leaderboard

TITLE = "## Leaderboards"


def render(model: ReportModel) -> str:
    results, with_speed = model.results, model.with_speed
    md = ["Ranked by the max ulp error of the value (failures last), eager mode, region "
          "`all`. `max abs err (nats)`: the largest absolute error of the value, beside "
          "its ulp: near a zero of the NLL a tiny error in nats is many ulp. "
          "Gradient columns: max ulp of each autograd gradient; peers have no "
          "gradient. cost_vs_naive: time per element relative to the family's naive formula "
          "(above 1 is slower)"
          + (" at the largest size measured." if with_speed else
             "; not measured in this run.") + "\n"]  # fmt: skip
    for key in board_keys(results):
        board = leaderboard(results, key)
        if board.empty:
            continue
        md.append(f"### {key.family} · {key.dtype} · {key.device}\n")
        md.append(board_markdown(board, key.family, with_speed) + "\n")
    return "\n".join(md)


def terminal_leaderboard(directory: Path | str, dtypes: tuple[str, ...] = ("float32", "float64"),
                         top: int = 3) -> list[str]:  # fmt: skip
    """Short text leaderboard: the top ``top`` candidates per family for ``dtypes``."""
    results = load_results(directory)
    lines = []
    for key in board_keys(results):
        if key.dtype not in dtypes:
            continue
        board = leaderboard(results, key)
        ranked = board[board["rank"].notna()].head(top) if not board.empty else board
        if ranked.empty:
            continue
        lines.append(f"{key.family} {key.dtype} {key.device}:")
        for r in ranked.to_dict(orient="records"):
            val = fmt(r["max_ulp"]) if not r["failures"] else f"inf ({r['failures']} fail)"
            cost = r["cost_fb_vs_naive"]
            speed = "" if math.isnan(cost) else f"  cost_vs_naive {cost:.2f}"
            lines.append(f"  {int(r['rank'])}. {r['candidate']:<30} max {val:>10} ulp  "
                         f"p99 {fmt(r['p99_ulp']):>8} ulp{speed}")  # fmt: skip
    return lines
