"""The "Published rules" tables and the "Diagnosis" section on a tiny accuracy run.

One run of ``ztbench accuracy`` (two dtypes, a few dozen points per family) measures the
published transcriptions, the published package itself (bento-sc, when installed) and one
external candidate of the user's (a naive ZTP loss that overflows in float32). Every
number the sections print is checked against one computed here from points.parquet or
summary.csv with pandas, never against the report's own helpers.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ztbench.candidates import bento, load_suite
from ztbench.core.textfmt import fmt
from ztbench.measure.accuracy import run_accuracy
from ztbench.report import build_report
from ztbench.report.data import load_results
from ztbench.report.diagnosis import diagnosis_section
from ztbench.report.published import published_section

EXTERNAL = "mine/ztp"
USER_CODE = '''
import torch


def ztp(k, lam):
    """The ZTP loss written naively: log(e^lam - 1) overflows past lam ~ 88 in float32."""
    return torch.log(torch.expm1(lam)) - k * torch.log(lam)
'''
# the published domain as the suite states it (the region's bounds, inclusive)
DOMAIN = (1.0, 1e7)
SUITE = f"""\
name = "sections"
dtypes = ["float64", "float32"]

[candidates]
include = ["ztpoisson/published", "ztpoisson/bento-sc", "ztnb/published-code", "ztnb/bento-sc"]

[[candidates.external]]
id = "{EXTERNAL}"
target = "code/user_loss.py:ztp"
family = "ztpoisson"
form = "loss"

[families.ztpoisson]
grid = {{ k = [1, 2, 7, 30], lam = {{ min = 0.01, max = 300, num = 13 }} }}

[families.ztnb]
grid = {{ k = [1, 3], mu = {{ min = 0.1, max = 100, num = 5 }}, theta = [0.5, 20] }}

[regions.published-domain]
family = ["ztpoisson", "ztnb"]
mean_min = {DOMAIN[0]}
mean_max = {DOMAIN[1]}

[regions.near-lam-10]
family = "ztpoisson"
lam_min = 3.0
lam_max = 30.0
"""
MAX_LINE = 600


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tiny run's results directory and its REPORT.md."""
    root = tmp_path_factory.mktemp("sections")
    (root / "code").mkdir()
    (root / "code" / "user_loss.py").write_text(textwrap.dedent(USER_CODE))
    (root / "s.toml").write_text(SUITE)
    out = root / "out"
    run_accuracy(load_suite(root / "s.toml"), out, cache_dir=False, progress=False)
    return out, build_report(out).read_text()


def _section(text: str, title: str) -> str:
    return text.split(title + "\n", 1)[1].split("\n## ", 1)[0]


def _table(text: str, first_cell: str) -> tuple[list[str], list[str]]:
    """(header, cells) of the first Markdown table row of ``text`` whose first cell is
    ``first_cell``."""
    lines = text.splitlines()

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    for i, line in enumerate(lines):
        if line.startswith("| ") and cells(line)[0] == first_cell:
            j = i
            while not lines[j - 1].startswith("|---"):
                j -= 1
            return cells(lines[j - 2]), cells(line)
    raise AssertionError(f"no row {first_cell!r}")


def _points(d: Path, candidate: str, dtype: str, quantity: str = "value") -> pd.DataFrame:
    p = pd.read_parquet(d / "points.parquet")
    return p[(p["candidate"] == candidate) & (p["dtype"] == dtype) & (p["mode"] == "eager")
             & (p["quantity"] == quantity)].reset_index(drop=True)  # fmt: skip


def _diagnosis(text: str, candidate: str, dtype: str) -> str:
    sub = _section(text, "## Diagnosis").split(f"### `{candidate}`\n", 1)[1].split("\n### ")[0]
    return sub.split(f"#### {dtype}\n", 1)[1].split("\n#### ")[0]


def _same_bits(d: Path, a: str, b: str) -> bool:
    p = pd.read_parquet(d / "points.parquet")
    keys = ["dtype", "device", "quantity", "k", "lam", "mu", "theta", "computed"]
    fa, fb = (p[(p["candidate"] == c) & (p["mode"] == "eager")][keys].sort_values(keys)
              .reset_index(drop=True) for c in (a, b))  # fmt: skip
    if fa.empty or len(fa) != len(fb):
        return False
    return bool(fa.drop(columns="computed").equals(fb.drop(columns="computed"))
                and (fa["computed"].to_numpy().view(np.int64)
                     == fb["computed"].to_numpy().view(np.int64)).all())  # fmt: skip


def test_no_line_over_600_characters(run: tuple[Path, str]) -> None:
    _, text = run
    long = [line[:80] for line in text.splitlines() if len(line) > MAX_LINE]
    assert long == []
    assert "## Published rules\n" in text and "## Diagnosis\n" in text
    assert text.index("## Published rules\n") < text.index("## Diagnosis\n")


def test_published_table_max_ulp_is_the_summary_row(run: tuple[Path, str]) -> None:
    d, text = run
    s = pd.read_csv(d / "summary.csv")
    row = s[(s["candidate"] == "ztpoisson/published") & (s["dtype"] == "float64")
            & (s["quantity"] == "value") & (s["region"] == "published-domain")].iloc[0]  # fmt: skip
    header, cells = _table(_section(text, "## Published rules"), "`ztpoisson/published`"
                           + (", `ztpoisson/bento-sc`" if _same_bits(d, "ztpoisson/published",
                                                                      "ztpoisson/bento-sc")
                              else ""))  # fmt: skip
    got = dict(zip(header, cells, strict=True))
    assert got["dtype"] == "float64" and got["where"] == "published domain"
    assert got["points"] == str(int(row["n"]))
    assert got["max ulp"] == fmt(row["max_ulp"])
    assert got["max ulp, full NLL"] == fmt(row["max_ulp_full"])
    assert got["max error (nats)"] == fmt(row["max_abs_err"])
    # the gradient column: the relative error of d_lam inside the published domain
    g = _points(d, "ztpoisson/published", "float64", "d_lam")
    inside = (g["lam"] >= DOMAIN[0]) & (g["lam"] <= DOMAIN[1])
    rel = (g["computed"][inside] - g["reference"][inside]).abs() / g["reference"][inside].abs()
    assert got["d_lam max rel err"] == fmt(rel.max())


def test_merge_sentence_only_when_the_points_agree_bit_for_bit(run: tuple[Path, str]) -> None:
    d, text = run
    section = _section(text, "## Published rules")
    sentence = ("`ztpoisson/bento-sc` gives the same numbers as `ztpoisson/published` "
                "(bit for bit on every point)")  # fmt: skip
    assert (sentence in section) == _same_bits(d, "ztpoisson/published", "ztpoisson/bento-sc")
    assert not bento.available() or sentence in section  # the package matches its transcription


@pytest.mark.skipif(not bento.available(), reason="bento-sc not installed")
def test_one_changed_value_is_no_longer_bit_for_bit(run: tuple[Path, str], tmp_path: Path) -> None:
    """The same summary with one computed value changed by one float64 step: only "the same
    summary numbers", never "bit for bit"."""
    d, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)
    p = pd.read_parquet(copy / "points.parquet")
    i = p.index[(p["candidate"] == "ztpoisson/bento-sc") & (p["quantity"] == "value")][0]
    p.loc[i, "computed"] = np.nextafter(p.loc[i, "computed"], np.inf)
    pq.write_table(pa.Table.from_pandas(p, preserve_index=False), copy / "points.parquet")
    section = published_section(load_results(copy))
    assert "(bit for bit on every point)" not in section.split("### ztnb")[0]
    assert ("`ztpoisson/bento-sc` gives the same summary numbers as `ztpoisson/published` "
            "(though not the same values at every point)" in section)  # fmt: skip


def test_diagnosis_region_nats_is_the_max_over_the_points(run: tuple[Path, str]) -> None:
    d, text = run
    for dtype in ("float64", "float32"):
        sub = _diagnosis(text, EXTERNAL, dtype)
        pts = _points(d, EXTERNAL, dtype)
        inside = (pts["lam"] >= DOMAIN[0]) & (pts["lam"] <= DOMAIN[1])
        for region, mask in (("`all`", pd.Series(True, index=pts.index)),
                             ("`published-domain`", inside)):
            header, cells = _table(sub, region)
            got = dict(zip(header, cells, strict=True))
            m = pts[mask]
            err = (m["computed"] - m["reference"]).abs().where(~m["failure"], np.inf)
            assert got["max abs error (nats)"] == fmt(err.max()), (dtype, region)
            assert got["points"] == str(len(m))
            assert got["failures"] == str(int(m["failure"].sum()))
        # failure kinds over the whole domain: the naive form overflows to +inf in float32
        header, cells = _table(sub, "`all`")
        got = dict(zip(header, cells, strict=True))
        c = pts["computed"]
        assert got["+inf"] == str(int((pts["failure"] & (c == np.inf)).sum()))
        assert got["NaN"] == str(int((pts["failure"] & c.isna()).sum()))
    header, cells = _table(_diagnosis(text, EXTERNAL, "float32"), "`all`")
    assert int(dict(zip(header, cells, strict=True))["failures"]) > 0  # the planted overflow


def test_diagnosis_reproduces_the_worst_input(run: tuple[Path, str]) -> None:
    """The first case by nats is the finite point of largest |computed - reference|, and
    its command's input file holds that point."""
    d, text = run
    sub = _diagnosis(text, EXTERNAL, "float64")
    assert "**Headline:**" in sub and "nats" in sub.split("**Headline:**")[1].split("\n")[0]
    pts = _points(d, EXTERNAL, "float64")
    ok = pts[~pts["failure"]]
    worst = ok.loc[(ok["computed"] - ok["reference"]).abs().idxmax()]
    cmd = re.search(r"^1\. `(ztbench eval .*)`$", sub, flags=re.M)
    assert cmd is not None and "code/user_loss.py:ztp" in cmd.group(1)
    csv = Path(re.search(r" (\S+\.csv) --dtype float64", cmd.group(1)).group(1))
    assert csv.is_file()
    written = pd.read_csv(csv)
    assert list(written.columns) == ["k", "lam"]
    assert (written["k"].iloc[0], written["lam"].iloc[0]) == (worst["k"], worst["lam"])
    header, cells = _table(sub, "1")
    assert dict(zip(header, cells, strict=True))["by"].startswith("nats #1")


def test_diagnosis_has_a_heatmap_per_candidate(run: tuple[Path, str]) -> None:
    d, text = run
    diag = _section(text, "## Diagnosis")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", diag)
    assert any(EXTERNAL.replace("/", "-") in i for i in images)
    assert any("ztnb-published-code" in i for i in images)
    for rel in images:
        assert (d / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel


def test_without_points_or_candidates(run: tuple[Path, str], tmp_path: Path) -> None:
    d, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)
    (copy / "points.parquet").unlink()
    results = load_results(copy)
    text = diagnosis_section(results)
    assert "No points.parquet" in text and "left out" in text
    assert f"### `{EXTERNAL}`" in text and "To reproduce" not in text
    published = published_section(results)
    assert "bit for bit" not in published and "no points.parquet to compare" in published
    results.summary = results.summary[results.summary["candidate"] == "ztnb/naive"]
    results.env.pop("external_candidates", None)
    assert diagnosis_section(results).count("\n") == 1
