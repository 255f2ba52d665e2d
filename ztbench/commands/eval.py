"""``ztbench eval``: evaluate one candidate at the points of a CSV file.

CANDIDATE is a candidate id, or the user's own function as ``module:function`` or
``path/to/file.py:function`` with ``--family`` (and ``--form``, ``--sign``, ``--kind``,
``--parameters`` as in a suite's ``[[candidates.external]]``; see
:mod:`ztbench.candidates.external`). Importing it runs the user's code.

INPUT gives the candidate's own columns (``k,mu,log_theta`` for a candidate taking log
theta; ``ztbench candidates`` lists them) or the family's natural ones (``k,mu,theta``),
which are converted (log_theta = log theta in float64). The inputs are rounded to
``--dtype`` first; OUTPUT holds the candidate's rounded inputs (float64 repr), the other
input columns unchanged, ``value`` and the gradients with respect to its own parameters,
``d_<param>`` or ``d_log_<param>`` (empty cells where the candidate has no gradient,
i.e. peers; ``nan`` where autograd gave NaN). Written atomically; nothing is written
when the input is bad or the candidate is unsupported for the requested
dtype/device/mode.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ztbench.candidates import get_candidate
from ztbench.candidates.external import from_cli
from ztbench.commands._target import add_target_arguments
from ztbench.core.families import Family, domain_mask, get_family, to_natural
from ztbench.core.schema import DTYPE_NAMES, MODES
from ztbench.io.atomic import check_output_file
from ztbench.io.errors import UserError
from ztbench.io.pointsio import read_header, read_points_csv, write_csv
from ztbench.measure.evaluate import candidate_inputs, check_device, evaluate

EXIT_UNSUPPORTED = 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "candidate",
        metavar="CANDIDATE",
        help="candidate id, e.g. ztnb/stable, or your own module:function or "
        "path/to/file.py:function (with --family)",
    )
    p.add_argument(
        "input",
        metavar="INPUT.csv",
        help="header row with k,lam (ztpoisson) or k,mu,theta (ztnb), or the candidate's "
        "own columns (e.g. k,mu,log_theta); other columns kept",
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
    add_target_arguments(p)


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

    if args.dtype not in DTYPE_NAMES:
        raise UserError(f"unknown dtype {args.dtype!r} (known: {', '.join(DTYPE_NAMES)})")
    if ":" in args.candidate:  # the user's own function
        if args.family is None:
            raise UserError(f"{args.candidate}: give its family with --family")
        cand = from_cli(args.candidate, args.family, args, (args.dtype,))
    else:
        try:
            cand = get_candidate(args.candidate)
        except ValueError as exc:
            raise UserError(str(exc)) from None
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
    header = read_header(args.input)
    own = all(c in header for c in cand.columns)
    df = read_points_csv(args.input, family, cand.log_params if own else (),
                         reserved=("value", *cand.gradients))  # fmt: skip
    points = candidate_inputs(cand, {c: df[c].to_numpy() for c in df.columns if c in
                                     (*family.columns, *cand.columns)}, args.dtype)  # fmt: skip
    if not own:  # natural columns converted: the candidate's own columns replace them
        df = df.drop(columns=[c for c in family.columns if c not in cand.columns])
        df = df.assign(**{c: 0.0 for c in cand.columns if c not in df.columns})
        df = df[[*cand.columns, *(c for c in df.columns if c not in cand.columns)]]
    for col in cand.columns:
        df[col] = points[col]
    _warn_outside_domain(family, to_natural(family, points, cand.log_params), args.dtype)

    result = evaluate(cand, points, args.dtype, device, args.mode, args.threshold)
    if not result.ok:
        print(f"ztbench eval: {cand.id} unsupported: {result.reason}", file=sys.stderr)
        return EXIT_UNSUPPORTED

    out = df  # an input column named like an output column was refused above
    out["value"] = result.value
    for g in cand.gradients:
        out[g] = result.grads[g] if g in result.grads else ""
    write_csv(out, args.output)
    return 0
