"""Reading and writing: atomic writes, the user-facing error type, CSV and JSON helpers,
the shipped count matrices, process control, the point budget and the environment record.

Nothing here knows what a suite or a candidate is.
"""
