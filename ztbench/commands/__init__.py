"""One module per CLI verb.

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. The CLI discovers the modules present here, so adding a verb
means adding a module; the verb is the module name with ``_`` replaced by ``-``.
"""
