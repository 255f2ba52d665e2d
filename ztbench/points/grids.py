"""Input points of a family from a suite's point specs, and named regions.

:func:`build_points` turns the ``[families.<name>]`` specs of a :class:`~ztbench.suite.Suite`
into a pandas DataFrame with the family's columns (``k, lam`` / ``k, mu, theta``), float64,
deduplicated and sorted lexicographically by those columns (so the same suite always gives
the same frame, whatever the order of its specs). Every point lies in the family's domain
with ``k >= 1`` (checked with :func:`ztbench.core.families.validate_points`).

Spec kinds (schema in :mod:`ztbench.suite`):

- grid: cartesian product of per-column values: a range ``{min, max, num}`` is log-spaced
  (``np.geomspace``; for ``k``, log-spaced values rounded to integers and deduplicated) or
  an explicit list; ``lam_over_k`` / ``mu_over_k`` give the mean as ``k * ratio``.
- random: ``n`` samples, each column log-uniform on ``[min, max]``; ``k`` is a log-uniform
  integer ``floor(exp(U(log kmin, log(kmax + 1))))``. The generator is numpy's PCG64 seeded
  with ``SeedSequence([suite seed, family tag, block index])``, the family tag being the
  first 4 bytes of sha256(family name): stable across runs, machines and Python versions.
- edges: explicit rows.
- near_thresholds: the switch points of the published rules and their float neighbours in
  each suite dtype (:func:`ztbench.core.metrics.step_floats`), plus a decade around them.
- dataset: realistic points from the reference fit of real counts
  (:func:`ztbench.points.datasets.dataset_points`); a region with ``source = "dataset"`` selects
  exactly these points.

Points computed from ratios or threshold curves that fall outside the domain are dropped;
explicit values were validated by the suite loader.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ztbench.core.dtypes import round_to
from ztbench.core.families import Family, domain_mask, get_family, validate_points
from ztbench.core.metrics import step_floats
from ztbench.core.rules import pair_curve_theta, product_curve_theta, sum_curve_theta, w_curve_mu
from ztbench.points.datasets import dataset_points, membership
from ztbench.suite import (
    RATIO_KEYS,
    FamilyPoints,
    GridSpec,
    NearThresholds,
    RandomSpec,
    Range,
    Region,
    Suite,
)

__all__ = [
    "build_all_points",
    "build_family_points",
    "build_points",
    "family_rng",
    "log_integers",
    "region_mask",
    "region_variables",
]

_SQRT10 = math.sqrt(10.0)


def family_rng(seed: int, family: str, block: int = 0) -> np.random.Generator:
    """PCG64 generator for random block ``block`` of ``family`` under suite seed ``seed``."""
    tag = int.from_bytes(hashlib.sha256(family.encode()).digest()[:4], "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, tag, block])))


def log_integers(lo: float, hi: float, num: int) -> np.ndarray:
    """Up to ``num`` distinct integers log-spaced over ``[lo, hi]`` (both kept), float64."""
    return np.unique(np.round(np.geomspace(lo, hi, num)))


def _values(col: str, spec: Range | tuple[float, ...]) -> np.ndarray:
    if isinstance(spec, Range):
        if col == "k":
            return log_integers(spec.min, spec.max, int(spec.num or 1))
        return np.geomspace(spec.min, spec.max, int(spec.num or 1))
    return np.asarray(spec, dtype=np.float64)


def _from_ratio(family: Family, cols: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Columns keyed by the family's column names (ratio keys turned into k * ratio)."""
    out = dict(cols)
    for ratio, col in RATIO_KEYS[family.name].items():
        if ratio in out:
            out[col] = out.pop(ratio) * out["k"]
    return {c: out[c] for c in family.columns}


def _grid(family: Family, spec: GridSpec) -> dict[str, np.ndarray]:
    keys = list(spec.columns)
    axes = [_values(k, spec.columns[k]) for k in keys]
    mesh = np.meshgrid(*axes, indexing="ij")
    return _from_ratio(family, {k: m.ravel() for k, m in zip(keys, mesh, strict=True)})


def _log_uniform(rng: np.random.Generator, r: Range, n: int) -> np.ndarray:
    x = np.exp(rng.uniform(math.log(r.min), math.log(r.max), n))
    return np.clip(x, r.min, r.max)


def _random(family: Family, spec: RandomSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for key, r in spec.columns.items():  # the loader orders keys as family.columns
        if key == "k":
            u = rng.uniform(math.log(r.min), math.log(r.max + 1.0), spec.n)
            cols[key] = np.clip(np.floor(np.exp(u)), r.min, r.max)
        else:
            cols[key] = _log_uniform(rng, r, spec.n)
    return _from_ratio(family, cols)


def _decade(t: float, num: int) -> np.ndarray:
    if num <= 0:
        return np.empty(0)
    if num == 1:
        return np.array([t])
    return np.geomspace(t / _SQRT10, t * _SQRT10, num)


def _neighbours(x: float, dtype: str, ulps: int) -> np.ndarray:
    """x rounded to dtype and ``ulps`` floats of dtype either side (float64 values)."""
    return step_floats(np.float64(x), dtype, np.arange(-ulps, ulps + 1))


def _near(family: Family, spec: NearThresholds, dtypes: Sequence[str]) -> dict[str, np.ndarray]:
    """Threshold neighbourhoods as columns (before crossing with k)."""
    parts: list[np.ndarray] = []  # rows of the parameter columns
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for t in spec.at:
            if family.name == "ztpoisson":
                lam = [_neighbours(t, d, spec.ulps) for d in dtypes]
                lam.append(_decade(t, spec.decade))
                parts.append(np.concatenate(lam)[:, None])
                continue
            scales = _decade(t, spec.decade)
            for mu0 in spec.sum_mu:  # the October 2024 code's rule: theta + mu = t
                for d in dtypes:
                    mu = float(round_to(np.float64(mu0), d))
                    th = _neighbours(float(round_to(np.float64(sum_curve_theta(mu, t)), d)), d,
                                     spec.ulps)  # fmt: skip
                    parts.append(np.column_stack([np.full_like(th, mu), th]))
                mu_s = mu0 * scales / t
                parts.append(np.column_stack([mu_s, scales - mu_s]))
            for name, curve in (("product_mu", product_curve_theta),  # the text's product
                                ("pair_mu", pair_curve_theta)):  # the code's product  # fmt: skip
                for mu0 in getattr(spec, name):
                    for d in dtypes:
                        mu = float(round_to(np.float64(mu0), d))
                        th = _neighbours(float(round_to(np.float64(curve(mu, t)), d)), d,
                                         spec.ulps)  # fmt: skip
                        parts.append(np.column_stack([np.full_like(th, mu), th]))
                    th_s = np.array([curve(mu0, x) for x in scales])
                    parts.append(np.column_stack([np.full_like(scales, mu0), th_s]))
            for th0 in spec.w_theta:  # the w rule: theta log1p(mu / theta) = t
                for d in dtypes:
                    th = float(round_to(np.float64(th0), d))
                    mu_c = w_curve_mu(th, t)
                    mu = _neighbours(float(round_to(np.float64(mu_c), d)), d, spec.ulps)
                    parts.append(np.column_stack([mu, np.full_like(mu, th)]))
                mu_s = w_curve_mu(th0, scales)
                parts.append(np.column_stack([mu_s, np.full_like(mu_s, th0)]))
    params = np.concatenate(parts) if parts else np.empty((0, len(family.params)))
    ks = np.asarray(spec.k, dtype=np.float64)
    rows = np.repeat(params, len(ks), axis=0)
    kcol = np.tile(ks, len(params))
    cols = {"k": kcol}
    cols.update({p: rows[:, i] for i, p in enumerate(family.params)})
    return cols


def build_family_points(
    spec: FamilyPoints, seed: int, dtypes: Sequence[str] = ("float64",)
) -> pd.DataFrame:
    """The points of one family's spec (``dtypes``: where threshold neighbours are taken)."""
    family = spec.family
    blocks: list[dict[str, np.ndarray]] = [_grid(family, g) for g in spec.grids]
    blocks += [
        _random(family, r, family_rng(seed, family.name, i)) for i, r in enumerate(spec.randoms)
    ]
    if spec.edges:
        arr = np.asarray(spec.edges, dtype=np.float64)
        blocks.append({c: arr[:, i] for i, c in enumerate(family.columns)})
    if spec.near_thresholds is not None:
        blocks.append(_near(family, spec.near_thresholds, dtypes))
    if spec.dataset is not None:
        real = dataset_points(spec.dataset)
        blocks.append({c: real[c].to_numpy() for c in family.columns})
    ncol = len(family.columns)
    mats = [np.column_stack([b[c] for c in family.columns]) for b in blocks if len(b["k"])]
    mat = np.concatenate(mats) if mats else np.empty((0, ncol))
    cols = {c: mat[:, i] for i, c in enumerate(family.columns)}
    mat = mat[domain_mask(family, cols, allow_k0=False)]
    mat = np.unique(mat, axis=0)  # deduplicate, sort lexicographically by (k, params...)
    df = pd.DataFrame({c: np.ascontiguousarray(mat[:, i]) for i, c in enumerate(family.columns)})
    validate_points(family, df)
    return df


def build_points(suite: Suite, family: str) -> pd.DataFrame:
    """The points of ``family`` in ``suite`` (empty frame if the suite has none)."""
    spec = suite.families.get(family)
    if spec is None:
        return pd.DataFrame({c: np.empty(0) for c in get_family(family).columns})
    return build_family_points(spec, suite.seed, suite.dtypes)


def build_all_points(suite: Suite) -> dict[str, pd.DataFrame]:
    """``{family: points}`` for every family the suite gives points for."""
    return {name: build_points(suite, name) for name in suite.families}


def region_variables(df: pd.DataFrame, family: str) -> dict[str, np.ndarray]:
    """The variables a region may bound (see ``ztbench.suite.REGION_VARIABLES``)."""
    k = df["k"].to_numpy(dtype=np.float64)
    if family == "ztpoisson":
        lam = df["lam"].to_numpy(dtype=np.float64)
        return {"k": k, "lam": lam, "mean": lam, "w": lam, "lam_over_k": lam / k}
    mu = df["mu"].to_numpy(dtype=np.float64)
    theta = df["theta"].to_numpy(dtype=np.float64)
    return {
        "k": k,
        "mu": mu,
        "mean": mu,
        "theta": theta,
        "w": theta * np.log1p(mu / theta),
        "mu_over_k": mu / k,
        "theta_plus_mu": theta + mu,
    }


def region_mask(
    df: pd.DataFrame,
    region: Region,
    family: str | None = None,
    dataset_rows: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean mask of the rows of ``df`` (points of ``family``, default
    ``region.family``) inside ``region``.

    ``dataset_rows``: which rows are points of the family's dataset source, when the caller
    knows (points rounded to a dtype no longer equal the source's float64 points); else
    the rows are matched against the source exactly.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        variables = region_variables(df, family or region.family)
    mask = np.ones(len(df), dtype=bool)
    if region.dataset is not None:
        mask &= membership(df, region.dataset) if dataset_rows is None else dataset_rows
    for var, (lo, hi) in region.bounds.items():
        x = variables[var]
        mask &= (x >= lo) & (x <= hi)
    return mask
