"""The verbs of the ``ztbench`` command: one module each, argparse only.

Each module defines ``add_arguments(parser)`` and ``run(args) -> int``, which makes one
call into the library. :data:`VERBS` holds each verb's one-line help: ``ztbench --help``
lists the verbs from it without importing them (and so without torch), and the CLI
imports only the module of the verb it runs. The module is the verb with ``-`` replaced
by ``_``; adding a verb means adding a module and its line here.
"""

from __future__ import annotations

VERBS: dict[str, str] = {
    "accuracy": (
        "measure every candidate of a suite against certified references (value and gradients)"
    ),
    "adversarial": (
        "adversarial search for the worst float64 points (zero crossings, arb references)"
    ),
    "baseline": "run a suite and record its accuracy summary as the CI gate's baseline",
    "bench": (
        "run accuracy, throughput and the report on a suite; print the report path and leaders"
    ),
    "bench-refs": (
        "benchmark: certified reference points per second of each engine on the ztnb domain"
    ),
    "candidates": (
        "list the candidate formulations (built-in, and a suite's external ones): id, "
        "family, form, dtypes, description, provenance"
    ),
    "check": ("CI gate: rerun a suite and fail (exit 1) if it is less accurate than the baseline"),
    "dataset-fits": (
        "record the reference fits that a suite's real-data points come from (package data)"
    ),
    "eval": ("evaluate one candidate (value and autograd gradients) at the points of a CSV file"),
    "fit": ("maximum-likelihood reference fit (float64, certified stationary) of each gene"),
    "impact": (
        "refit each gene with each candidate's loss and dtype; excess NLL and parameter errors"
    ),
    "refs": ("certified reference NLL values and gradients for the points of a CSV file"),
    "report": (
        "write DIR/REPORT.md (tables, heatmaps, sweeps, Pareto front) from a results directory"
    ),
    "throughput": (
        "time every candidate (elements/s, ratio to a copy and to naive) and write throughput.csv"
    ),
}
