"""A fixed, deterministic optimiser for many small independent fits at once.

Every gene is its own problem in 1 or 2 log-parameters. :func:`minimize` runs BFGS on
all of them together, vectorised: each gene keeps its own inverse-Hessian estimate, step
length and status, and every evaluation computes the objective and gradient of the genes
still running in one call. A single joint optimiser (torch.optim.LBFGS over all genes)
would couple the genes through a shared line search, and one gene's NaN would end every
fit; torch.optim has no batch of independent problems, hence this small loop.

Per iteration and gene: direction d = -H g (steepest descent when that is not a descent
direction), step t = min(1, MAX_STEP / max|d|), halved until the Armijo condition
f(x + t d) <= f(x) + 1e-4 t g.d holds with a finite value (at most MAX_HALVINGS times),
then the standard BFGS update of H (skipped when y.s <= 0), H0 scaled by y.s / y.y after
the first step. The trial point is clipped into the box [lower, upper]; a gene whose
accepted point lies on a bound is stopped there (a boundary optimum).

Stopping codes (per gene, :data:`CODES`): ``converged`` (max |g| <= gtol), ``flat``
(the accepted step lowered f by at most ftol (1 + |f|): precision-limited convergence),
``stalled`` (no step length gave a decrease: the objective cannot be lowered at its
working precision), ``max-iter``, ``nonfinite-start`` (NaN/inf value or gradient at the
start), ``nonfinite-grad`` (NaN/inf gradient at an accepted point), ``lower:j`` /
``upper:j`` (parameter j on its bound).

All arithmetic is float64 numpy in a fixed order: the same inputs give bit-identical output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_STEP = 2.0  # largest move of a log-parameter in one step (a factor e^2)
MAX_HALVINGS = 60
ARMIJO_C1 = 1e-4
CODES: tuple[str, ...] = (
    "converged",
    "flat",
    "stalled",
    "max-iter",
    "nonfinite-start",
    "nonfinite-grad",
    "lower:0",
    "lower:1",
    "upper:0",
    "upper:1",
)
RUNNING = -1

# fun(x, idx) -> (f, g): objective (n,) and gradient (n, P) of genes idx at x (n, P)
Objective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class OptResult:
    """Per gene: final point ``x`` (G, P), value ``f``, gradient ``g``, stopping ``code``
    (index into :data:`CODES`) and the number of iterations ``iters``."""

    x: np.ndarray
    f: np.ndarray
    g: np.ndarray
    code: np.ndarray
    iters: np.ndarray


def _code(name: str) -> int:
    return CODES.index(name)


def minimize(
    fun: Objective,
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    gtol: float,
    ftol: float = 0.0,
    max_iter: int = 300,
) -> OptResult:
    """Minimise every gene's objective from ``x0`` (G, P) inside the box [lower, upper] (P,)."""
    x = np.array(x0, dtype=np.float64)
    n, p = x.shape
    idx_all = np.arange(n)
    f, g = fun(x, idx_all)
    f = np.array(f, dtype=np.float64)
    g = np.array(g, dtype=np.float64).reshape(n, p)
    code = np.full(n, RUNNING, dtype=np.int64)
    iters = np.zeros(n, dtype=np.int64)
    bad = ~np.isfinite(f) | ~np.isfinite(g).all(axis=1)
    code[bad] = _code("nonfinite-start")
    code[(code == RUNNING) & (np.abs(g).max(axis=1) <= gtol)] = _code("converged")
    eye = np.eye(p)
    h = np.broadcast_to(eye, (n, p, p)).copy()
    first = np.ones(n, dtype=bool)

    for it in range(1, max_iter + 1):
        act = np.flatnonzero(code == RUNNING)
        if not len(act):
            break
        iters[act] = it
        xa, fa, ga, ha = x[act], f[act], g[act], h[act]
        d = -np.einsum("nij,nj->ni", ha, ga)
        slope = np.einsum("ni,ni->n", ga, d)
        reset = ~(slope < 0)
        if reset.any():
            ha[reset] = eye
            d[reset] = -ga[reset]
            slope[reset] = -np.einsum("ni,ni->n", ga[reset], ga[reset])
        t = np.minimum(1.0, MAX_STEP / np.abs(d).max(axis=1))
        x_new, f_new, g_new = xa.copy(), fa.copy(), ga.copy()
        accepted = np.zeros(len(act), dtype=bool)
        pending = np.arange(len(act))
        for _ in range(MAX_HALVINGS):
            trial = np.clip(xa[pending] + t[pending, None] * d[pending], lower, upper)
            ft, gt = fun(trial, act[pending])
            gt = np.asarray(gt, dtype=np.float64).reshape(len(pending), p)
            dec = np.einsum("ni,ni->n", ga[pending], trial - xa[pending])
            ok = np.isfinite(ft) & (ft <= fa[pending] + ARMIJO_C1 * dec)
            hit = pending[ok]
            x_new[hit], f_new[hit], g_new[hit] = trial[ok], ft[ok], gt[ok]
            accepted[hit] = True
            pending = pending[~ok]
            if not len(pending):
                break
            t[pending] *= 0.5
        new_code = np.full(len(act), RUNNING, dtype=np.int64)
        new_code[~accepted] = _code("stalled")
        finite_g = np.isfinite(g_new).all(axis=1)
        new_code[accepted & ~finite_g] = _code("nonfinite-grad")
        live = accepted & finite_g
        # BFGS update of the inverse Hessian
        s = x_new - xa
        y = g_new - ga
        ys = np.einsum("ni,ni->n", y, s)
        upd = live & (ys > 1e-300)
        if upd.any():
            u = np.flatnonzero(upd)
            su, yu, hu = s[u], y[u], ha[u]
            sc = first[act[u]]
            if sc.any():  # H0 = (y.s / y.y) I before the first update
                yy = np.einsum("ni,ni->n", yu[sc], yu[sc])
                hu[sc] = eye * (ys[u][sc] / yy)[:, None, None]
            rho = 1.0 / ys[u]
            a = eye - rho[:, None, None] * np.einsum("ni,nj->nij", su, yu)
            hu = np.einsum("nij,njk,nlk->nil", a, hu, a) + rho[:, None, None] * np.einsum(
                "ni,nj->nij", su, su
            )
            ha[u] = hu
            first[act[u]] = False
        gmax = np.where(finite_g, np.abs(g_new).max(axis=1), np.inf)
        new_code[live & (gmax <= gtol)] = _code("converged")
        drop = fa - f_new
        flat = live & (new_code == RUNNING) & (drop <= ftol * (1.0 + np.abs(f_new)))
        new_code[flat] = _code("flat")
        for j in range(p):  # a point on a bound is a boundary optimum: stop there
            lo = live & (new_code == RUNNING) & (x_new[:, j] <= lower[j])
            hi = live & (new_code == RUNNING) & (x_new[:, j] >= upper[j])
            new_code[lo] = _code(f"lower:{j}")
            new_code[hi] = _code(f"upper:{j}")
        x[act], f[act], g[act], h[act] = x_new, f_new, g_new, ha
        code[act] = new_code
    code[code == RUNNING] = _code("max-iter")
    return OptResult(x=x, f=f, g=g, code=code, iters=iters)
