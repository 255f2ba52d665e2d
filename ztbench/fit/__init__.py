"""Fits of real and synthetic counts: reference fits, each candidate's fits, their impact.

``datasets -> fit data -> reference fit (float64, certified stationary) -> candidate fits
(each loss and dtype) -> impact tables``. Modules: :mod:`.data` (weighted points per gene),
:mod:`.optimize` (the fixed optimiser), :mod:`.objective` (candidate and exact objectives),
:mod:`.run` (fits, cached), :mod:`.impact` (per-gene rows and summaries), :mod:`.synthetic`
(exact ZTNB samples on a grid of truths).
"""

from __future__ import annotations

from ztbench.fit.data import MODELS, FitData, from_dataset
from ztbench.fit.run import candidate_fit, reference_fit

__all__ = ["MODELS", "FitData", "candidate_fit", "from_dataset", "reference_fit"]
