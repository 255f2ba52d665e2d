"""``ztbench dataset-fits``: record the reference fits behind a suite's real-data points.

A suite's ``dataset`` points are taken from recorded fits (package data), never from a fit
made on the spot, so that they are the same on every machine: this command is the only way
those records change. It fits every gene of each dataset the suite names, afresh, and
writes one file per dataset, family and model (see :mod:`ztbench.points.recorded_fits`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ztbench.commands.check import load_suite_checked
from ztbench.fit.record import record_fit
from ztbench.points.recorded_fits import FITS_DIR


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE.toml", help="the suite whose datasets are fitted")
    p.add_argument(
        "-o",
        "--out",
        metavar="DIR",
        default=None,
        help="where to write the records (default: the package's data/fits, read by suites)",
    )


def run(args: argparse.Namespace) -> int:

    suite = load_suite_checked(args.suite)
    sources = sorted(
        {(fp.dataset.name, fp.dataset.family, fp.dataset.model)
         for fp in suite.families.values() if fp.dataset is not None}
    )  # fmt: skip
    if not sources:
        print(f"ztbench dataset-fits: suite {suite.name} takes no points from a dataset")
        return 0
    root = Path(args.out) if args.out else FITS_DIR
    for i, (name, family, model) in enumerate(sources, 1):
        print(f"[{i}/{len(sources)}] fitting {name} ({family}, {model}) ...", flush=True)
        path = record_fit(name, family, model, root=root)
        print(f"      wrote {path}", flush=True)
    return 0
