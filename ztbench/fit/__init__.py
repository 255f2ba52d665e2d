"""Fits of real and synthetic counts: reference fits, each candidate's fits, their impact.

``datasets -> fit data -> reference fit (float64, certified stationary) -> candidate fits
(each loss and dtype) -> impact tables``. Modules: :mod:`.data` (weighted points per gene),
:mod:`.optimize` (the fixed optimiser), :mod:`.objective` (candidate and exact objectives),
:mod:`.run` (fits, cached), :mod:`.impact` (per-gene rows and summaries), :mod:`.synthetic`
(exact ZTNB samples on a grid of truths), :mod:`.points` (realistic points for suites).
Import from the submodules (``from ztbench.fit.run import reference_fit``): this package
imports nothing, so the suite schema can read :data:`ztbench.fit.data.MODELS` cheaply.
"""
