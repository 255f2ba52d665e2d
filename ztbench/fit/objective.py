"""Objectives of the fits: a candidate's loss in a dtype, and the exact (certified) one.

Parameters per gene are log-parameters x = (y, log theta) (ZTP: x = (y,)), mapped by a
*head* to the gene's mean scale m:

- ``exp``: m = e^y (any m > 0);
- ``exp+1``: m = e^y + 1 (m > 1), the published system's own output head.

Point i of gene g has mean mu_i = s_i m_g (s_i its size factor) and theta_g. A gene's
objective is its NLL per count, F_g = sum_i w_i NLL(k_i; mu_i, theta_g) / n_g, with
gradient dF/dy = sum_i w_i s_i e^y dNLL/dmu_i / n_g and dF/dlog theta = theta sum_i w_i
dNLL/dtheta / n_g.

A candidate's objective evaluates the candidate in dtype T at k, mu_i and theta rounded
to T, with its own autograd gradients in T (what a model trained with it sees); the
parameters, the weighted sums over a gene's points and the chain rule stay in float64, so
only the loss formulation and its dtype are under test. The exact objective takes the
certified reference values (:func:`ztbench.reference.compute_references`, arb) of the
loss form at each point and sums them in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ztbench.candidates import Candidate
from ztbench.core.dtypes import get_format
from ztbench.points.counts import FitData

HEADS: tuple[str, ...] = ("exp", "exp+1")


@dataclass(frozen=True)
class Problem:
    """A family, a head and the fit data: maps per-gene x to per-point parameters."""

    data: FitData
    family: str
    head: str = "exp"
    _n_counts: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # read once: every evaluation needs it (frozen dataclass, hence object.__setattr__)
        n_counts = self.data.genes["n_counts"].to_numpy(dtype=np.float64)
        object.__setattr__(self, "_n_counts", n_counts)

    @property
    def n_params(self) -> int:
        return 2 if self.family == "ztnb" else 1

    def points_of(self, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(point indices, owner of each point in ``genes``): :meth:`FitData.points_of`."""
        return self.data.points_of(genes)

    def scale(self, y: np.ndarray) -> np.ndarray:
        """The mean scale m of each gene from y (through the head)."""
        return np.exp(y) + 1.0 if self.head == "exp+1" else np.exp(y)

    def point_params(
        self, x: np.ndarray, genes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(point indices, owner, mu_i, theta_i, dmu_i/dy) of genes ``genes`` at x (n, P)."""
        pts, owner = self.points_of(genes)
        s = self.data.size[pts]
        mu = s * self.scale(x[owner, 0])
        dmu = s * np.exp(x[owner, 0])
        theta = np.exp(x[owner, 1]) if self.n_params == 2 else np.full(len(pts), np.nan)
        return pts, owner, mu, theta, dmu

    def _reduce(self, owner: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
        return np.bincount(owner, weights=values, minlength=n)

    def per_count(self, genes: np.ndarray) -> np.ndarray:
        return self._n_counts[genes]

    def candidate_objective(self, cand: Candidate, dtype: str):  # type: ignore[no-untyped-def]
        """fun(x, genes) -> (F, dF/dx) of ``cand`` in ``dtype`` (see the module docstring).

        A candidate that takes a parameter as its logarithm (``log_params``) gets log(p)
        computed in float64 and rounded to the dtype, and its gradient d/dlog p.
        """
        tdt = get_format(dtype).torch_dtype
        fam_params = ("mu", "theta") if self.n_params == 2 else ("lam",)
        logs = [p in getattr(cand, "log_params", ()) for p in fam_params]

        def leaf(values: np.ndarray, log: bool) -> torch.Tensor:
            arr = np.log(values) if log else values
            return torch.from_numpy(arr).to(tdt).requires_grad_(True)

        def fun(x: np.ndarray, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pts, owner, mu, theta, dmu = self.point_params(x, genes)
            w = self.data.weight[pts]
            k = torch.from_numpy(self.data.k[pts]).to(tdt)
            params = [mu, theta][: self.n_params]
            # d(candidate's own parameter)/dx: dmu/dy, or d log mu/dy = dmu/dy / mu; for
            # theta = e^x1: theta, or 1 for log theta
            chains = [dmu / mu if logs[0] else dmu]
            if self.n_params == 2:
                chains.append(np.ones_like(theta) if logs[1] else theta)
            leaves = [leaf(p, lg) for p, lg in zip(params, logs, strict=True)]
            with np.errstate(all="ignore"):
                val = cand(k, *leaves)
                # backward of each element with seed 1 (a sum in T could overflow; its
                # backward is the same seed whatever the forward sum is)
                grads = torch.autograd.grad(
                    val, leaves, grad_outputs=torch.ones_like(val), allow_unused=True
                )
                v = val.detach().to(torch.float64).numpy()
                n = len(genes)
                cnt = self.per_count(genes)
                f = self._reduce(owner, n, w * v) / cnt
                g = np.empty((n, self.n_params))
                for j, (gr, chain) in enumerate(zip(grads, chains, strict=True)):
                    gj = gr.to(torch.float64).numpy() if gr is not None else 0.0 * v
                    g[:, j] = self._reduce(owner, n, w * gj * chain) / cnt
            return f, g

        return fun

    def reference_points(self, x: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """(points frame for the reference engine, owner, dmu/dy) of every gene at x."""
        genes = np.arange(self.data.n_genes)
        pts, owner, mu, theta, dmu = self.point_params(x, genes)
        cols = {"k": self.data.k[pts], "mu": mu, "theta": theta}
        if self.n_params == 1:
            cols = {"k": cols["k"], "lam": mu}
        return pd.DataFrame(cols), owner, dmu

    def exact(
        self, x: np.ndarray, refs: pd.DataFrame, owner: np.ndarray, dmu: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Per gene from certified references at x: exact objective per count, relative
        stationarity |sum of gradient terms| / sum |terms| per parameter, all certified."""
        n = self.data.n_genes
        genes = np.arange(n)
        pts, _ = self.points_of(genes)
        w = self.data.weight[pts]
        cnt = self.per_count(genes)
        out = {"exact_nll": self._reduce(owner, n, w * refs["nll_loss"].to_numpy()) / cnt}
        grad_cols = ["d_mu", "d_theta"] if self.n_params == 2 else ["d_lam"]
        chain = [dmu, np.exp(x[owner, 1])] if self.n_params == 2 else [dmu]
        for j, (col, c) in enumerate(zip(grad_cols, chain, strict=True)):
            terms = w * refs[col].to_numpy() * c
            total = self._reduce(owner, n, terms)
            size = self._reduce(owner, n, np.abs(terms))
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"rel_grad_{j}"] = np.abs(total) / size
        ok = refs["certified"].to_numpy()
        out["certified"] = self._reduce(owner, n, (~ok).astype(np.float64)) == 0
        return out


def truncated_mean(family: str, mu: np.ndarray, theta: np.ndarray | None) -> np.ndarray:
    """E[k | k > 0] = mu / (1 - P(0)), with -log P(0) = w = lam (ZTP) or theta log1p(mu/theta).

    1 - P(0) is -expm1(-w): no cancellation for small w.
    """
    w = mu if family == "ztpoisson" or theta is None else theta * np.log1p(mu / theta)
    return mu / -np.expm1(-w)
