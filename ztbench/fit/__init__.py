"""Fits of real and synthetic counts: reference fits, each candidate's fits, their impact.

``datasets -> fit data (ztbench.points.counts) -> reference fit (float64, certified
stationary) -> candidate fits (each loss and dtype) -> impact tables``. Modules:
:mod:`.optimize` (the fixed optimiser), :mod:`.objective` (candidate and exact objectives),
:mod:`.run` (fits, cached), :mod:`.impact` (per-gene rows and summaries), :mod:`.synthetic`
(exact ZTNB samples on a grid of truths), :mod:`.record` (the recorded reference fits that
suites take real-data points from). Import from the submodules
(``from ztbench.fit.run import reference_fit``).
"""
