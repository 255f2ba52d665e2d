"""Synthetic truth: exact zero-truncated NB samples on a grid of (mu, theta).

Each grid cell (mu, theta) is one synthetic "gene" of ``n`` nonzero counts drawn from the
ZTNB law exactly, by rejection: draw NB(mean mu, size theta) (numpy's gamma-Poisson
sampler, p = theta / (theta + mu)) and keep the nonzero draws, until n are kept. A draw
conditioned on being nonzero has exactly the truncated law, so the sample is exact, not
an approximation; the cost is 1 / (1 - P(0)) draws per count (at most ~25 on the default
grid). Each cell has its own PCG64 stream seeded with SeedSequence([seed, i, j]), so a
cell's sample does not depend on the grid around it.
"""

from __future__ import annotations

import numpy as np

from ztbench.points.counts import FitData, from_columns

MU_RANGE = (0.05, 100.0)
THETA_RANGE = (0.1, 1000.0)


def sample_ztnb(rng: np.random.Generator, mu: float, theta: float, n: int) -> np.ndarray:
    """``n`` exact draws from the zero-truncated NB with mean mu and size theta."""
    p = theta / (theta + mu)
    p0 = p**theta
    out: list[np.ndarray] = []
    have = 0
    while have < n:
        batch = int((n - have) / max(1.0 - p0, 1e-3) * 1.1) + 16
        draw = rng.negative_binomial(theta, p, size=batch)
        draw = draw[draw > 0]
        out.append(draw)
        have += len(draw)
    return np.concatenate(out)[:n].astype(np.float64)


def grid(n_mu: int, n_theta: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-spaced truths: mu over [0.05, 100], theta over [0.1, 1000]."""
    return np.geomspace(*MU_RANGE, n_mu), np.geomspace(*THETA_RANGE, n_theta)


def synthetic_data(
    seed: int, n: int, mus: np.ndarray, thetas: np.ndarray
) -> tuple[FitData, np.ndarray]:
    """Fit data with one gene per (mu, theta) of the grid ``mus`` x ``thetas`` (per-gene
    model, ``n`` counts each) and the truths (G, 2), mu-major."""
    gene_idx, ks, truth, names = [], [], [], []
    for i, mu in enumerate(mus):
        for j, th in enumerate(thetas):
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, i, j])))
            gene_idx.append(np.full(n, len(truth), dtype=np.int64))
            ks.append(sample_ztnb(rng, float(mu), float(th), n))
            truth.append((mu, th))
            names.append(f"mu={mu:.4g},theta={th:.4g}")
    k = np.concatenate(ks)
    labels = np.array(names)
    data = from_columns(
        "synthetic", "per-gene", np.concatenate(gene_idx), k, np.ones(len(k)), labels, labels
    )
    return data, np.array(truth)
