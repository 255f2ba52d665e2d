"""The ``ztbench`` command: dispatches to the verbs in :mod:`ztbench.commands`.

Bad input ends in one line on stderr and exit code 2, never a traceback: each verb turns
what is wrong with its files and arguments into a :class:`~ztbench.io.errors.UserError`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ztbench import __version__
from ztbench.commands import VERBS
from ztbench.io import budget
from ztbench.io.errors import UserError
from ztbench.io.executors import scheduler_scope
from ztbench.io.procs import Interrupts, signals_as_interrupt


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints usage; keep one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser of every verb; only ``verb``'s module is imported (for its arguments and
    its run function): the others need no more than their help line."""
    parser = _Parser(
        prog="ztbench",
        description="Numerical accuracy of zero-truncated Poisson and negative binomial NLLs.",
    )
    parser.add_argument("--version", action="version", version=f"ztbench {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for name, help_line in VERBS.items():
        p = sub.add_parser(name, help=help_line, description=help_line)
        if name == verb:
            module = importlib.import_module(f"ztbench.commands.{name.replace('-', '_')}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _verb_of(argv: Sequence[str]) -> str | None:
    """The verb on a command line: its first word that is not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


# Import names of the `bench` extra (pyproject.toml): `pip install ztbench` gives the loss
# alone, and the command then says what to install instead of a traceback.
_BENCH_MODULES = frozenset(
    ("pandas", "pyarrow", "mpmath", "flint", "matplotlib", "tqdm", "platformdirs", "scipy",
     "statsmodels", "pytest_benchmark")
)  # fmt: skip


def _missing_extra(exc: ModuleNotFoundError) -> int:
    """The one line for a missing dependency of the `bench` extra (others re-raise)."""
    if (exc.name or "").split(".")[0] not in _BENCH_MODULES:
        raise exc
    print(
        f"ztbench: error: the benchmark needs its extra dependencies ({exc.name} is "
        "missing): pip install 'ztbench[bench]'",
        file=sys.stderr,
    )
    return 2


# torch.compile of the candidates compiles in the calling process (one compile thread):
# inductor's default, a pool of worker processes each importing torch afresh, costs far
# more than the candidates' small graphs take to compile (two minutes and several GB on a
# first `make bench` on two cores). Set before torch is imported; a value the user set
# is kept.
_COMPILE_THREADS = ("TORCHINDUCTOR_COMPILE_THREADS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); the exit code."""
    os.environ.setdefault(*_COMPILE_THREADS)
    try:
        # from the first instruction: Ctrl-C or SIGTERM while torch is still being imported
        # is "interrupted" too, never a traceback
        with signals_as_interrupt() as interrupts:
            return _main(argv, interrupts)
    except KeyboardInterrupt:
        print("ztbench: interrupted", file=sys.stderr)
        return 130


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM are held back (blocked) in the body and delivered after it.

    Importing a verb imports torch, whose C++ start-up calls back into Python: an
    exception raised by a signal handler there ends in std::terminate (an abort), not in
    a KeyboardInterrupt. Held back, the signal arrives once the import is done.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _main(argv: Sequence[str] | None, interrupts: Interrupts) -> int:
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        with _signals_held():
            parser = build_parser(_verb_of(argv))
    except ModuleNotFoundError as exc:
        return _missing_extra(exc)
    args = parser.parse_args(argv)  # a usage error: one line and SystemExit(2)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        with budget.limited(getattr(args, "max_points", None)):
            # A verb that added --scheduler (ztbench.io.executors.add_scheduler_option) runs
            # with that executor active; the others with the local pool.
            # $ZTBENCH_SCHEDULER applies only to the former.
            if hasattr(args, "scheduler"):
                with scheduler_scope(args.scheduler):
                    return int(args._run(args) or 0)
            return int(args._run(args) or 0)
    except UserError as exc:
        print(f"ztbench {args.verb}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # sys.exit() in code ztbench called: never a silent exit 0
        print(f"ztbench {args.verb}: error: code it ran called sys.exit({exc.code!r}) before "
              "the run finished", file=sys.stderr)  # fmt: skip
        return 2
    except ModuleNotFoundError as exc:  # a dependency imported only when it is needed
        return _missing_extra(exc)
    except KeyboardInterrupt:
        if interrupts.signum is None:  # raised by code, not by Ctrl-C or SIGTERM
            print(f"ztbench {args.verb}: error: code it ran raised KeyboardInterrupt (no "
                  "signal was received)", file=sys.stderr)  # fmt: skip
            return 2
        print(f"ztbench {args.verb}: interrupted", file=sys.stderr)
        return 130


def _one_line(text: str) -> str:
    """The promise is one line: fold any newline a message picked up from its input."""
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
