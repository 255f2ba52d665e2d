"""Reference fits and candidate fits of every gene, cached on disk.

:func:`reference_fit` runs maximum likelihood in float64 (the function minimised is the
``<family>/stable`` candidate in float64: accurate to a few ulp of its terms, and without
the shipped loss's double-double refinement, which costs 10x and is not needed here; a
gene that stopped short of the gradient tolerance is restarted once from where it
stopped) and then certifies the optimum with the reference engine: a gene is ``ok`` when
its certified gradient, summed over its counts, is at most :data:`STATIONARY_RTOL` times
the sum of the absolute values of the terms, for each parameter. A gene whose optimiser stopped on a
bound of the box (:data:`BOX`) is ``boundary`` (mu -> 0, theta -> 0 or theta -> inf);
one that did not converge or is not certified stationary is ``failed``, with the reason.
Nothing is dropped.

:func:`candidate_fit` fits the same genes with a candidate's loss in a dtype, from the same
start, with the same optimiser (:func:`ztbench.fit.optimize.minimize`), and evaluates the
exact objective (certified references) at its optimum.

Fits are cached like references: content-addressed by the data, family, head, objective,
the code that computes it (:func:`ztbench.candidates.external.code_digest`), dtype,
optimiser settings and torch version, stored through
:class:`ztbench.reference.cache.ReferenceCache` (checksummed, atomic writes) under
``<cache dir>/fits``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ztbench.candidates import Candidate, Unsupported, get_candidate
from ztbench.candidates.external import code_digest
from ztbench.core.dtypes import get_format
from ztbench.fit.objective import Problem, truncated_mean
from ztbench.fit.optimize import CODES, minimize
from ztbench.points.counts import FitData
from ztbench.reference import compute_references
from ztbench.reference.cache import ReferenceCache, default_cache_dir

OPTIMIZER_VERSION = "bfgs-armijo-1"
STATIONARY_RTOL = 1e-6
REFERENCE_GTOL = 1e-11
CANDIDATE_GTOL = 1e-9
MAX_ITER = 400
# Box of the log-parameters: (lower, upper) of m (the mean scale) and theta.
BOX = {"m": (1e-8, 1e6), "theta": (1e-6, 1e8)}
REFERENCE_OBJECTIVE = "{family}/stable"
THETA0 = 1.0
# rows of a cached fit: x0, x1, f, code, iters, exact_nll, rel_grad_0, rel_grad_1
_ROWS = 8


def _box(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    lo = [np.log(BOX["m"][0]), np.log(BOX["theta"][0])][: problem.n_params]
    hi = [np.log(BOX["m"][1]), np.log(BOX["theta"][1])][: problem.n_params]
    return np.array(lo), np.array(hi)


def start(problem: Problem, theta0: float = THETA0) -> np.ndarray:
    """The start of every fit: m0 = sample mean / mean size factor (under the ``exp+1``
    head at least 1.5), theta0 (default 1); as log-parameters through the head."""
    g = problem.data.genes
    m0 = g["sample_mean"].to_numpy() / g["mean_size"].to_numpy()
    y0 = np.log(np.maximum(m0, 1.5) - 1.0) if problem.head == "exp+1" else np.log(m0)
    cols = [y0, np.full(len(y0), np.log(theta0))][: problem.n_params]
    return np.column_stack(cols)


def _cache(cache_dir: Path | str | bool | None) -> ReferenceCache | None:
    if cache_dir is False:
        return None
    root = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)
    return ReferenceCache(root / "fits")


def _key(
    problem: Problem,
    cand: Candidate,
    objective: str,
    dtype: str,
    gtol: float,
    ftol: float,
    theta0: float,
) -> str:
    h = hashlib.sha256()
    parts = [
        code_digest(cand),
        OPTIMIZER_VERSION,
        repr(theta0),
        problem.family,
        problem.head,
        problem.data.model,
        objective,
        dtype,
        repr(gtol),
        repr(ftol),
        str(MAX_ITER),
        repr(sorted(BOX.items())),
        repr(STATIONARY_RTOL),
        torch.__version__,
    ]
    h.update("|".join(parts).encode())
    h.update(hashlib.sha256(problem.data.key).digest())
    return h.hexdigest()


def _fit(
    problem: Problem,
    cand: Candidate,
    dtype: str,
    gtol: float,
    ftol: float,
    cache: ReferenceCache | None,
    objective: str,
    theta0: float = THETA0,
    restart: bool = False,
) -> np.ndarray:
    """The cached matrix (_ROWS, G) of one fit, computed when missing."""
    n = problem.data.n_genes
    key = _key(problem, cand, objective, dtype, gtol, ftol, theta0)
    hit = cache.load(key, _ROWS, n) if cache is not None else None
    if hit is not None:
        return hit[0]
    lo, hi = _box(problem)
    x0 = start(problem, theta0)
    # a candidate's Unsupported propagates to the caller: nothing is cached
    fun = problem.candidate_objective(cand, dtype)
    res = minimize(fun, x0, lo, hi, gtol, ftol, MAX_ITER)
    x, f, code, iters = res.x, res.f, res.code.astype(np.float64), res.iters
    if restart:
        # once more from where it stopped, with a fresh Hessian estimate: BFGS can stop
        # in a long curved valley short of the optimum (a stale estimate, not precision)
        again = np.isin(res.code, [CODES.index(c) for c in ("flat", "stalled")])
        if again.any():
            sub = np.flatnonzero(again)
            res2 = minimize(lambda xs, idx: fun(xs, sub[idx]), x[sub], lo, hi, gtol, ftol, MAX_ITER)
            x[sub], f[sub], code[sub] = res2.x, res2.f, res2.code
            iters[sub] += res2.iters
    refs_df, owner, dmu = problem.reference_points(x)
    refs = compute_references(problem.family, refs_df, cache_dir=False, progress=False)
    ex = problem.exact(x, refs, owner, dmu)
    x1 = x[:, 1] if problem.n_params == 2 else np.full(n, np.nan)
    rg1 = ex["rel_grad_1"] if problem.n_params == 2 else np.zeros(n)
    exact_nll = np.where(ex["certified"], ex["exact_nll"], np.nan)
    mat = np.vstack([x[:, 0], x1, f, code, iters, exact_nll, ex["rel_grad_0"], rg1])
    if cache is not None:
        cache.store(key, mat, np.ones(n, dtype=bool))
    return mat


def _status(
    problem: Problem,
    code: np.ndarray,
    iters: np.ndarray,
    reference: bool,
    rel: np.ndarray,
    certified: np.ndarray,
) -> tuple[list[str], list[str]]:
    names = {
        "lower:0": "mu -> 1 (the head's bound)" if problem.head == "exp+1" else "mu -> 0",
        "upper:0": "mu -> inf",
        "lower:1": "theta -> 0",
        "upper:1": "theta -> inf",
    }
    status, reason = [], []
    for c, it, r, ok in zip(code.astype(int), iters.astype(int), rel, certified, strict=True):
        name = CODES[c]
        if name in names:
            status.append("boundary")
            reason.append(names[name])
        elif name == "nonfinite-start":
            status.append("failed")
            reason.append("step 0: NaN or inf loss or gradient at the start")
        elif name == "nonfinite-grad":
            status.append("failed")
            reason.append(f"step {it}: NaN or inf gradient")
        elif name == "max-iter":
            status.append("failed")
            reason.append(f"step {it}: no convergence in {MAX_ITER} iterations")
        elif not ok:
            status.append("failed")
            reason.append("the exact objective is not certified at the optimum")
        elif reference and not r <= STATIONARY_RTOL:
            status.append("failed")
            reason.append(f"step {it}: not stationary (relative gradient {r:.1e})")
        else:
            status.append("ok")
            reason.append(name)
    return status, reason


def _frame(problem: Problem, mat: np.ndarray, reference: bool) -> pd.DataFrame:
    g = problem.data.genes
    x = mat[:2].T[:, : problem.n_params]
    m = problem.scale(x[:, 0])
    theta = np.exp(x[:, 1]) if problem.n_params == 2 else np.full(len(m), np.nan)
    with np.errstate(invalid="ignore"):
        rel = np.fmax(mat[6], mat[7])  # NaN only where both are (an unsupported fit)
    certified = np.isfinite(mat[5])
    status, reason = _status(problem, mat[3], mat[4], reference, rel, certified)
    # the truncated mean the fit implies, averaged over the gene's cells
    pts, owner = problem.points_of(np.arange(problem.data.n_genes))
    mu_i = problem.data.size[pts] * m[owner]
    th_i = theta[owner] if problem.n_params == 2 else None
    tm = truncated_mean(problem.family, mu_i, th_i)
    w = problem.data.weight[pts]
    tmean = np.bincount(owner, weights=w * tm, minlength=len(m)) / g["n_counts"].to_numpy()
    return pd.DataFrame(
        {
            "gene": g["gene"].to_numpy(),
            "gene_id": g["gene_id"].to_numpy(),
            "n_counts": g["n_counts"].to_numpy(),
            "sample_mean": g["sample_mean"].to_numpy(),
            "frac_ones": g["frac_ones"].to_numpy(),
            "mu": m,
            "theta": theta,
            "objective": mat[2],
            "exact_nll_per_count": mat[5],
            "rel_grad": rel,
            "truncated_mean": tmean,
            "iterations": mat[4].astype(np.int64),
            "status": status,
            "reason": reason,
        }
    )


def reference_fit(
    data: FitData, family: str, head: str = "exp", cache_dir: Path | str | bool | None = None
) -> pd.DataFrame:
    """The certified float64 maximum-likelihood fit of every gene (see the module docstring).

    One row per gene: gene, gene_id, n_counts, sample_mean, frac_ones, mu (the mean scale
    m_g), theta (NaN for ztpoisson), objective (the float64 objective minimised, per count),
    exact_nll_per_count (certified), rel_grad (the largest relative stationarity measure),
    truncated_mean (E[k | k > 0] the fit implies, averaged over the gene's cells),
    iterations, status (ok, boundary, failed) and reason.
    """
    problem = Problem(data, family, head)
    objective = REFERENCE_OBJECTIVE.format(family=family)
    cand = get_candidate(objective)
    mat = _fit(
        problem, cand, "float64", REFERENCE_GTOL, 0.0, _cache(cache_dir), objective, restart=True
    )
    return _frame(problem, mat, reference=True)


def candidate_fit(
    data: FitData,
    family: str,
    cand: Candidate,
    dtype: str,
    head: str = "exp",
    cache_dir: Path | str | bool | None = None,
    theta0: float = THETA0,
) -> pd.DataFrame:
    """Fit every gene with ``cand``'s loss in ``dtype`` (columns as :func:`reference_fit`).

    Stops at max |gradient| <= :data:`CANDIDATE_GTOL` per count, or when no step length
    lowers the objective any more (the optimum at the dtype's resolution), whichever
    comes first; the same rule for every dtype. Status ok, boundary or failed (with the step and
    the reason). ``theta0``: the start of theta (the reference fit starts at the default).
    """
    problem = Problem(data, family, head)
    get_format(dtype)  # ValueError for an unknown dtype
    try:
        mat = _fit(problem, cand, dtype, CANDIDATE_GTOL, 0.0, _cache(cache_dir), cand.id, theta0)
    except Unsupported as exc:  # every gene failed at step 0, with the candidate's reason
        return _unsupported(problem, start(problem, theta0), exc.reason)
    return _frame(problem, mat, reference=False)


def _unsupported(problem: Problem, x0: np.ndarray, why: str) -> pd.DataFrame:
    n = problem.data.n_genes
    nan = np.full(n, np.nan)
    x1 = x0[:, 1] if problem.n_params == 2 else nan
    code = np.full(n, float(CODES.index("nonfinite-start")))
    mat = np.vstack([x0[:, 0], x1, nan, code, np.zeros(n), nan, nan, nan])
    df = _frame(problem, mat, reference=False)
    df["reason"] = f"step 0: unsupported ({why})"
    return df
