"""Facts, torch-free and without I/O: the schema (column lists and the orders of families,
dtypes, devices and modes), the families, the float formats and their ulps, the error
measures, the published threshold rules, the gate's tolerance and number formatting.

Every other layer of ztbench builds on these; they import nothing of ztbench but each other.
"""
