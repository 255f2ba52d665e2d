"""ztbench.io.jsonfloat: one JSON convention for non-finite floats, used by every writer."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from ztbench.io.jsonfloat import decode_float, encode
from ztbench.measure.accuracy import AccuracyResult, write_results


def test_round_trip_and_rejects() -> None:
    for x in (0.0, -2.5, 1e308, 5e-324, math.inf, -math.inf):
        assert decode_float(json.loads(json.dumps(encode(x)))) == x
    assert math.isnan(decode_float(json.loads(json.dumps(encode(math.nan)))))
    assert encode(np.float32(math.inf)) == "inf" and encode(np.int64(3)) == 3
    assert encode("ok") == "ok"
    for bad in (True, "nan", "Infinity", [1.0]):
        with pytest.raises(ValueError, match="must be a number"):
            decode_float(bad)


def test_summary_json_uses_it(tmp_path) -> None:
    from ztbench.core.schema import SUMMARY_COLUMNS, THRESHOLD_COLUMNS

    row = dict.fromkeys(SUMMARY_COLUMNS, math.nan)
    row |= {"family": "ztpoisson", "candidate": "ztpoisson/naive", "n": 3, "failures": 1,
            "max_ulp": math.inf, "status": "ok"}  # fmt: skip
    result = AccuracyResult(
        summary=pd.DataFrame([row], columns=list(SUMMARY_COLUMNS)),
        thresholds=pd.DataFrame(columns=list(THRESHOLD_COLUMNS)),
        env={},
    )
    write_results(result, tmp_path)
    doc = json.loads((tmp_path / "summary.json").read_text())
    rec = doc[0]
    assert rec["max_ulp"] == "inf" and rec["p99_ulp"] is None and rec["n"] == 3
