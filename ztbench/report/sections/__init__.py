"""The report's sections that need no module of their own beyond one function: one module
per section, each with ``TITLE`` (its heading) and ``render(model) -> str`` (its Markdown,
from a :class:`~ztbench.report.model.ReportModel`).

:mod:`ztbench.report.build` lists every section of the report in order, these and the larger
ones beside this package (findings, goals, published, diagnosis, training, impact).
"""
