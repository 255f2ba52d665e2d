"""The command-line options that declare the user's own function (``module:function`` or
``path/to/file.py:function``) to ``eval`` and ``accuracy``, as a suite's
``[[candidates.external]]`` would (:mod:`ztbench.candidates.external`). Torch-free, so
that ``--help`` loads no torch."""

from __future__ import annotations

import argparse

from ztbench.core.families import FAMILIES
from ztbench.core.schema import EXTERNAL_KINDS, FORMS, SIGNS


def add_target_arguments(p: argparse.ArgumentParser, family_default: str = "") -> None:
    """--family, --form, --sign, --kind, --parameters."""
    p.add_argument(
        "--family",
        default=None,
        choices=tuple(FAMILIES),
        help=f"family of a module:function target{family_default}",
    )
    p.add_argument(
        "--form",
        default="loss",
        choices=FORMS,
        help="what a module:function target computes: loss (without lgamma(k+1), default) or full",
    )
    p.add_argument(
        "--sign",
        default="nll",
        choices=SIGNS,
        help="nll (default) or log_prob (negated by ztbench)",
    )
    p.add_argument(
        "--kind",
        default="torch",
        choices=EXTERNAL_KINDS,
        help="torch (tensor function, autograd; default) or numpy (float64, no gradient)",
    )
    p.add_argument("--parameters", default=None, metavar="SPEC",
                   help="the target's parameterisation, per parameter natural or log, e.g. "
                   "'mu=natural,theta=log' (default: natural), or torch-nb for "
                   "(total_count = theta, logits = log(mu/theta))")  # fmt: skip
