"""Double-double refinement of the float64 losses where their float64 sums cancel.

:mod:`.arith` holds the arithmetic (error-free transforms, double-double operations,
log, exp); :mod:`.ztp` and :mod:`.ztnb` build each family's refined quantities and the
flags that say where refinement is needed.
"""
