"""The write-up's view (NLL maps with a candidate's error in nats): the panels' data checked
against mpmath and against the per-point errors, on a hand-made results directory and,
when it is there, on results/default (read only: figures go to tmp_path)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import mpmath
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ztbench.report.data import Results, load_results
from ztbench.report.nll_maps import (
    find_lattice,
    nll_map_ztnb,
    nll_map_ztpoisson,
    ztnb_panels,
    ztpoisson_lines,
)
from ztbench.report.plots import Figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEFAULT = Path(__file__).resolve().parents[2] / "results" / "default"
ZTNB_CAND, ZTP_CAND = "ztnb/published-code", "ztpoisson/published"


def ztnb_nll(k: float, mu: float, theta: object) -> float:
    """The full ZTNB NLL in 80-digit arithmetic (theta: a float or an mpf)."""
    with mpmath.workdps(80):
        k, mu, theta = mpmath.mpf(k), mpmath.mpf(mu), mpmath.mpf(theta)
        v = (mpmath.loggamma(theta) - mpmath.loggamma(k + theta) + mpmath.loggamma(k + 1)
             - theta * mpmath.log(theta) + mpmath.log((theta + mu) ** theta - theta**theta)
             - k * mpmath.log(mu) + k * mpmath.log(theta + mu))  # fmt: skip
        return float(v)


def ztp_nll(k: float, lam: float) -> float:
    """The full ZTP NLL in 60-digit arithmetic."""
    with mpmath.workdps(60):
        k, lam = mpmath.mpf(k), mpmath.mpf(lam)
        return float(-k * mpmath.log(lam) + mpmath.log(mpmath.expm1(lam)) + mpmath.loggamma(k + 1))


# ----------------------------------------------------------------------- hand-made directory


def _rows(family: str, k: np.ndarray, params: dict[str, np.ndarray], full: np.ndarray,
          err: np.ndarray) -> pd.DataFrame:  # fmt: skip
    """Value rows of a loss-form candidate: reference = full - lgamma(k + 1); the first
    row fails (computed NaN)."""
    ref = full - np.array([math.lgamma(x + 1) for x in k])
    computed = ref + err
    computed[0] = np.nan
    cand = ZTNB_CAND if family == "ztnb" else ZTP_CAND
    nan = np.full(len(k), np.nan)
    return pd.DataFrame({
        "family": family, "candidate": cand, "dtype": "float32", "device": "cpu",
        "mode": "eager", "quantity": "value", "k": k,
        **{p: params.get(p, nan) for p in ("lam", "mu", "theta")},
        "computed": computed, "reference": ref, "ulp_err": 1.0, "bits_err": 1.0,
        "abs_err": np.where(np.isnan(computed), np.inf, np.abs(computed - ref)),
        "rel_err": 1e-7, "failure": np.isnan(computed),
    })  # fmt: skip


def _lattice_rows(rng: np.random.Generator) -> pd.DataFrame:
    frames = []
    # the ztnb lattice: k = 1, 3 x 12 mu x 10 theta; a smaller one elsewhere at k = 7;
    # random points on the lattice's window at k = 1
    mus, thetas = np.logspace(-3, 2, 12), np.logspace(-1, 3, 10)
    for k, ms, ts in ((1.0, mus, thetas), (3.0, mus, thetas),
                      (7.0, np.logspace(4, 6, 10), np.logspace(4, 6, 10))):  # fmt: skip
        m, t = (a.ravel() for a in np.meshgrid(ms, ts))
        kk = np.full(m.size, k)
        full = np.array([ztnb_nll(k, a, b) for a, b in zip(m, t, strict=True)])
        frames.append(_rows("ztnb", kk, {"mu": m, "theta": t}, full,
                            10 ** rng.uniform(-8, 1, m.size)))  # fmt: skip
    m, t = 10 ** rng.uniform(-3, 2, 50), 10 ** rng.uniform(-1, 3, 50)
    frames.append(_rows("ztnb", np.ones(50), {"mu": m, "theta": t}, np.ones(50), np.ones(50)))
    # the ztpoisson lattice: k = 1, 2, 3 x 25 lam; random lam at k = 1
    lams = np.logspace(-4, 3, 25)
    for k in (1.0, 2.0, 3.0):
        full = np.array([ztp_nll(k, x) for x in lams])
        frames.append(_rows("ztpoisson", np.full(25, k), {"lam": lams}, full,
                            10 ** rng.uniform(-9, -2, 25)))  # fmt: skip
    lam = 10 ** rng.uniform(-4, 3, 40)
    frames.append(_rows("ztpoisson", np.ones(40), {"lam": lam}, np.ones(40), np.ones(40)))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report tests' directory with lattices added to points.parquet and the
    candidates' form in throughput.csv."""
    from test_report import _write_dir  # the report tests' hand-made directory (same folder)

    d = _write_dir(tmp_path_factory.mktemp("nll_maps") / "run", throughput=True)
    points = pd.concat([pd.read_parquet(d / "points.parquet"),
                        _lattice_rows(np.random.default_rng(1))], ignore_index=True)  # fmt: skip
    points.to_parquet(d / "points.parquet", index=False)
    tp = pd.read_csv(d / "throughput.csv")
    tp["form"] = "loss"
    tp.to_csv(d / "throughput.csv", index=False)
    return d


def _draws(res: Results, draw: Callable[..., Figure | None], candidate: str,
           out: Path) -> Figure:  # fmt: skip
    """``draw``'s figure of ``candidate`` (float32, cpu), checked to be written to ``out``."""
    fig = draw(res, out, "map.png", candidate, "float32", "cpu")
    assert fig is not None and fig.path == "map.png"
    assert (out / "map.png").read_bytes()[:8] == PNG_MAGIC
    return fig


def _expected_err(pts: pd.DataFrame, on: np.ndarray) -> float:
    ok = on & np.isfinite(pts["computed"].to_numpy())
    return float(np.abs(pts["computed"] - pts["reference"]).to_numpy()[ok].max())


def test_ztnb_panels_on_a_made_lattice(made: Path, tmp_path: Path) -> None:
    res = load_results(made)
    fig = _draws(res, nll_map_ztnb, ZTNB_CAND, tmp_path)
    assert "NLL" in fig.caption and "hatched" in fig.caption and ZTNB_CAND in fig.caption
    panels, form = ztnb_panels(res, ZTNB_CAND, "float32", "cpu")
    assert form == "loss"
    assert [p.k for p in panels] == [1.0, 3.0]  # k = 7's smaller lattice elsewhere left out
    pts = pd.read_parquet(made / "points.parquet")
    pts = pts[(pts["candidate"] == ZTNB_CAND) & (pts["quantity"] == "value")]
    for p in panels:
        assert p.y is not None
        np.testing.assert_array_equal(p.x, np.logspace(-3, 2, 12))
        np.testing.assert_array_equal(p.y, np.logspace(-1, 3, 10))
        for j, i in ((0, 0), (9, 11), (4, 7), (9, 0)):
            assert p.nll[j, i] == pytest.approx(ztnb_nll(p.k, p.x[i], p.y[j]), rel=1e-12)
        at = pts[pts["k"] == p.k]
        on = at["mu"].isin(p.x).to_numpy() & at["theta"].isin(p.y).to_numpy()
        assert np.nanmax(p.err) == _expected_err(at, on)
        assert p.failed.sum() == 1 and p.failed[0, 0] and np.isnan(p.err[0, 0])


def test_ztpoisson_lines_on_a_made_lattice(made: Path, tmp_path: Path) -> None:
    res = load_results(made)
    _draws(res, nll_map_ztpoisson, ZTP_CAND, tmp_path)
    lines, _ = ztpoisson_lines(res, ZTP_CAND, "float32", "cpu")
    assert [ln.k for ln in lines] == [1.0, 2.0, 3.0]
    pts = pd.read_parquet(made / "points.parquet")
    pts = pts[(pts["candidate"] == ZTP_CAND) & (pts["quantity"] == "value")]
    for ln in lines:
        np.testing.assert_array_equal(ln.x, np.logspace(-4, 3, 25))
        for i in (3, 12, 24):
            assert ln.nll[i] == pytest.approx(ztp_nll(ln.k, ln.x[i]), rel=1e-12)
        at = pts[pts["k"] == ln.k]
        assert np.nanmax(ln.err) == _expected_err(at, at["lam"].isin(ln.x).to_numpy())


def test_none_without_a_lattice(tmp_path: Path) -> None:
    from test_report import _write_dir

    d = _write_dir(tmp_path / "run", throughput=False)  # random points only
    out = tmp_path / "out"
    out.mkdir()
    res = load_results(d)
    assert nll_map_ztnb(res, out, "a.png", ZTNB_CAND, "float32", "cpu") is None
    assert nll_map_ztpoisson(res, out, "b.png", ZTP_CAND, "float32", "cpu") is None
    assert nll_map_ztnb(res, out, "c.png", "ztnb/absent", "float32", "cpu") is None
    (d / "points.parquet").unlink()
    res = load_results(d)
    assert nll_map_ztnb(res, out, "d.png", ZTNB_CAND, "float32", "cpu") is None
    assert list(out.iterdir()) == []


def test_find_lattice_tolerates_a_missing_point() -> None:
    xs, ys = np.arange(1.0, 13.0), np.arange(1.0, 11.0)
    x, y = (a.ravel() for a in np.meshgrid(xs, ys))
    keep = np.ones(x.size, dtype=bool)
    keep[5] = False  # an uncertified point
    x, y = np.concatenate([x[keep], [2.5, 100.0]]), np.concatenate([y[keep], [3.0, 4.0]])
    found = find_lattice(x, y, 10, 10)
    assert found is not None
    np.testing.assert_array_equal(found[0], xs)
    np.testing.assert_array_equal(found[1], ys)
    assert find_lattice(x, y, 13, 10) is None


# ----------------------------------------------------------------------- results/default


def _default_points(tmp_path: Path) -> Path:
    """results/default with its points.parquet (not committed: the test skips without it),
    the small files copied to tmp_path so nothing is written next to the committed ones."""
    if not (DEFAULT / "points.parquet").is_file():
        pytest.skip("results/default/points.parquet is not there (run `make bench`)")
    d = tmp_path / "default"
    d.mkdir()
    for name in ("summary.csv", "thresholds.csv", "env.json", "throughput.csv",
                 "throughput.json"):  # fmt: skip
        shutil.copy(DEFAULT / name, d / name)
    (d / "points.parquet").symlink_to(DEFAULT / "points.parquet")
    return d


def _value_rows(path: Path, candidate: str, columns: list[str], k: float) -> pd.DataFrame:
    f = ((ds.field("candidate") == candidate) & (ds.field("dtype") == "float32")
         & (ds.field("mode") == "eager") & (ds.field("quantity") == "value")
         & (ds.field("k") == k))  # fmt: skip
    return pq.read_table(path, columns=columns, filters=f).to_pandas()


def test_ztnb_on_results_default(tmp_path: Path) -> None:
    d = _default_points(tmp_path)
    res = load_results(d)
    _draws(res, nll_map_ztnb, ZTNB_CAND, tmp_path)
    panels, form = ztnb_panels(res, ZTNB_CAND, "float32", "cpu")
    assert form == "loss"
    assert [p.k for p in panels] == [1.0, 2.0, 5.0, 20.0]  # suites/default.toml's grid
    p = panels[0]
    assert p.y is not None and p.nll.shape == (25, 29) and np.isfinite(p.nll).all()
    pts = _value_rows(d / "points.parquet", ZTNB_CAND,
                      ["mu", "theta", "log_theta", "computed", "reference"], 1.0)  # fmt: skip
    # the lattice, found independently: the suite's grid values (mu as float32, theta as
    # exp of float32 log theta)
    mu_grid = np.logspace(-4, 3, 29).astype(np.float32).astype(np.float64)
    theta_grid = np.exp(np.log(np.logspace(-2, 4, 25)).astype(np.float32).astype(np.float64))
    on = pts["mu"].isin(mu_grid).to_numpy() & np.isin(pts["theta"], theta_grid)
    np.testing.assert_array_equal(p.x, mu_grid)
    np.testing.assert_allclose(p.y, theta_grid, rtol=1e-15)
    assert np.nanmax(p.err) == _expected_err(pts, on)
    for j, i in ((0, 0), (24, 28), (0, 28), (24, 0), (12, 14), (20, 3)):
        row = pts[(pts["mu"] == p.x[i]) & (pts["theta"] == p.y[j])].iloc[0]
        with mpmath.workdps(80):
            exact = ztnb_nll(1.0, p.x[i], mpmath.exp(mpmath.mpf(row["log_theta"])))
        assert p.nll[j, i] == pytest.approx(exact, rel=1e-12)


def test_ztpoisson_on_results_default(tmp_path: Path) -> None:
    d = _default_points(tmp_path)
    res = load_results(d)
    _draws(res, nll_map_ztpoisson, ZTP_CAND, tmp_path)
    lines, _ = ztpoisson_lines(res, ZTP_CAND, "float32", "cpu")
    assert [ln.k for ln in lines] == [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0]
    ln = lines[0]
    pts = _value_rows(d / "points.parquet", ZTP_CAND, ["lam", "computed", "reference"], 1.0)
    lam_grid = np.logspace(-8, 3, len(ln.x)).astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(ln.x, lam_grid)
    assert np.nanmax(ln.err) == _expected_err(pts, pts["lam"].isin(lam_grid).to_numpy())
    for i in (0, len(ln.x) // 2, len(ln.x) - 1):
        assert ln.nll[i] == pytest.approx(ztp_nll(1.0, ln.x[i]), rel=1e-12)
