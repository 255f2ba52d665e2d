"""Column lists, key columns, modes and devices: the facts every stage's files share.

Torch-free on purpose: the gate, the report and the CLI's help read these without
loading torch or the reference engines.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

# How a candidate is executed, and where.
# The orders every table, report and CLI uses: families, modes, devices, dtypes (below) and
# the CPU capabilities of torch's vector kernels on x86 (lowest first).
FAMILY_NAMES: tuple[str, ...] = ("ztpoisson", "ztnb")
MODES: tuple[str, ...] = ("eager", "compile")
DEVICES: tuple[str, ...] = ("cpu", "cuda")
# Candidate kinds: a torch function (dtypes, devices, modes, gradients) or a peer library
# evaluated in float64 on the CPU without gradients.
KINDS: tuple[str, ...] = ("torch", "peer")
# A user's own candidate ([[candidates.external]], ztbench.candidates.external): what it
# computes, its sign, how it is called, and the parameterisation named by one word.
FORMS: tuple[str, ...] = ("loss", "full")
SIGNS: tuple[str, ...] = ("nll", "log_prob")
EXTERNAL_KINDS: tuple[str, ...] = ("torch", "numpy")
# Reference engines (ztbench.reference.ENGINES), the default first.
ENGINE_NAMES: tuple[str, ...] = ("arb", "mpmath")
# Target floating-point formats, widest first (their constants: ztbench.core.dtypes).
DTYPE_NAMES: tuple[str, ...] = ("float64", "float32", "bfloat16", "float16")
CPU_CAPABILITIES: tuple[str, ...] = ("default", "avx2", "avx512")
# The parameters a point may carry (each family uses its own subset).
PARAMS: tuple[str, ...] = ("lam", "mu", "theta")
WORST_COLUMNS: tuple[str, ...] = tuple(f"worst_{c}" for c in ("k", *PARAMS))
# A candidate taking a parameter as its logarithm has the column log_<param> instead.
LOG_COLUMNS: tuple[str, ...] = tuple(f"log_{p}" for p in PARAMS)

# summary.csv: one row per (candidate, dtype, device, mode, quantity, region).
KEY_COLUMNS: tuple[str, ...] = (
    "family", "candidate", "dtype", "device", "mode", "quantity", "region",
)  # fmt: skip
SUMMARY_COLUMNS: tuple[str, ...] = (
    "family", "candidate", "dtype", "device", "mode", "quantity", "region", "n", "failures",
    "max_ulp", "p99_ulp", "median_ulp", "mean_ulp", "max_abs_err", *WORST_COLUMNS,
    # beyond the required columns:
    "max_bits", "mean_bits", "rms_ulp", "max_rel_err", "threshold", "status",
    "out_of_range", "uncertified", "kind",
    # "loss" (without lgamma(k + 1), what a model trains with) or "full" (with it)
    "form",
    # the worst input as the candidate saw it, where it takes a log parameter
    *(f"worst_{c}" for c in LOG_COLUMNS),
    # the value's error in ulps of the full NLL (-log P >= 0), for loss-form candidates too
    "max_ulp_full",
)  # fmt: skip
# thresholds.csv: one row per swept threshold value.
THRESHOLD_COLUMNS: tuple[str, ...] = (
    "family", "candidate", "dtype", "device", "mode", "t", "n", "failures", "max_ulp",
    "p99_ulp", "max_abs_err", *WORST_COLUMNS, "best", "published",
    # beyond the required columns: the rule's own cost (ztbench.measure.accuracy._sweep)
    "region", "variable", "switched", "rule_max_ulp", "rule_max_nats",
    *(f"rule_{c}" for c in WORST_COLUMNS), "harmless_half_ulp", "harmless_one_ulp",
)  # fmt: skip
# Columns a results directory written before they existed lacks (read as NaN).
OPTIONAL_COLUMNS: frozenset[str] = frozenset(
    (*(f"worst_{c}" for c in LOG_COLUMNS), "max_ulp_full", "form",
     *THRESHOLD_COLUMNS[THRESHOLD_COLUMNS.index("region"):])
)  # fmt: skip
# points.parquet: the columns the report reads from the per-point results.
POINT_COLUMNS: tuple[str, ...] = (
    "family", "candidate", "dtype", "device", "mode", "quantity", "k", "lam", "mu", "theta",
    "computed", "reference", "ulp_err", "abs_err", "failure",
)  # fmt: skip

# throughput.csv
# How a fit maps a gene's parameters to its cells: mu_cg = m_g (per-gene) or s_c m_g
# (size-factor, s_c the cell's size factor); see ztbench.points.counts.
FIT_MODELS: tuple[str, ...] = ("per-gene", "size-factor")
PASSES: tuple[str, ...] = ("forward", "forward+backward")
# the inputs a throughput row is timed on: log-uniform over the family's whole domain, or
# single-cell-like values (ztbench.throughput.inputs); files without the column are
# log-uniform
INPUT_KINDS: tuple[str, ...] = ("log-uniform", "realistic")
# the realistic inputs: log mu (ZTP: log lam) and log theta uniform over these ranges,
# k = 1 + Poisson(mu)
REALISTIC_LOG_MEAN: tuple[float, float] = (0.0, 2.0)
REALISTIC_LOG_THETA: tuple[float, float] = (0.5, 2.5)
INPUT_KIND_TEXT: dict[str, str] = {
    "log-uniform": "each column log-uniform over the family's whole domain",
    "realistic": (
        f"single-cell-like values: log mu (or log lam) uniform in {list(REALISTIC_LOG_MEAN)}, "
        f"log theta uniform in {list(REALISTIC_LOG_THETA)}, k = 1 + Poisson(mu)"
    ),
}
THROUGHPUT_COLUMNS: tuple[str, ...] = (
    "family", "candidate", "dtype", "device", "mode", "pass", "size", "inputs", "median_s",
    "min_s",
    "elements_per_s", "cost_vs_copy", "cost_vs_naive", "compile_s",
    "peak_bytes_per_element",
)  # fmt: skip
THROUGHPUT_EXTRA_COLUMNS: tuple[str, ...] = (
    "status", "reason", "kind", "form", "threads", "rounds", "calls_per_round",
    "copy_median_s", "copy_min_s", "naive_median_s", "peak_memory_measure",
)  # fmt: skip
# The subdirectory of a results directory where bench times the shipped loss and the
# naive formula again for the speed goals (its own throughput.csv, same columns).
GOAL_THROUGHPUT_DIR = "speed-goals"
# The throughput columns the report needs (older files may lack the rest).
THROUGHPUT_REPORT_COLUMNS: tuple[str, ...] = (
    "family", "candidate", "dtype", "device", "mode", "pass", "size", "median_s",
    "elements_per_s", "cost_vs_naive",
)  # fmt: skip


E = TypeVar("E", bound=StrEnum)


def member(kind: type[E], name: str, noun: str) -> E:
    """The member of the str enum ``kind`` called ``name`` (a member is returned as it
    is): how a family or a float format is resolved from its name. ValueError listing the
    known names otherwise."""
    try:
        return kind(name)
    except ValueError:
        known = ", ".join(m.value for m in kind)
        raise ValueError(f"unknown {noun} {name!r} (known: {known})") from None
