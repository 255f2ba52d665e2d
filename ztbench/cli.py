"""The ``ztbench`` command: dispatches to the verbs in :mod:`ztbench.commands`.

Bad input ends in one line on stderr and exit code 2, never a traceback: each verb turns
what is wrong with its files and arguments into a :class:`~ztbench.errors.UserError`.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from ztbench import __version__, budget, commands
from ztbench.errors import UserError
from ztbench.executor import scheduler_scope
from ztbench.procs import sigterm_as_interrupt


def _verbs() -> dict[str, str]:
    """Map verb name -> module name, for every module in ztbench.commands."""
    return {
        m.name.replace("_", "-"): m.name
        for m in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name)
        if not m.name.startswith("_")
    }


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints usage; keep one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ztbench",
        description="Numerical accuracy of zero-truncated Poisson and negative binomial NLLs.",
    )
    parser.add_argument("--version", action="version", version=f"ztbench {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for verb, module_name in _verbs().items():
        module = importlib.import_module(f"ztbench.commands.{module_name}")
        p = sub.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


# Import names of the `bench` extra (pyproject.toml): `pip install ztbench` gives the loss
# alone, and the command then says what to install instead of a traceback.
_BENCH_MODULES = frozenset(
    ("pandas", "pyarrow", "mpmath", "flint", "matplotlib", "tqdm", "platformdirs", "scipy",
     "statsmodels")
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _BENCH_MODULES:
            raise
        print(
            f"ztbench: error: the benchmark needs its extra dependencies ({exc.name} is "
            "missing): pip install 'ztbench[bench]'",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)  # a usage error: one line and SystemExit(2)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        with sigterm_as_interrupt(), budget.limited(getattr(args, "max_points", None)):
            # A verb that added --scheduler (ztbench.executor.add_scheduler_option) runs
            # with that executor active; the others with the local pool.
            # $ZTBENCH_SCHEDULER applies only to the former.
            if hasattr(args, "scheduler"):
                with scheduler_scope(args.scheduler):
                    return int(args._run(args) or 0)
            return int(args._run(args) or 0)
    except UserError as exc:
        print(f"ztbench {args.verb}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ztbench {args.verb}: interrupted", file=sys.stderr)
        return 130


def _one_line(text: str) -> str:
    """The promise is one line: fold any newline a message picked up from its input."""
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
