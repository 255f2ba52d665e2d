"""Adversarial search for the worst float64 points of candidates, beyond any suite.

The suites sample the domain on grids and at random; the worst errors of an accurate
loss sit at the zero crossings of the loss and of its gradients, where the float64 sum
cancels, and a grid finds those only by luck. This module looks for them on purpose:

1. **Random restarts**: ``restarts`` start points per round, log-uniform over the
   family's domain, half of them with the mean near k (mean = k times a ratio in
   [1/3, 3]: where the Poisson log-pmf cancels).
2. **Local refinement towards zero crossings**: from each start point, the mean (lam or
   mu) is scanned over four decades either side; wherever the shipped loss
   (``ztbench.loss``, float64) or one of its gradients changes sign, a log-bisection finds
   the adjacent float64 pair, and the float64 neighbours (0, 1, 2, 4 ulp either side) of
   the crossing become candidate points.
3. **References from the arb engine** (certified; :func:`ztbench.reference.compute_references`),
   every candidate evaluated (:func:`ztbench.measure.evaluate.evaluate`), errors in float64 ulp.
4. The ``keep`` worst points of each (candidate, quantity) seed the next round's starts
   (their parameters perturbed by a log-normal factor that shrinks each round, k by a
   few units), with new random restarts besides.

Every point evaluated is returned with its errors, so a caller can report the worst per
(candidate, quantity) (:func:`worst_points`). Each row also carries the point's
cancellation: log2 of the terms' size over |reference| (value: the reference engine's
:func:`~ztbench.reference.formulas.cancelling_magnitude`; gradients: the sum of |terms|
of the textbook gradient). A double-double sum keeps ~2^-104 of its terms, so a point
with c bits of cancellation would keep about 2^(c - 51) ulp: at the float64 nearest a
crossing c reaches 64-74 bits, where the shipped loss relies on its last resort
(:mod:`ztbench.loss.last_resort`).

Deterministic: seeded (``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.special import digamma

from ztbench.candidates import get_candidate
from ztbench.core.families import get_family
from ztbench.core.metrics import step_floats, ulp_error
from ztbench.loss import zt_negbin_nll, zt_poisson_nll
from ztbench.measure.evaluate import evaluate
from ztbench.reference import compute_references
from ztbench.reference.formulas import cancelling_magnitude

__all__ = ["DEFAULT_CANDIDATES", "search", "worst_points"]

DEFAULT_CANDIDATES = {
    "ztpoisson": ("ztpoisson/ztbench", "ztpoisson/ztbench-full"),
    "ztnb": ("ztnb/ztbench", "ztnb/ztbench-full"),
}
_MEAN = {"ztpoisson": "lam", "ztnb": "mu"}
_SCAN = 33  # samples of the mean over [m / 1e4, m * 1e4] per start point
_BISECT_STEPS = 80  # log-bisection steps (from 8 decades to adjacent floats)
_OFFSETS = (0, 1, 2, 4)


def _loguniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def _random_starts(family: str, n: int, rng: np.random.Generator) -> pd.DataFrame:
    fam = get_family(family)
    k = np.floor(_loguniform(rng, 1.0, fam.domain["k"][1] + 1.0, n))
    k = np.clip(k, 1.0, fam.domain["k"][1])
    cols = {"k": k}
    for p in fam.params:
        lo, hi = fam.domain[p]
        cols[p] = _loguniform(rng, lo, hi, n)
    mean = _MEAN[family]
    near = rng.random(n) < 0.5
    cols[mean] = np.where(near, k * _loguniform(rng, 1 / 3, 3.0, n), cols[mean])
    return _clip(family, pd.DataFrame(cols))


def _clip(family: str, df: pd.DataFrame) -> pd.DataFrame:
    fam = get_family(family)
    for c in fam.columns:
        lo, hi = fam.domain[c]
        df[c] = np.clip(df[c].to_numpy(dtype=np.float64), lo, hi)
    df["k"] = np.floor(df["k"])
    return df


def _perturb(family: str, seeds: pd.DataFrame, n: int, sigma: float,
             rng: np.random.Generator) -> pd.DataFrame:  # fmt: skip
    """n points around the seeds: each parameter times exp(N(0, sigma)), k + N(0, 2)."""
    if seeds.empty or n <= 0:
        return seeds.iloc[:0]
    fam = get_family(family)
    pick = seeds.iloc[rng.integers(0, len(seeds), n)].reset_index(drop=True)
    out = {"k": np.round(pick["k"].to_numpy() + rng.normal(0.0, 2.0, n))}
    for p in fam.params:
        out[p] = pick[p].to_numpy() * np.exp(rng.normal(0.0, sigma, n))
    return _clip(family, pd.DataFrame(out))


def _shipped(family: str, k: np.ndarray, params: Sequence[np.ndarray]) -> np.ndarray:
    """Rows (value, *gradients) of the shipped float64 loss (loss form) at the points."""
    kt = torch.tensor(k, dtype=torch.float64)
    ps = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    fn = zt_poisson_nll if family == "ztpoisson" else zt_negbin_nll
    out = fn(kt, *ps, reduction="none", validate=False)
    grads = torch.autograd.grad(out.sum(), ps)
    return np.stack([out.detach().numpy(), *(g.numpy() for g in grads)])


def _crossings(family: str, starts: pd.DataFrame) -> pd.DataFrame:
    """Float64 neighbours of the zero crossings in the mean of the value and gradients."""
    fam = get_family(family)
    mean = _MEAN[family]
    lo_d, hi_d = fam.domain[mean]
    n = len(starts)
    if n == 0:
        return starts
    scale = np.logspace(-4, 4, _SCAN)
    grid = np.clip(starts[mean].to_numpy()[:, None] * scale[None, :], lo_d, hi_d)
    rep = {c: np.repeat(starts[c].to_numpy(), _SCAN) for c in fam.columns}
    rep[mean] = grid.reshape(-1)
    vals = _shipped(family, rep["k"], [rep[p] for p in fam.params]).reshape(-1, n, _SCAN)
    rows: list[pd.DataFrame] = []
    for q in range(vals.shape[0]):
        sign = vals[q] > 0
        change = sign[:, 1:] != sign[:, :-1]
        i_pt, i_s = np.nonzero(change)
        if not len(i_pt):
            continue
        lo = grid[i_pt, i_s].copy()
        hi = grid[i_pt, i_s + 1].copy()
        base = {c: starts[c].to_numpy()[i_pt] for c in fam.columns}
        s_lo = sign[i_pt, i_s]
        for _ in range(_BISECT_STEPS):
            mid = np.sqrt(lo * hi)
            args = dict(base)
            args[mean] = mid
            v = _shipped(family, args["k"], [args[p] for p in fam.params])[q] > 0
            same = v == s_lo
            lo = np.where(same, mid, lo)
            hi = np.where(same, hi, mid)
        for off in _OFFSETS:
            for sgn in (1, -1):
                pts = dict(base)
                pts[mean] = step_floats(lo, "float64", sgn * off)
                rows.append(pd.DataFrame(pts))
    if not rows:
        return starts.iloc[:0]
    return _clip(family, pd.concat(rows, ignore_index=True))


def _measure(family: str, points: pd.DataFrame, candidates: Sequence[str], cache_dir,
             workers: int | None, round_no: int) -> pd.DataFrame:  # type: ignore[no-untyped-def]  # fmt: skip
    fam = get_family(family)
    points = points.drop_duplicates(subset=list(fam.columns)).reset_index(drop=True)
    refs = compute_references(family, points, engine="arb", cache_dir=cache_dir,
                              progress=False, workers=workers)  # fmt: skip
    cols = {c: points[c].to_numpy(dtype=np.float64) for c in fam.columns}
    out = []
    for cid in candidates:
        cand = get_candidate(cid)
        ev = evaluate(cand, cols, "float64")
        vname = "nll" if cand.form == "full" else "nll_loss"
        for q, computed, ref_col in [("value", ev.value, vname)] + [
            (g, ev.grads[g], g) for g in fam.gradients if g in ev.grads
        ]:
            ref = refs[ref_col].to_numpy()
            df = pd.DataFrame(cols)
            df["candidate"] = cid
            df["quantity"] = q
            df["computed"] = computed
            df["reference"] = ref
            df["ulp_err"] = ulp_error(computed, ref, "float64")
            df["certified"] = refs["certified"].to_numpy()
            df["round"] = round_no
            out.append(df)
    res = pd.concat(out, ignore_index=True)
    mag = np.array([
        cancelling_magnitude(family, int(r[0]), *r[1:])
        for r in res[list(fam.columns)].itertuples(index=False)
    ])  # fmt: skip
    for g in fam.gradients:
        sel = (res["quantity"] == g).to_numpy()
        mag[sel] = _grad_magnitude(family, g, res.loc[sel])
    with np.errstate(divide="ignore", over="ignore"):
        res["cancellation_bits"] = np.log2(mag / np.abs(res["reference"].to_numpy()))
    return res


def _grad_magnitude(family: str, quantity: str, pts: pd.DataFrame) -> np.ndarray:
    """Sum of |terms| of the textbook gradient (NUMERICS.md) at the points (float64):
    d_lam: k/lam + 1/(1 - e^-lam); d_mu: k/(theta+mu) + k/mu + theta/(theta+mu)/(1 - e^-w);
    d_theta: |psi(theta)| + |psi(k+theta)| + k/(theta+mu) + s/(1 - e^-w)."""
    k = pts["k"].to_numpy(dtype=np.float64)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if family == "ztpoisson":
            lam = pts["lam"].to_numpy(dtype=np.float64)
            return k / lam + 1.0 / -np.expm1(-lam)
        mu = pts["mu"].to_numpy(dtype=np.float64)
        th = pts["theta"].to_numpy(dtype=np.float64)
        lx = np.log1p(mu / th)
        p1 = -np.expm1(-th * lx)
        if quantity == "d_mu":
            return k / (th + mu) + k / mu + th / (th + mu) / p1
        s = np.abs(lx - mu / (th + mu))
        return np.abs(digamma(th)) + np.abs(digamma(k + th)) + k / (th + mu) + s / p1


def search(family: str, candidates: Sequence[str] | None = None, rounds: int = 3,
           restarts: int = 64, keep: int = 16, seed: int = 0, cache_dir=False,
           workers: int | None = None) -> pd.DataFrame:  # type: ignore[no-untyped-def]  # fmt: skip
    """Random restarts plus refinement towards zero crossings (see the module docstring).

    Returns every evaluated point: the family's columns, ``candidate``, ``quantity``
    (``value`` or ``d_<param>``), ``computed``, ``reference``, ``ulp_err`` (float64),
    ``certified``, ``round`` and ``cancellation_bits``.
    """
    fam = get_family(family)
    cands = list(candidates or DEFAULT_CANDIDATES[family])
    for cid in cands:
        if get_candidate(cid).family != family:
            raise ValueError(f"candidate {cid} is not of family {family}")
    rng = np.random.default_rng(seed)
    seen: list[pd.DataFrame] = []
    seeds = pd.DataFrame({c: np.zeros(0) for c in fam.columns})
    for r in range(rounds):
        starts = pd.concat([_random_starts(family, restarts, rng),
                            _perturb(family, seeds, restarts, 2.0 / (r + 1), rng)],
                           ignore_index=True)  # fmt: skip
        points = pd.concat([starts, _crossings(family, starts)], ignore_index=True)
        res = _measure(family, points, cands, cache_dir, workers, r)
        seen.append(res)
        allres = pd.concat(seen, ignore_index=True)
        worst = (allres.sort_values("ulp_err", ascending=False)
                 .groupby(["candidate", "quantity"]).head(keep))  # fmt: skip
        seeds = worst[list(fam.columns)].reset_index(drop=True)
    return pd.concat(seen, ignore_index=True)


def worst_points(results: pd.DataFrame) -> pd.DataFrame:
    """The worst row of each (candidate, quantity) of :func:`search`'s results."""
    idx = results.groupby(["candidate", "quantity"], sort=False)["ulp_err"].idxmax()
    return results.loc[idx].reset_index(drop=True)
