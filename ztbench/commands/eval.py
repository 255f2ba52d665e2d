"""``ztbench eval``: evaluate one candidate at the points of a CSV file.

The inputs are rounded to ``--dtype`` first; OUTPUT holds the rounded inputs (float64
repr), the other input columns unchanged, ``value`` and the gradients ``d_<param>``
(empty cells where the candidate has no gradient, i.e. peers; ``nan`` where autograd gave
NaN). Written atomically; nothing is written when the input is bad or the candidate is
unsupported for the requested dtype/device/mode.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ztbench.atomic import check_output_file
from ztbench.candidates import get_candidate
from ztbench.dtypes import DTYPE_NAMES, round_to
from ztbench.errors import UserError
from ztbench.evaluate import MODES, check_device, evaluate
from ztbench.families import Family, domain_mask, get_family
from ztbench.pointsio import read_points_csv, write_csv

HELP = "evaluate one candidate (value and autograd gradients) at the points of a CSV file"

EXIT_UNSUPPORTED = 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("candidate", metavar="CANDIDATE", help="candidate id, e.g. ztnb/stable")
    p.add_argument(
        "input",
        metavar="INPUT.csv",
        help="header row with k,lam (ztpoisson) or k,mu,theta (ztnb); other columns kept",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT.csv")
    p.add_argument("--dtype", default="float64", help=f"one of: {', '.join(DTYPE_NAMES)}")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--mode", default="eager", help=f"one of: {', '.join(MODES)} (default eager)")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="T",
        help="threshold of a threshold-family candidate (default: its own)",
    )


def _warn_outside_domain(family: Family, points: dict[str, np.ndarray], dtype: str) -> None:
    """One line when rounding to ``dtype`` moved points out of the domain (e.g. theta =
    1e-12 rounds to 9.99999996e-13 in float32): they are evaluated as rounded, not refused,
    since that is what a model in that dtype would compute."""
    outside = ~domain_mask(family, points)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        where = ", ".join(f"{c} = {float(points[c][i])!r}" for c in family.columns)
        print(f"ztbench eval: warning: {int(outside.sum())} point(s) leave the domain when "
              f"rounded to {dtype} (first at line {i + 2}: {where}); evaluated as rounded",
              file=sys.stderr)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    try:
        cand = get_candidate(args.candidate)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.dtype not in DTYPE_NAMES:
        raise UserError(f"unknown dtype {args.dtype!r} (known: {', '.join(DTYPE_NAMES)})")
    if args.mode not in MODES:
        raise UserError(f"unknown mode {args.mode!r} (known: {', '.join(MODES)})")
    if args.threshold is not None:
        if not cand.is_threshold_family:
            raise UserError(f"--threshold: {cand.id} is not a threshold candidate")
        if not np.isfinite(args.threshold):
            raise UserError(f"--threshold must be finite, got {args.threshold!r}")

    device = check_device(args.device)
    family = get_family(cand.family)
    check_output_file(args.output, [args.input])
    df = read_points_csv(args.input, family, reserved=("value", *family.gradients))
    for col in family.columns:
        df[col] = round_to(np.array(df[col], dtype=np.float64), args.dtype)
    points = {c: df[c].to_numpy() for c in family.columns}
    _warn_outside_domain(family, points, args.dtype)

    result = evaluate(cand, points, args.dtype, device, args.mode, args.threshold)
    if not result.ok:
        print(f"ztbench eval: {cand.id} unsupported: {result.reason}", file=sys.stderr)
        return EXIT_UNSUPPORTED

    out = df
    out["value"] = result.value
    for g in family.gradients:
        out[g] = result.grads[g] if g in result.grads else ""
    write_csv(out, args.output)
    return 0
