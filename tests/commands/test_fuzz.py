"""Fuzz harness: generated bad input against the verbs, the one-line promise checked.

Hypothesis generates suite TOML, CSV point tables, baseline JSON, results files and cache
entries, each as random mutations of a valid one: values of the wrong type, extreme
numbers, unicode and byte noise, deep nesting, truncation. For every example, the verb
run in-process must:

- exit with 0 or 2 (``check`` may also exit 1, its verdict on a regression);
- print at most one line on stderr, and no traceback (no exception escapes ``main``);
- write no file outside its output path (the working directory is checked);
- leave no partial output: after exit 2 the output path holds what it held before, and
  no temporary file is left anywhere.

The budget is fixed and seeded (``derandomize``): ``make test`` runs
``ZTBENCH_FUZZ_EXAMPLES`` examples per target (default 20, well under a minute in all);
``make fuzz`` runs 500 per target (``make fuzz FUZZ_EXAMPLES=N`` for more).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faultkit import TINY_SUITE, Run, run_cli, temporaries, traceback_of, tree
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ztbench.reference.cache import MAGIC

EXAMPLES = int(os.environ.get("ZTBENCH_FUZZ_EXAMPLES", "20"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # seeded: the same examples on every run
    database=None,  # nothing written next to the tests
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ----------------------------------------------------------------------- strategies

EXTREME_NUMBERS = st.sampled_from(
    [0, -1, 1, 2**63 - 1, -(2**63), 0.0, -0.0, 1e-320, 5e-324, 1e308, -1e308, 1e-30, 1e9,
     1e10, 1e7, 1e12, math.inf, -math.inf, math.nan, 0.5, 1.5, 10**6]
)  # fmt: skip
NOISE_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=12
) | st.sampled_from(["", " ", "\t", "nan", "inf", "-inf", "1e999", "0x10", "1_000", "\u00e9",
                     "\u202e", "ztnb/*", "*", "\\", '"', "'", "\n"])  # fmt: skip


class Deep:
    """A list nested ``depth`` deep, written out only by the TOML writer (a short repr
    keeps hypothesis's reports readable)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __repr__(self) -> str:
        return f"Deep({self.depth})"


LEAVES = (
    EXTREME_NUMBERS
    | NOISE_TEXT
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([Deep(50), Deep(2000), Deep(100_000)])
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NOISE_TEXT, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def mutated(draw: Callable, valid: Any, alternatives: dict[str, list[Any]] | None = None) -> Any:
    """``valid`` (nested dicts/lists) with a few values replaced, keys added or removed."""
    alternatives = alternatives or {}

    def walk(node: Any, key: str) -> Any:
        if draw(st.integers(0, 9)) == 0:  # replace this node
            choices = alternatives.get(key, [])
            if choices and draw(st.booleans()):
                return draw(st.sampled_from(choices))
            return draw(VALUES)
        if isinstance(node, dict):
            out = {k: walk(v, k) for k, v in node.items() if draw(st.integers(0, 14)) != 0}
            if draw(st.integers(0, 9)) == 0:
                out[draw(NOISE_TEXT)] = draw(VALUES)
            return out
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        return node

    return walk(valid, "")


def byte_noise(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` cut, or with bytes replaced, inserted or deleted."""

    @st.composite
    def strat(draw: Callable) -> bytes:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(["cut", "replace", "insert", "delete"]))
            pos = draw(st.integers(0, max(len(out) - 1, 0)))
            if op == "cut":
                out = out[:pos]
            elif op == "replace" and out:
                out[pos] = draw(st.integers(0, 255))
            elif op == "insert":
                out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
            elif out:
                del out[pos]
        return bytes(out)

    return strat()


# ------------------------------------------------------------------ TOML writing


def _toml_value(v: Any) -> str:
    if isinstance(v, Deep):
        return "[" * v.depth + "1" + "]" * v.depth
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if -(2**63) <= v < 2**63 else json.dumps(str(v))
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for everything json escapes
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: Any) -> str:
    """A TOML document: every top-level key as ``key = <inline value>``."""
    if not isinstance(doc, dict):
        return f"x = {_toml_value(doc)}\n"
    return "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in doc.items())


VALID_SUITE = {
    "dtypes": ["float64"],
    "candidates": {"include": ["ztpoisson/stable", "ztnb/stable"]},
    "thresholds": {"ztpoisson/threshold": [5.0, 10.0]},
    "families": {
        "ztpoisson": {
            "edges": [[1, 1.0], [3, 2.0]],
            "grid": {"k": {"min": 1, "max": 100, "num": 3}, "lam": [1e-30, 1.0, 1e9]},
            "random": {"n": 5, "k": {"min": 1, "max": 1e7}, "lam": {"min": 1e-30, "max": 1e9}},
            "near_thresholds": {"k": [1, 2], "ulps": 1, "decade": 2},
        },
        "ztnb": {
            "edges": [[1, 1.0, 1.0]],
            "grid": {
                "k": [1, 10],
                "mu_over_k": {"min": 0.5, "max": 2.0, "num": 2},
                "theta": [1e-12, 1e10],
            },
            "near_thresholds": {"k": [1], "sum_mu": [1.0], "ulps": 1, "decade": 1},
        },
    },
    "regions": {"tiny": {"family": "ztpoisson", "lam_max": 1e-6}},
    "gate": {"max_ratio": 2.0},
}
# Valid alternatives the mutator may pick: all cheap (no compile mode, no CUDA, no peers).
SUITE_ALTERNATIVES: dict[str, list[Any]] = {
    "dtypes": [["float32"], ["float64", "float16"], ["bfloat16"], []],
    "include": [["ztpoisson/naive"], ["ztnb/*"], ["nope/*"]],
    "num": [0, 1, 4, 10**12, 2**63 - 1],
    "n": [0, 1, 300, 10**12],
    "ulps": [0, 3, 10**9],
    "decade": [0, 1, 10**9],
    "min": [1e-31, 0, 1e-30, 2.5],
    "max": [1e10, 1e9, 1e7, 1e8],
    "k": [[0], [1.5], [1e7], [1e8]],
    "lam": [[0.0], [1e9], [2e9]],
    "theta": [[1e-13], [1e10], [1e11]],
    "modes": [["eager"]],
    "devices": [["cpu"], ["tpu"], ["cuda:abc"]],
    "seed": [0, -1, 2**63 - 1],
}


# --------------------------------------------------------------------- harness


@contextmanager
def workdir() -> Any:
    with tempfile.TemporaryDirectory(prefix="ztfuzz") as d:
        yield Path(d)


def check_promise(
    run: Run, root: Path, before: dict, outputs: tuple[str, ...], codes=(0, 2)
) -> None:
    """The one-line promise for one run in ``root`` whose outputs are ``outputs``."""
    event(f"exit code {run.rc}")  # `pytest --hypothesis-show-statistics` shows the mix
    assert run.exc is None, traceback_of(run)
    assert run.rc in codes, (run.rc, run.err)
    assert len(run.err) <= 1, run.err
    assert not any("Traceback" in line for line in run.err), run.err
    assert temporaries(root) == [], temporaries(root)
    after = tree(root)
    inside = lambda p: any(p == o or p.startswith(o + os.sep) for o in outputs)  # noqa: E731
    outside = {p for p in set(before) | set(after) if not inside(p)}
    changed = {p for p in outside if before.get(p, "absent") != after.get(p, "absent")}
    assert changed == set(), f"files changed outside the output: {sorted(changed)}"
    if run.rc == 2:  # no partial output: the output path holds what it held before
        mine = {p: v for p, v in after.items() if inside(p) and v is not None}
        theirs = {p: v for p, v in before.items() if inside(p) and v is not None}
        assert mine == theirs, "a failed run left output behind"


# ------------------------------------------------------------------------ targets


@FUZZ
@given(doc=mutated(VALID_SUITE, SUITE_ALTERNATIVES))
def test_fuzz_suite_toml(doc):
    with workdir() as d:
        (d / "s.toml").write_text(to_toml(doc), encoding="utf-8")
        before = tree(d)
        run = run_cli(["accuracy", str(d / "s.toml"), "-o", str(d / "out"), "--no-cache",
                       "--no-points", "--no-progress", "--max-points", "400"])  # fmt: skip
        check_promise(run, d, before, ("out",))
        if run.rc == 0:
            assert {"summary.csv", "summary.json", "thresholds.csv", "env.json"} <= set(
                os.listdir(d / "out")
            )


@FUZZ
@given(data=byte_noise(to_toml(VALID_SUITE).encode()))
def test_fuzz_suite_bytes(data):
    with workdir() as d:
        (d / "s.toml").write_bytes(data)
        before = tree(d)
        run = run_cli(["accuracy", str(d / "s.toml"), "-o", str(d / "out"), "--no-cache",
                       "--no-points", "--no-progress", "--max-points", "400"])  # fmt: skip
        check_promise(run, d, before, ("out",))


CSV_CELLS = EXTREME_NUMBERS.map(repr) | NOISE_TEXT | st.sampled_from(["1", "2.5", "1e-30", "3"])
CSV_HEADERS = st.sampled_from(["k,mu,theta", "k, mu, theta", "theta,k,mu,note", "k,mu",
                               "k,mu,theta,nll", "k,k,mu,theta", "k,mu,theta,value"])  # fmt: skip


@st.composite
def csv_text(draw: Callable) -> bytes:
    header = draw(CSV_HEADERS | NOISE_TEXT)
    ncol = header.count(",") + 1
    rows = []
    for _ in range(draw(st.integers(0, 4))):
        width = draw(st.sampled_from([ncol, ncol, ncol, ncol - 1, ncol + 1]))
        rows.append(",".join(draw(CSV_CELLS).replace("\n", " ") for _ in range(max(width, 1))))
    text = "\n".join([header, *rows]) + draw(st.sampled_from(["\n", "", "\r\n"]))
    data = text.encode("utf-8")
    if draw(st.integers(0, 4)) == 0:
        data = draw(byte_noise(data))
    return data


@FUZZ
@given(data=csv_text(), verb=st.sampled_from(["eval", "refs"]))
def test_fuzz_csv_inputs(data, verb):
    with workdir() as d:
        (d / "in.csv").write_bytes(data)
        (d / "out.csv").write_text("previous\n")
        before = tree(d)
        if verb == "eval":
            argv = ["eval", "ztnb/stable", str(d / "in.csv"), "-o", str(d / "out.csv")]
        else:
            argv = ["refs", str(d / "in.csv"), "-o", str(d / "out.csv"), "--family", "ztnb",
                    "--no-cache", "--no-progress"]  # fmt: skip
        run = run_cli(argv)
        check_promise(run, d, before, ("out.csv",))
        if run.rc == 0:
            assert (d / "out.csv").read_text() != "previous\n"


# ----------------------------------------------------------- files ztbench wrote


@pytest.fixture(scope="module")
def recorded() -> Any:
    """A tiny suite, its results directory, its baseline and a warm cache (made once)."""
    with tempfile.TemporaryDirectory(prefix="ztfuzz-rec") as d:
        d = Path(d)
        (d / "tiny.toml").write_text(TINY_SUITE)
        cache = d / "cache"
        assert run_cli(["accuracy", str(d / "tiny.toml"), "-o", str(d / "results"),
                        "--cache-dir", str(cache), "--no-progress"]).rc == 0  # fmt: skip
        assert run_cli(["baseline", str(d / "tiny.toml"), "-o", str(d / "base.json"),
                        "--cache-dir", str(cache)]).rc == 0  # fmt: skip
        yield d


@st.composite
def json_mutation(draw: Callable, text: str) -> bytes:
    kind = draw(st.sampled_from(["tree", "bytes", "deep", "literal"]))
    if kind == "tree":
        doc = draw(mutated(json.loads(text), {"format": [1, 2, 1.0, "1"], "max_ulp": [
            "inf", "-inf", None, -1.0, 1e308], "failures": [-1, 2**64, 1.5, True]}))
        return json.dumps(doc, default=lambda o: [[]] * 3).encode()
    if kind == "bytes":
        return draw(byte_noise(text.encode()))
    if kind == "deep":
        depth = draw(st.sampled_from([100, 1000, 100_000]))
        return ('{"rows": ' + "[" * depth + "]" * depth + "}").encode()
    literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999",
                                    "1" + "0" * 5000]))  # fmt: skip
    return text.replace('"format": 1', f'"format": {literal}', 1).encode()


@FUZZ
@given(data=st.data())
def test_fuzz_baseline_json(recorded, data):
    text = (recorded / "base.json").read_text()
    blob = data.draw(json_mutation(text))
    with workdir() as d:
        (d / "b.json").write_bytes(blob)
        before = tree(d)
        run = run_cli(["check", str(recorded / "tiny.toml"), "--baseline", str(d / "b.json"),
                       "--cache-dir", str(recorded / "cache")])  # fmt: skip
        check_promise(run, d, before, (), codes=(0, 1, 2))


@FUZZ
@given(data=st.data(), name=st.sampled_from(["summary.csv", "thresholds.csv", "env.json"]))
def test_fuzz_results_files_for_report(recorded, data, name):
    original = (recorded / "results" / name).read_bytes()
    if name.endswith(".json"):
        blob = data.draw(json_mutation(original.decode()))
    else:
        blob = data.draw(byte_noise(original))
    with workdir() as d:
        for f in ("summary.csv", "thresholds.csv", "env.json"):
            (d / f).write_bytes((recorded / "results" / f).read_bytes())
        (d / name).write_bytes(blob)
        before = tree(d)
        run = run_cli(["report", str(d)])
        # the report's outputs: REPORT.md and its figures, all inside d
        if run.rc == 2:
            assert "REPORT.md" not in os.listdir(d)
        new = set(tree(d)) - set(before)
        check_promise(run, d, before, tuple(sorted(new)))


def _wrap(payload: bytes) -> bytes:
    return MAGIC + hashlib.sha256(payload).digest() + payload


@st.composite
def cache_payload(draw: Callable, good: bytes) -> bytes:
    """A cache entry: byte noise on a good one, or a foreign payload with a valid checksum."""
    kind = draw(st.sampled_from(["noise", "npz", "npy", "zip", "pickle", "random"]))
    if kind == "noise":
        return draw(byte_noise(good))
    buf = io.BytesIO()
    if kind == "npz":
        names = draw(st.lists(st.sampled_from(["values", "certified", "x"]), max_size=3,
                              unique=True))  # fmt: skip
        dtype = draw(st.sampled_from([np.float64, np.float32, np.bool_, np.int64]))
        shape = draw(st.sampled_from([(0,), (3,), (5, 3), (1, 1, 1)]))
        np.savez(buf, **{n: np.zeros(shape, dtype=dtype) for n in names})
    elif kind == "npy":
        np.save(buf, np.zeros(draw(st.integers(0, 5))))
    elif kind == "zip":
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(draw(st.sampled_from(["values.npy", "a.npy", "certified.npy"])),
                       draw(st.binary(max_size=64)))  # fmt: skip
    elif kind == "pickle":
        np.savez(buf, values=np.array([object()] * 2, dtype=object), certified=np.ones(2, bool))
    else:
        buf.write(draw(st.binary(max_size=256)))
    return _wrap(buf.getvalue())


@FUZZ
@given(data=st.data())
def test_fuzz_cache_entries(recorded, data):
    with workdir() as d:
        src = d / "in.csv"
        src.write_text("k,lam\n1,1.0\n3,2.0\n2,1e-08\n")
        cache = d / "cache"
        argv = ["refs", str(src), "--family", "ztpoisson", "--cache-dir", str(cache),
                "--no-progress"]  # fmt: skip
        assert run_cli([*argv, "-o", str(d / "good.csv")]).rc == 0
        (entry,) = sorted(cache.rglob("*.ztref"))
        entry.write_bytes(data.draw(cache_payload(entry.read_bytes())))
        before = tree(d)
        run = run_cli([*argv, "-o", str(d / "again.csv")])
        check_promise(run, d, before, ("again.csv", "cache"))
        assert run.rc == 0  # a bad entry is recomputed, never an error
        assert (d / "again.csv").read_bytes() == (d / "good.csv").read_bytes()


# ------------------------------------------------------------------ .npz datasets


def _small_shipped_arrays(cells: int = 40) -> dict[str, np.ndarray]:
    """The first ``cells`` cells of the shipped PBMC matrix, in the shipped format."""
    from ztbench.io.datasets import dataset_path

    with np.load(dataset_path("human_pbmc_1k_subset"), allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    end = int(a["counts_indptr"][cells])
    a["counts_indptr"] = a["counts_indptr"][: cells + 1].copy()
    a["counts_data"] = a["counts_data"][:end].copy()
    a["counts_indices"] = a["counts_indices"][:end].copy()
    a["barcodes"] = a["barcodes"][:cells].copy()
    a["shape"] = np.array([cells, int(a["shape"][1])])
    return a


NPZ_VALUES = st.sampled_from([
    np.array([], dtype=np.int64), np.array([-1]), np.array([2**63 + 1], dtype=np.uint64),
    np.array([1.5, 2.0]), np.array([[1, 2], [3, 4]]), np.array(["a", "b"]),
    np.array([10**8]), np.array([0, 5, 3]), np.zeros(3, dtype=bool), np.array([np.nan]),
])  # fmt: skip


@st.composite
def npz_bytes(draw: Callable) -> bytes:
    """The small shipped matrix with arrays replaced, edited, dropped or added, then saved
    (and sometimes the file's bytes damaged)."""
    a = _small_shipped_arrays()
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(a)))
        op = draw(st.sampled_from(["replace", "edit", "drop", "add", "reverse", "cut"]))
        if op == "replace":
            a[key] = draw(NPZ_VALUES)
        elif op == "edit" and a[key].size and a[key].dtype.kind in "iu":
            arr = a[key].astype(np.int64)
            arr[draw(st.integers(0, arr.size - 1))] = draw(
                st.sampled_from([-1, 0, 2**31 - 1, 10**7 + 1, 506, 507, 10**6]))
            a[key] = arr
        elif op == "drop":
            a.pop(key)
        elif op == "add":
            a["extra_" + key] = a[key]
        elif op == "reverse":
            a[key] = a[key][::-1].copy()
        elif op == "cut" and a[key].size:
            a[key] = a[key][: draw(st.integers(0, a[key].size - 1))].copy()
    buf = io.BytesIO()
    np.savez(buf, **a)
    data = buf.getvalue()
    if draw(st.integers(0, 5)) == 0:
        data = draw(byte_noise(data))
    return data


@FUZZ
@given(data=npz_bytes())
def test_fuzz_npz_datasets(data):
    with workdir() as d:
        (d / "counts.npz").write_bytes(data)
        before = tree(d)
        run = run_cli(["fit", str(d / "counts.npz"), "--family", "ztpoisson", "--min-nonzero",
                       "2", "-o", str(d / "out"), "--no-cache"])  # fmt: skip
        check_promise(run, d, before, ("out",))


# ------------------------------------------------- external candidates misbehaving


MISBEHAVIOURS = {
    "raise": "raise RuntimeError('bad\\nsecond line')",
    "exit0": "import sys; sys.exit(0)",
    "exit3": "import sys; sys.exit(3)",
    "none": "return None",
    "shape": "return lam.sum()",
    "dtype": "return _good(k, lam).double()",
    "nan": "return _good(k, lam) * float('nan')",
    "detach": "return _good(k, lam).detach()",
    "list": "return [1.0]",
    "huge": "return torch.full_like(lam, 1e308) * 10",
}


@FUZZ
@given(how=st.sampled_from(sorted(MISBEHAVIOURS)), when=st.sampled_from(["always", "measured"]))
def test_fuzz_external_candidates_misbehaving(how, when):
    body = MISBEHAVIOURS[how]
    guard = "if k.numel() > 16:" if when == "measured" else "if True:"
    code = (
        "import torch\n\n"
        "def _good(k, lam):\n"
        "    return lam + torch.log(-torch.expm1(-lam)) - k * torch.log(lam)\n\n"
        "def ztp(k, lam):\n"
        f"    {guard}\n"
        f"        {body}\n"
        "    return _good(k, lam)\n"
    )
    suite = (
        'dtypes = ["float64", "float32"]\n[candidates]\ninclude = ["ztpoisson/stable"]\n'
        '[[candidates.external]]\nid = "mine/ztp"\ntarget = "user_loss.py:ztp"\n'
        'family = "ztpoisson"\nform = "loss"\n'
        "[families.ztpoisson]\n"
        "grid = { k = [1, 2, 7], lam = { min = 0.01, max = 100, num = 12 } }\n"
    )
    with workdir() as d:
        (d / "user_loss.py").write_text(code)
        (d / "s.toml").write_text(suite)
        before = tree(d)
        run = run_cli(["accuracy", str(d / "s.toml"), "-o", str(d / "out"), "--no-cache",
                       "--no-points", "--no-progress"])  # fmt: skip
        check_promise(run, d, before, ("out", "__pycache__"))
        if run.rc == 0:  # measured: the misbehaviour is a row that says so, never an "ok"
            text = (d / "out" / "summary.csv").read_text()
            mine = [ln for ln in text.splitlines() if ",mine/ztp," in ln and ",all," in ln]
            assert (mine and not all(",ok," in ln for ln in mine)) or how in ("nan", "huge"), mine
