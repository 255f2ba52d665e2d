"""The CI gate: compare a fresh accuracy summary with a committed baseline; ratchet.

Pure part (no I/O): :func:`compare` takes a :class:`Baseline`, a summary DataFrame (the
format of :func:`ztbench.measure.accuracy.run_accuracy`'s ``result.summary``), the run's
environment and a :class:`GateTolerance`, and returns a :class:`GateResult`: regressions,
improvements, baseline rows that disappeared, rows that are new, and the environment keys
that differ. :func:`format_report` turns it into fixed-width text.

File part: :func:`load_baseline` (strict: anything missing, unreadable or malformed is a
one-line :class:`~ztbench.io.errors.UserError`) and :func:`save_baseline` (atomic write).

Rules. A row is identified by :data:`KEY_COLUMNS`. For a candidate with
tolerance (max_ratio r, min_ulp m), a gated metric (:data:`GATED_METRICS`: ``max_ulp``,
``p99_ulp``) regresses when ``now > r * base`` **and** ``now - base > m``; it improves
when ``base > r * now`` and ``base - now > m`` (symmetric, so an improvement is a move the
gate would have called a regression the other way). Infinities compare naturally
(``inf`` vs ``inf`` is neither), a NaN (region with no measured point) only equals a NaN.
``failures`` (non-finite results where the reference is finite) regress when they grow
from 0, or by more than the tolerance's ``failure_slack`` (default 2%) of the baseline's
count, and improve when they shrink by as much (another CPU's last bits in torch's math
functions move a point or two across the overflow boundary of a formulation that already
overflows). A row whose status goes from ``ok`` to anything
else regresses; the reverse improves. Rows whose status is not ``ok`` in both runs are
not compared. A baseline row absent from the summary fails the gate; a summary row absent
from the baseline is reported as new and does not. The environment keys that change
numerics (:data:`ENV_KEYS`: torch version, device kind) must be equal, or the gate fails
with a request to record a baseline for this environment (the rows are then not compared:
the numbers are not comparable). The CPU capability (torch's vector kernels) is not such a
key: a baseline is the envelope (:func:`envelope`) of the suite recorded under every
capability of the recording machine, so any of them passes.

Baseline file (format 2; format 1, without the ``*_best`` fields, is still read), JSON,
UTF-8, diff-friendly::

    {
    "env": {"device_kind": "cpu", "torch": "2.13.0", ...},
    "format": 2,
    "rows": [
    {"family": "ztpoisson", "candidate": "ztpoisson/stable", ..., "max_ulp": 1.5, ...},
    ...
    ],
    "suite": "quick",
    "suite_sha256": "..."
    }

Top-level and ``env`` keys are sorted; ``rows`` holds one row per line, in the order of
:data:`KEY_COLUMNS` (sorted), each row's fields in the fixed order
:data:`KEY_COLUMNS` + :data:`ROW_FIELDS` (so a reviewer reads the key first). Floats are
written with Python's shortest round-trip repr, so they read back bit for bit. JSON has no
infinity or NaN: ``+inf`` and ``-inf`` are written as the strings ``"inf"`` and
``"-inf"``, NaN as ``null`` (so ``max_ulp: "inf"`` together with ``failures > 0`` is a row
where some point failed). ``max_ulp_best`` and ``p99_ulp_best`` hold the lowest value over
the envelope's recordings: a run improves only when it beats that.

Modules: :mod:`.baseline` (the baseline file), :mod:`.comparison` (the comparison),
:mod:`.text` (the verdict as text); the tolerance type is :mod:`ztbench.core.tolerance`.
"""

from __future__ import annotations

from ztbench.core.schema import KEY_COLUMNS, WORST_COLUMNS
from ztbench.core.textfmt import format_table
from ztbench.core.tolerance import GateTolerance, Tolerance
from ztbench.gate.baseline import (
    BASELINE_ENV_KEYS,
    BEST_FIELDS,
    CAPABILITIES_KEY,
    ENV_KEYS,
    FLOAT_FIELDS,
    FORMAT_VERSION,
    GATED_METRICS,
    INT_FIELDS,
    ROW_FIELDS,
    STATUS_OK,
    STR_FIELDS,
    Baseline,
    Key,
    baseline_env,
    baseline_from_json,
    baseline_to_json,
    envelope,
    load_baseline,
    save_baseline,
    summary_rows,
)
from ztbench.gate.comparison import (
    Change,
    EnvMismatch,
    GateResult,
    compare,
    worst_input,
)
from ztbench.gate.text import (
    CHANGE_HEADERS,
    format_changes,
    format_keys,
    format_report,
    verdict,
)

__all__ = [
    "BASELINE_ENV_KEYS",
    "BEST_FIELDS",
    "CAPABILITIES_KEY",
    "CHANGE_HEADERS",
    "ENV_KEYS",
    "FLOAT_FIELDS",
    "FORMAT_VERSION",
    "GATED_METRICS",
    "INT_FIELDS",
    "KEY_COLUMNS",
    "ROW_FIELDS",
    "STATUS_OK",
    "STR_FIELDS",
    "WORST_COLUMNS",
    "Baseline",
    "Change",
    "EnvMismatch",
    "GateResult",
    "GateTolerance",
    "Key",
    "Tolerance",
    "baseline_env",
    "baseline_from_json",
    "baseline_to_json",
    "compare",
    "envelope",
    "format_changes",
    "format_keys",
    "format_report",
    "format_table",
    "load_baseline",
    "save_baseline",
    "summary_rows",
    "verdict",
    "worst_input",
]
