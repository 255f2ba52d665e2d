"""Point generation: determinism, domain, sizes, threshold neighbourhoods, regions."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ztbench import candidates
from ztbench.core.dtypes import round_to
from ztbench.core.families import get_family, validate_points
from ztbench.core.metrics import step_floats
from ztbench.points.grids import (
    build_all_points,
    build_family_points,
    build_points,
    family_rng,
    log_integers,
    region_mask,
    region_variables,
)
from ztbench.suite import (
    REGION_VARIABLES,
    FamilyPoints,
    GridSpec,
    NearThresholds,
    RandomSpec,
    Range,
    Region,
    find_suite,
    load_suite,
)

KNOWN = ["ztpoisson/naive", "ztnb/naive"]


def suite_text(body: str, dtypes: str = '["float64", "float32"]') -> str:
    return f"""\
seed = 3
dtypes = {dtypes}
[candidates]
include = ["ztpoisson/*"]
{body}
"""


def load(tmp_path: Path, text: str):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return load_suite(p, KNOWN)


@pytest.fixture(scope="module")
def quick():
    return candidates.load_suite(find_suite("quick"))


def test_determinism(quick) -> None:
    a = build_all_points(quick)
    b = build_all_points(candidates.load_suite(find_suite("quick")))
    for fam in ("ztpoisson", "ztnb"):
        pd.testing.assert_frame_equal(a[fam], b[fam])
        assert list(a[fam].columns) == list(get_family(fam).columns)
        assert all(a[fam].dtypes == np.float64)
        assert not a[fam].duplicated().any()
        # sorted lexicographically by the columns, index 0..n-1
        keys = a[fam].to_numpy()
        assert (np.lexsort(keys.T[::-1]) == np.arange(len(keys))).all()
        assert (a[fam].index == np.arange(len(keys))).all()


def test_quick_sizes_and_domain(quick) -> None:
    pts = build_all_points(quick)
    for fam, df in pts.items():
        assert 1000 <= len(df) <= 3000, (fam, len(df))
        validate_points(get_family(fam), df)
        assert (df["k"] >= 1).all()
        assert df["k"].max() == 1e7
    lam = pts["ztpoisson"]["lam"]
    assert lam.min() == 1e-30 and lam.max() == 1e9
    nb = pts["ztnb"]
    assert nb["theta"].min() == 1e-12 and nb["theta"].max() == 1e10
    assert nb["mu"].min() == 1e-30 and nb["mu"].max() == 1e9
    for r in quick.regions.values():  # every region of the quick suite has points
        assert region_mask(pts[r.family], r).sum() >= 20, r.name


def test_seed_changes_random_points(tmp_path: Path) -> None:
    body = """
[families.ztpoisson]
random = { n = 50, k = { min = 1, max = 100 }, lam = { min = 1e-3, max = 1e3 } }
"""
    a = build_points(load(tmp_path, suite_text(body)), "ztpoisson")
    b = build_points(load(tmp_path, suite_text(body).replace("seed = 3", "seed = 4")), "ztpoisson")
    assert len(a) == len(b) == 50
    assert not np.array_equal(a.to_numpy(), b.to_numpy())
    r1 = family_rng(3, "ztpoisson").uniform(size=3)
    assert np.array_equal(r1, family_rng(3, "ztpoisson").uniform(size=3))
    assert not np.array_equal(r1, family_rng(3, "ztnb").uniform(size=3))
    assert not np.array_equal(r1, family_rng(3, "ztpoisson", 1).uniform(size=3))


def test_grid_sizes_as_configured() -> None:
    spec = FamilyPoints(
        "ztnb",
        grids=(
            GridSpec(
                {
                    "k": Range(1, 1e7, 8),
                    "mu": Range(1e-30, 1e9, 5),
                    "theta": (1e-12, 1.0, 1e10),
                }
            ),
        ),
    )
    df = build_family_points(spec, 0)
    ks = log_integers(1, 1e7, 8)
    assert len(ks) == 8 and ks[0] == 1 and ks[-1] == 1e7
    assert len(df) == 8 * 5 * 3
    assert sorted(df["theta"].unique()) == [1e-12, 1.0, 1e10]
    assert df["mu"].min() == 1e-30 and df["mu"].max() == 1e9
    # k log-spaced integers deduplicated: at most num
    assert list(log_integers(1, 10, 20)) == list(range(1, 11))


def test_ratio_columns_and_domain_drop() -> None:
    spec = FamilyPoints(
        "ztpoisson",
        grids=(GridSpec({"k": (10.0, 1e7), "lam_over_k": Range(0.5, 1000.0, 3)}),),
    )
    df = build_family_points(spec, 0)
    # lam = k * ratio; k = 1e7 with ratio 1000 leaves the domain (lam <= 1e9): dropped
    ratios = np.geomspace(0.5, 1000.0, 3)
    expected = sorted((k, k * r) for k in (10.0, 1e7) for r in ratios if k * r <= 1e9)
    assert len(expected) == 5
    assert df.to_numpy().tolist() == [list(e) for e in expected]


def test_log_uniform_samples_cover_their_range() -> None:
    spec = FamilyPoints(
        "ztnb",
        randoms=(
            RandomSpec(
                4000,
                {"k": Range(1, 1e7), "mu": Range(1e-30, 1e9), "theta": Range(1e-12, 1e10)},
            ),
        ),
    )
    df = build_family_points(spec, 11)
    assert len(df) == 4000
    for col, (lo, hi) in {"mu": (1e-30, 1e9), "theta": (1e-12, 1e10)}.items():
        x = np.log10(df[col].to_numpy())
        assert x.min() >= math.log10(lo) and x.max() <= math.log10(hi)
        # log-uniform: each of 10 equal bins of log10 gets about a tenth of the points
        counts, _ = np.histogram(x, bins=10, range=(math.log10(lo), math.log10(hi)))
        assert counts.min() > 300 and counts.max() < 500, counts
    k = df["k"].to_numpy()
    assert (k == np.floor(k)).all() and k.min() == 1 and k.max() > 1e6
    counts, _ = np.histogram(np.log10(k), bins=7, range=(0, 7))
    assert counts.min() > 400, counts


def test_ztpoisson_threshold_neighbourhood(tmp_path: Path) -> None:
    body = """
[families.ztpoisson.near_thresholds]
k = [1, 7]
ulps = 3
decade = 5
"""
    df = build_points(
        load(tmp_path, suite_text(body, '["float64", "float32", "bfloat16"]')), "ztpoisson"
    )
    lam = set(df.loc[df["k"] == 7, "lam"])
    assert 10.0 in lam
    for d in ("float64", "float32", "bfloat16"):
        for j in (-3, -1, 1, 3):
            assert float(step_floats(10.0, d, j)) in lam, (d, j)
    assert np.nextafter(10.0, 11.0) in lam and np.nextafter(10.0, 9.0) in lam
    assert 10.0 / math.sqrt(10) in lam and 10.0 * math.sqrt(10) in lam
    assert float(step_floats(10.0, "float16", 1)) not in lam  # float16 not in the suite
    assert len(df) == 2 * len(lam)
    assert set(df["k"]) == {1.0, 7.0}


def test_ztnb_threshold_neighbourhood() -> None:
    near = NearThresholds(
        k=(1.0, 3.0),
        at=(15.0,),
        ulps=2,
        decade=3,
        sum_mu=(0.1, 7.5),
        product_mu=(5.0,),
        w_theta=(100.0,),
    )
    df = build_family_points(FamilyPoints("ztnb", near_thresholds=near), 0, ("float64", "float32"))
    validate_points(get_family("ztnb"), df)
    pts = set(map(tuple, df[df["k"] == 3].to_numpy()[:, 1:]))
    # the coded rule's line theta + mu = 15, exact switch point and float neighbours
    for d in ("float64", "float32"):
        mu = float(round_to(np.float64(0.1), d))
        theta = float(round_to(np.float64(15.0 - mu), d))
        for j in range(-2, 3):
            assert (mu, float(step_floats(theta, d, j))) in pts, (d, j)
        # in float32 the computed sum crosses 15 within the neighbourhood
        ths = np.array([float(step_floats(theta, d, j)) for j in range(-2, 3)])
        sums = round_to(ths + mu, d)
        assert (sums < 15).any() or (sums == 15).any()
        assert (sums > 15).any()
    assert (7.5, 7.5) in pts
    # the text rule's curve (mu - 1)(theta - 1) = 15: theta = 1 + 15/4 = 4.75 (exact)
    assert (5.0, 4.75) in pts
    assert (5.0, float(step_floats(4.75, "float32", 2))) in pts
    # w = theta log1p(mu / theta) = 15 at theta = 100
    mu_w = 100.0 * math.expm1(0.15)
    assert (float(round_to(np.float64(mu_w), "float64")), 100.0) in pts
    # a decade around: theta + mu = 15 / sqrt(10) with the same mu share
    s = 15.0 / math.sqrt(10)
    assert any(abs(m + t - s) < 1e-12 and abs(m / s - 0.5) < 1e-12 for m, t in pts)


def test_edges_and_dedup(tmp_path: Path) -> None:
    body = """
[families.ztpoisson]
edges = [[1, 10.0], [1, 10.0], { k = 2, lam = 1e-30 }]
grid = { k = [1], lam = [10.0, 1.0] }
"""
    df = build_points(load(tmp_path, suite_text(body)), "ztpoisson")
    assert df.to_numpy().tolist() == [[1.0, 1.0], [1.0, 10.0], [2.0, 1e-30]]
    assert len(build_points(load(tmp_path, suite_text(body)), "ztnb")) == 0


def test_region_mask_and_variables() -> None:
    df = pd.DataFrame(
        {"k": [1.0, 100.0, 200.0], "mu": [1e-8, 100.0, 1e3], "theta": [1e8, 5.0, 1e-3]}
    )
    v = region_variables(df, "ztnb")
    assert set(v) == set(REGION_VARIABLES["ztnb"])
    np.testing.assert_allclose(v["w"], df["theta"] * np.log1p(df["mu"] / df["theta"]))
    np.testing.assert_array_equal(v["theta_plus_mu"], [1e8 + 1e-8, 105.0, 1e3 + 1e-3])
    tiny_mu = Region("tiny-mu", "ztnb", {"mu": (-math.inf, 1e-6)})
    np.testing.assert_array_equal(region_mask(df, tiny_mu), [True, False, False])
    near = Region("k-near-mu", "ztnb", {"k": (100, math.inf), "mu_over_k": (0.5, 2.0)})
    np.testing.assert_array_equal(region_mask(df, near), [False, True, False])
    p = pd.DataFrame({"k": [1.0, 5.0], "lam": [1e-9, 5.0]})
    assert set(region_variables(p, "ztpoisson")) == set(REGION_VARIABLES["ztpoisson"])
    r = Region("k-near-lam", "ztpoisson", {"lam_over_k": (1.0, 1.0)})
    np.testing.assert_array_equal(region_mask(p, r), [False, True])


@pytest.mark.parametrize(("name", "lo", "hi"), [("default", 20_000, 40_000),
                                               ("full", 200_000, 500_000)])  # fmt: skip
def test_shipped_suite_sizes(name: str, lo: int, hi: int) -> None:
    """The default suite is sized for make bench's five minutes, the full one ten times it."""
    s = candidates.load_suite(find_suite(name))
    # without the dataset sources: their reference fits take minutes on a cold cache (their
    # points are tested on a small dataset in test_suite_dataset.py)
    pts = {
        fam: build_family_points(dataclasses.replace(spec, dataset=None), s.seed, s.dtypes)
        for fam, spec in s.families.items()
    }
    total = sum(len(df) for df in pts.values())
    assert lo <= total <= hi
    for fam, df in pts.items():
        validate_points(get_family(fam), df)
