"""What a fit sees: each gene's nonzero counts, compressed to weighted points.

A fit of gene g minimises sum_i w_i * NLL(k_i; s_i * m_g, theta_g) over its points i,
where ``s_i`` is the size factor (1 in the per-gene model). Counts that share (k, s) are
one point with weight w = the number of cells, so the per-gene model fits from each
gene's histogram of counts (a few dozen points per gene instead of thousands of cells)
and the objective is the same sum, exactly.

Models:

- ``per-gene``: mu_cg = m_g (and theta_g), the same for every cell;
- ``size-factor``: mu_cg = s_c m_g with s_c = the cell's total count / the median total
  over cells with a nonzero total.

Genes are kept when they have at least ``min_nonzero`` nonzero cells (default 20).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ztbench.core.families import FAMILIES
from ztbench.core.schema import FIT_MODELS
from ztbench.io.datasets import Dataset
from ztbench.io.errors import UserError

MODELS = FIT_MODELS
MIN_NONZERO = 20


@dataclass(frozen=True)
class FitData:
    """Weighted points of every gene, gene-major.

    Attributes:
        name: the data set's name (dataset name, or "synthetic").
        model: ``per-gene`` or ``size-factor``.
        genes: one row per gene: ``gene`` (symbol), ``gene_id``, ``n_counts`` (nonzero
            cells), ``sample_mean`` (mean nonzero count), ``frac_ones`` (fraction of the
            nonzero counts that are 1), ``mean_size`` (mean size factor of its nonzero cells).
        gene_of: gene index (row of ``genes``) of each point.
        k, size, weight: the count, size factor and number of cells of each point (float64).
        key: bytes that identify the data (for the fit cache).
    """

    name: str
    model: str
    genes: pd.DataFrame
    gene_of: np.ndarray
    k: np.ndarray
    size: np.ndarray
    weight: np.ndarray
    key: bytes

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    @cached_property
    def _starts(self) -> np.ndarray:
        return np.searchsorted(self.gene_of, np.arange(self.n_genes + 1))

    def points_of(self, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(point indices, position in ``genes`` of each point's gene), gene-major."""
        starts = self._starts
        lengths = starts[genes + 1] - starts[genes]
        owner = np.repeat(np.arange(len(genes)), lengths)
        first = np.repeat(starts[genes], lengths)
        offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return first + offset, owner


def size_factors(counts: sp.csr_matrix) -> np.ndarray:
    """Each cell's total count divided by the median total of the cells with any count."""
    totals = np.asarray(counts.sum(axis=1)).ravel().astype(np.float64)
    positive = totals[totals > 0]
    if not len(positive):
        raise UserError("the count matrix has no nonzero count")
    return totals / float(np.median(positive))


def from_columns(
    name: str,
    model: str,
    gene_idx: np.ndarray,
    k: np.ndarray,
    size: np.ndarray,
    symbols: np.ndarray,
    ids: np.ndarray,
) -> FitData:
    """Compress (gene, k, size) triples, one per nonzero cell, into weighted points."""
    table = np.column_stack([gene_idx.astype(np.float64), k.astype(np.float64), size])
    uniq, weight = np.unique(table, axis=0, return_counts=True)  # sorted: gene-major
    g = uniq[:, 0].astype(np.int64)
    n_counts = np.bincount(gene_idx, minlength=len(symbols)).astype(np.int64)
    ones = np.bincount(gene_idx, weights=(k == 1).astype(np.float64), minlength=len(symbols))
    ksum = np.bincount(gene_idx, weights=k.astype(np.float64), minlength=len(symbols))
    ssum = np.bincount(gene_idx, weights=size, minlength=len(symbols))
    genes = pd.DataFrame(
        {
            "gene": symbols,
            "gene_id": ids,
            "n_counts": n_counts,
            "sample_mean": ksum / n_counts,
            "frac_ones": ones / n_counts,
            "mean_size": ssum / n_counts,
        }
    )
    key = b"|".join([name.encode(), model.encode(), uniq.tobytes(), weight.tobytes()])
    return FitData(
        name, model, genes, g, uniq[:, 1].copy(), uniq[:, 2].copy(), weight.astype(np.float64), key
    )


def from_dataset(ds: Dataset, model: str, min_nonzero: int = MIN_NONZERO) -> FitData:
    """The fit data of a count matrix under ``model`` (genes with >= ``min_nonzero`` cells)."""
    if model not in MODELS:
        raise UserError(f"unknown model {model!r} (known: {', '.join(MODELS)})")
    csc = ds.counts.tocsc()
    csc.eliminate_zeros()
    keep = np.flatnonzero(np.diff(csc.indptr) >= min_nonzero)
    if not len(keep):
        raise UserError(f"{ds.name}: no gene has {min_nonzero} or more nonzero cells")
    sub = csc[:, keep].tocoo()
    s = size_factors(ds.counts) if model == "size-factor" else np.ones(ds.counts.shape[0])
    return from_columns(
        ds.name,
        model,
        sub.col.astype(np.int64),
        sub.data.astype(np.float64),
        s[sub.row],
        ds.gene_symbols[keep],
        ds.gene_ids[keep],
    )


def check_choices(family: str, model: str, min_nonzero: int = MIN_NONZERO) -> None:
    """UserError for an unknown family or model or a bad --min-nonzero."""
    if family not in FAMILIES:
        raise UserError(f"--family: unknown family {family!r} (known: {', '.join(FAMILIES)})")
    if model not in FIT_MODELS:
        raise UserError(f"--model: unknown model {model!r} (known: {', '.join(FIT_MODELS)})")
    if min_nonzero < 1:
        raise UserError(f"--min-nonzero must be >= 1, got {min_nonzero}")
