"""A user's own formulation as a candidate: declared in a suite file, loaded from their code.

Suite schema (an array of tables inside ``[candidates]``; unknown keys are an error)::

    [[candidates.external]]
    id = "mylab/ztnb"                 # "namespace/name"; not a built-in id, not repeated
    target = "mypkg.losses:ztnb_nll"  # "module:function" (importable), or
                                      #   "path/to/file.py:function" relative to the suite file
    family = "ztnb"                   # ztpoisson or ztnb
    form = "loss"                     # "loss" (without lgamma(k + 1)) or "full"
    sign = "nll"                      # optional: "nll" (default) or "log_prob" (negated)
    parameters = { theta = "log" }    # optional: per parameter "natural" (default) or "log";
                                      #   or "torch-nb": fn(k, total_count, logits) with
                                      #   total_count = theta, logits = log(mu / theta), as
                                      #   torch.distributions.NegativeBinomial takes them
    kind = "torch"                    # optional: "torch" (default: tensor function, autograd)
                                      #   or "numpy" (float64 arrays, no gradient, CPU)
    dtypes = ["float64", "float32"]   # optional: default every suite dtype (numpy: float64)
    threshold = "t"                   # optional: a keyword argument with a numeric default,
                                      #   swept by [thresholds] like a built-in threshold family
    description = "..."               # optional, shown by `ztbench candidates`

The function is called as ``fn(k, *params)`` with ``k`` a float tensor of the measured
dtype (numpy: a float64 array) and the family's parameters in order (``lam``; ``mu``,
``theta``), each natural or its logarithm as declared (``fn(k, mu, log_theta)`` above),
and must return the elementwise value, same shape and dtype. It is measured like a
built-in candidate: its own inputs are rounded to the dtype (log_theta = round_T(log
theta)), the reference is taken at the exact values they stand for, and its gradients
are those with respect to its own parameters (``d_log_theta``). Every declared external
candidate is measured; ``include``/``exclude``/``kinds`` select built-in ones.

Loading a target imports the user's module, that is, runs the user's code in this process:
that is the user's act, and nothing here sandboxes it. The target is then called once per
declared dtype at a benign point (:data:`PROBE_POINTS`), so that a target which cannot be
measured fails when the suite loads, in one line, instead of after the references are
computed: a module that is not found, an attribute that is missing or not callable, a probe
call that raises, an output of the wrong type, shape or dtype, a non-finite output, or
(kind torch) an output that autograd cannot differentiate.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ztbench.candidates.base import Candidate
from ztbench.candidates.execution import first_line, is_missing_kernel
from ztbench.core.dtypes import get_format, round_to
from ztbench.core.families import FAMILIES, TORCH_NB, get_family, to_own
from ztbench.core.schema import DTYPE_NAMES, FORMS, SIGNS
from ztbench.core.schema import EXTERNAL_KINDS as KINDS
from ztbench.io.errors import UserError

KEYS: tuple[str, ...] = (
    "id", "target", "family", "form", "sign", "parameters", "kind", "dtypes", "threshold",
    "description",
)  # fmt: skip
REQUIRED: tuple[str, ...] = ("id", "target", "family", "form")
PARAMETERISATIONS: tuple[str, ...] = ("natural", "log")
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.+-]+$")
# Benign points: moderate counts and parameters at which any sound formulation is finite
# in every dtype (bfloat16 included).
PROBE_POINTS: dict[str, dict[str, tuple[float, ...]]] = {
    "ztpoisson": {"k": (1.0, 2.0, 5.0), "lam": (0.5, 2.0, 7.0)},
    "ztnb": {"k": (1.0, 2.0, 5.0), "mu": (0.5, 2.0, 7.0), "theta": (1.5, 4.0, 0.8)},
}


class TargetError(ValueError):
    """A declaration or target that cannot be measured. ``args`` is ``(problem,)``, one
    line without the location (the caller prefixes the CLI argument), or, from the suite
    parser, ``(key path, problem)`` for the suite loader's one-line message."""


@dataclass(frozen=True)
class ExternalSpec:
    """One declared external candidate (see the module docstring for each field)."""

    id: str
    target: str
    family: str
    form: str
    sign: str = "nll"
    kind: str = "torch"
    dtypes: tuple[str, ...] = DTYPE_NAMES
    threshold: str | None = None
    parameters: Mapping[str, str] | str | None = None
    description: str = ""
    origin: str = "the command line"

    def parameterisation(self) -> dict[str, str]:
        """Per parameter of the family, ``natural`` or ``log`` (default natural)."""
        given = {} if isinstance(self.parameters, str) else dict(self.parameters or {})
        return {p: given.get(p, "natural") for p in get_family(self.family).params}

    @property
    def log_params(self) -> tuple[str, ...]:
        """The runner's ``log_params``: the parameters the function takes as logarithms,
        or ``(TORCH_NB,)`` for ``parameters = "torch-nb"``."""
        if self.parameters == TORCH_NB:
            return (TORCH_NB,)
        return tuple(p for p, how in self.parameterisation().items() if how == "log")


# ------------------------------------------------------------------------- the target


def load_target(target: str, base_dir: Path | str = ".") -> Callable[..., Any]:
    """The callable named by ``target``; :class:`TargetError` saying why not.

    ``module:function`` is imported with importlib (the current directory is appended to
    ``sys.path``, as ``python -m`` would make it importable); ``path/to/file.py:function``
    is executed from ``base_dir / path`` as a module of its own (its directory appended to
    ``sys.path`` so that it can import its neighbours). ``function`` may be dotted
    (``Class.method``, ``obj.attr``).
    """
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise TargetError(
            f"target {target!r} must be 'module:function' or 'path/to/file.py:function'"
        )
    if where.endswith(".py") or "/" in where or os.sep in where:
        module = _import_file(Path(base_dir) / where, where)
    else:
        module = _import_module(where)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"{where} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TargetError(f"{target} is not callable (it is {type(obj).__name__})")
    return obj


def _first_line(exc: BaseException) -> str:
    return first_line(exc)


def _append_path(directory: str) -> None:
    if directory not in sys.path:
        sys.path.append(directory)


def _import_module(name: str) -> ModuleType:
    _append_path(os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise TargetError(
                f"module {name!r} not found (neither installed nor under the current directory)"
            ) from None
        raise TargetError(f"importing {name} failed: {_first_line(exc)}") from None
    except (Exception, SystemExit) as exc:  # sys.exit() in the user's module is a failure too
        raise TargetError(f"importing {name} raised {_first_line(exc)}") from None


def _import_file(path: Path, shown: str) -> ModuleType:
    if not path.is_file():
        raise TargetError(f"file {shown} not found (looked for {path})")
    resolved = path.resolve()
    # One module per file path, executed afresh at each load: two files with the same
    # name never share a module, and an edited file is never served from a stale one.
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    name = f"ztbench_user_{re.sub(r'[^0-9A-Za-z_]', '_', resolved.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise TargetError(f"file {shown} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    _append_path(str(resolved.parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise TargetError(f"importing {shown} raised {_first_line(exc)}") from None
    return module


def source_sha256(fn: Callable[..., Any]) -> str | None:
    """SHA-256 of the file defining ``fn`` (or the user function a candidate wraps),
    recorded with results; None if unknown."""
    try:
        file = inspect.getsourcefile(getattr(fn, "user_function", fn))
        return hashlib.sha256(Path(file).read_bytes()).hexdigest() if file else None
    except (TypeError, OSError):
        return None


def code_digest(candidate: Any) -> str:
    """SHA-256 of the code that computes ``candidate``'s loss: the user's file for an
    external candidate; for a built-in one, every source file of the candidates package and
    of the shipped loss (which they call). Results cached across runs (fits) key on it, so
    an edited loss is never served from the cache."""
    h = hashlib.sha256()
    target = getattr(candidate, "target", None)
    fn = getattr(candidate, "fn", candidate)
    own = source_sha256(fn) or source_sha256(type(fn))  # the file that defines it
    if target is not None:
        h.update((own or f"unknown:{target}").encode())
        return h.hexdigest()
    h.update((own or "").encode())
    for package in (_CANDIDATES_DIR, _LOSS_DIR):
        for file in sorted(package.rglob("*.py")):
            h.update(file.relative_to(package.parent).as_posix().encode())
            h.update(file.read_bytes())
    return h.hexdigest()


_CANDIDATES_DIR = Path(__file__).resolve().parent
_LOSS_DIR = _CANDIDATES_DIR.parent / "loss"


def _threshold_default(fn: Callable[..., Any], keyword: str) -> float:
    """The numeric default of ``fn``'s keyword argument ``keyword``."""
    try:
        param = inspect.signature(fn).parameters.get(keyword)
    except (TypeError, ValueError):
        raise TargetError("its signature cannot be read, so threshold cannot be checked") from None
    if param is None or param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
        raise TargetError(f"threshold: the function has no keyword argument {keyword!r}")
    default = param.default
    if isinstance(default, bool) or not isinstance(default, int | float):
        raise TargetError(
            f"threshold: keyword argument {keyword!r} needs a numeric default "
            "(the value measured outside the sweeps)"
        )
    return float(default)


# --------------------------------------------------------------------------- the probe


def own_inputs(spec: ExternalSpec, points: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The candidate's own parameters (``p`` or ``log_p``) from the family's natural
    columns, in call order (float64; the caller rounds them to its dtype)."""
    family = get_family(spec.family)
    own = to_own(family, points, spec.log_params)
    return [own[c] for c in family.columns_for(spec.log_params)[1:]]


def _points_text(family: str) -> str:
    pts = PROBE_POINTS[family]
    return "; ".join(f"{c} = {', '.join(f'{v:g}' for v in vs)}" for c, vs in pts.items())


def probe(spec: ExternalSpec, fn: Callable[..., Any]) -> None:
    """Call ``fn`` at :data:`PROBE_POINTS` in each of ``spec.dtypes`` (CPU): TargetError
    when it raises, returns something of the wrong type, shape or dtype, a non-finite
    value, or (kind torch) a value autograd cannot differentiate. A torch kernel missing
    for a dtype is not an error of the target (its rows will say so)."""
    pts = PROBE_POINTS[spec.family]
    names = get_family(spec.family).params
    n = len(pts["k"])
    at = f"at the probe point ({_points_text(spec.family)})"
    for dtype in spec.dtypes:
        k64 = round_to(np.array(pts["k"]), dtype)
        natural = {c: np.array(pts[c]) for c in ("k", *names)}
        own = [round_to(a, dtype) for a in own_inputs(spec, natural)]
        if spec.kind == "numpy":
            k, args = k64, own
        else:
            tdt = get_format(dtype).torch_dtype
            k = torch.tensor(k64, dtype=tdt)
            args = [torch.tensor(a, dtype=tdt, requires_grad=True) for a in own]
        try:
            out = fn(k, *args)
        except (Exception, SystemExit) as exc:
            if is_missing_kernel(exc):  # torch lacks a kernel in this dtype: the run's rows
                continue  # say "unsupported: missing kernel", as for a built-in candidate
            raise TargetError(f"probe call {at} in {dtype} raised {_first_line(exc)}") from None
        _check_output(spec, out, dtype, n, at)


def _check_output(spec: ExternalSpec, out: Any, dtype: str, n: int, at: str) -> None:
    if spec.kind == "numpy":
        if not isinstance(out, np.ndarray):
            raise TargetError(f"probe call {at} returned {type(out).__name__}, not a numpy array")
        got_dtype = str(out.dtype)
    else:
        if not isinstance(out, torch.Tensor):
            raise TargetError(f"probe call {at} returned {type(out).__name__}, not a tensor")
        got_dtype = str(out.dtype).removeprefix("torch.")
    if tuple(out.shape) != (n,):
        raise TargetError(
            f"probe call {at} in {dtype} returned shape {tuple(out.shape)}, expected ({n},) "
            "(one value per element)"
        )
    if got_dtype != dtype:
        raise TargetError(f"probe call {at} in {dtype} returned dtype {got_dtype}")
    values = out if isinstance(out, np.ndarray) else out.detach().to(torch.float64).numpy()
    if not np.all(np.isfinite(values)):
        raise TargetError(
            f"probe call {at} in {dtype} returned non-finite values {values.tolist()}"
        )
    if spec.kind == "torch" and not out.requires_grad:
        raise TargetError(
            f"probe call {at} in {dtype} returned a tensor that does not depend on its "
            "parameters (no autograd graph): declare kind = \"numpy\" for a function "
            "without gradients"
        )


# ----------------------------------------------------------------------- the candidate


def _call(fn: Callable[..., Any], spec: ExternalSpec) -> Callable[..., Any]:
    """``fn`` under the candidate calling convention ``(k, *params, threshold=None)``,
    negated for ``sign = "log_prob"`` (negation is exact)."""
    keyword, negate = spec.threshold, spec.sign == "log_prob"

    if spec.kind == "numpy":

        def call_numpy(k: Any, *params: Any, threshold: float | None = None) -> np.ndarray:
            kw = {keyword: threshold} if keyword and threshold is not None else {}
            out = np.asarray(fn(k, *params, **kw))
            return -out if negate else out

        call_numpy.user_function = fn  # type: ignore[attr-defined]
        call_numpy.user_sign = spec.sign  # type: ignore[attr-defined]
        return call_numpy

    def call_torch(k: Any, *params: Any, threshold: float | None = None) -> Any:
        kw = {keyword: threshold} if keyword and threshold is not None else {}
        out = fn(k, *params, **kw)
        return -out if negate else out

    call_torch.user_function = fn  # type: ignore[attr-defined]
    call_torch.user_sign = spec.sign  # type: ignore[attr-defined]
    return call_torch


def describe(spec: ExternalSpec) -> str:
    """One line: the target and how it is called."""
    params = ", ".join(get_family(spec.family).columns_for(spec.log_params))
    text = spec.description or f"the user's own {spec.family} formulation"
    sign = "; log_prob, negated" if spec.sign == "log_prob" else ""
    return f"{text}: {spec.target}({params}){sign}"


def build(spec: ExternalSpec, base_dir: Path | str = ".", check: bool = True) -> Candidate:
    """Load ``spec``'s target, probe it (``check``) and return it as a :class:`Candidate`.

    TargetError (one line, no location) for a target that cannot be measured.
    """
    fn = load_target(spec.target, base_dir)
    default = _threshold_default(fn, spec.threshold) if spec.threshold else None
    if check:
        probe(spec, fn)
    return Candidate(
        id=spec.id,
        family=spec.family,
        form=spec.form,  # type: ignore[arg-type]
        description=describe(spec),
        provenance=f"external: {spec.target}, declared in {spec.origin}",
        kind="peer" if spec.kind == "numpy" else "torch",
        dtypes=spec.dtypes,
        fn=_call(fn, spec),
        threshold=default,
        log_params=spec.log_params,
        target=spec.target,
    )


def eval_arguments(candidate: Candidate) -> str:
    """The ``ztbench eval`` arguments that call an external candidate from the current
    directory, quoted for a POSIX shell: its target (a file target as a path from here) and
    the declaration's options, e.g.
    ``examples/bento-sc/bento_loss.py:ztnb --family ztnb --parameters theta=log``."""
    fn = getattr(candidate.fn, "user_function", candidate.fn)
    where, _, attr = (candidate.target or "").rpartition(":")
    target = candidate.target or candidate.id
    if where.endswith(".py") or "/" in where or os.sep in where:
        try:
            target = f"{os.path.relpath(inspect.getsourcefile(fn) or where)}:{attr}"
        except (TypeError, ValueError):
            pass
    args = [target, "--family", candidate.family]
    if candidate.form != "loss":
        args += ["--form", candidate.form]
    if getattr(candidate.fn, "user_sign", "nll") != "nll":
        args += ["--sign", candidate.fn.user_sign]  # type: ignore[attr-defined]
    if candidate.kind == "peer":
        args += ["--kind", "numpy"]
    if candidate.log_params:
        spec = TORCH_NB if candidate.log_params == (TORCH_NB,) else ",".join(
            f"{p}=log" for p in candidate.log_params)  # fmt: skip
        args += ["--parameters", spec]
    return shlex.join(args)


def info(candidate: Candidate) -> dict[str, Any]:
    """What env.json records of an external candidate (JSON-ready): its declaration, the
    ``ztbench eval`` arguments that reproduce it, and the SHA-256 of the file that
    defines the user's function (None if unknown)."""
    return {
        "id": candidate.id, "target": candidate.target, "family": candidate.family,
        "form": candidate.form, "kind": candidate.kind, "inputs": list(candidate.columns),
        "dtypes": list(candidate.dtypes), "threshold": candidate.threshold,
        "description": candidate.description, "provenance": candidate.provenance,
        "eval": eval_arguments(candidate), "source_sha256": source_sha256(candidate.fn),
    }  # fmt: skip


def env_entries(external: Mapping[str, Candidate]) -> dict[str, Any]:
    """``{"external_candidates": [...]}`` for env.json, or ``{}`` when there is none."""
    return {"external_candidates": [info(c) for c in external.values()]} if external else {}


# ------------------------------------------------------------------ the suite's tables


def parse_spec(
    table: Any,
    key: str,
    suite_dtypes: tuple[str, ...] | None,
    origin: str,
) -> ExternalSpec:
    """One ``[[candidates.external]]`` table -> :class:`ExternalSpec`; TargetError carrying
    ``(key path, problem)`` in its args for the suite loader's one-line message."""

    def fail(sub: str, problem: str) -> TargetError:
        return TargetError(f"{key}.{sub}" if sub else key, problem)

    if not isinstance(table, dict):
        raise fail("", f"must be a table, got {type(table).__name__}")
    for k in table:
        if k not in KEYS:
            raise fail(k, f"unknown key (allowed: {', '.join(KEYS)})")
    for k in REQUIRED:
        if k not in table:
            raise fail(k, "missing required key")

    def text(k: str, choices: Iterable[str] | None = None, default: str | None = None) -> str:
        v = table.get(k, default)
        if not isinstance(v, str):
            raise fail(k, f"must be a string, got {type(v).__name__}")
        if choices is not None and v not in choices:
            raise fail(k, f"unknown value {v!r} (known: {', '.join(choices)})")
        return v

    cid = text("id")
    if not ID_PATTERN.match(cid):
        raise fail("id", f"{cid!r} must be 'namespace/name' (letters, digits, _ . - +)")
    family = text("family", FAMILIES)
    namespace = cid.split("/", 1)[0]
    if namespace in FAMILIES and namespace != family:
        raise fail("id", f"{cid!r} names family {namespace} but family = {family!r}")
    kind = text("kind", KINDS, "torch")
    parameters = None
    if "parameters" in table:
        parameters = _parameters(table["parameters"], family, lambda p: fail("parameters", p))
    dtypes: tuple[str, ...]
    if "dtypes" in table:
        raw = table["dtypes"]
        if not isinstance(raw, list) or not raw or not all(isinstance(d, str) for d in raw):
            raise fail("dtypes", "must be a non-empty list of dtype names")
        for d in raw:
            if d not in DTYPE_NAMES:
                raise fail("dtypes", f"unknown dtype {d!r} (known: {', '.join(DTYPE_NAMES)})")
            if suite_dtypes is not None and d not in suite_dtypes:
                raise fail("dtypes", f"dtype {d!r} is not one of the suite's dtypes")
            if raw.count(d) > 1:
                raise fail("dtypes", f"dtype {d!r} listed twice")
        dtypes = tuple(raw)
        if kind == "numpy" and dtypes != ("float64",):
            raise fail("dtypes", 'a kind = "numpy" candidate runs in float64 only')
    elif kind == "numpy":
        dtypes = ("float64",)
    else:
        dtypes = tuple(suite_dtypes) if suite_dtypes is not None else DTYPE_NAMES
    threshold = text("threshold") if "threshold" in table else None
    if threshold is not None and not threshold.isidentifier():
        raise fail("threshold", f"{threshold!r} is not a keyword argument name")
    return ExternalSpec(
        id=cid,
        target=text("target"),
        family=family,
        form=text("form", FORMS),
        sign=text("sign", SIGNS, "nll"),
        kind=kind,
        dtypes=dtypes,
        threshold=threshold,
        parameters=parameters,
        description=text("description", None, ""),
        origin=origin,
    )


def _parameters(
    value: Any, family: str, fail: Callable[[str], TargetError]
) -> dict[str, str] | str:
    params = get_family(family).params
    if value == TORCH_NB:
        if family != "ztnb":
            raise fail(f'"{TORCH_NB}" (total_count, logits) is a ztnb parameterisation')
        return TORCH_NB
    if not isinstance(value, dict):
        raise fail(f"must be a table (per parameter: {' or '.join(PARAMETERISATIONS)}) "
                   f'or "{TORCH_NB}"')  # fmt: skip
    out: dict[str, str] = {}
    for p, how in value.items():
        if p not in params:
            raise fail(f"{family} has no parameter {p!r} (parameters: {', '.join(params)})")
        if how not in PARAMETERISATIONS:
            raise fail(f"{p} = {how!r}: must be one of {', '.join(PARAMETERISATIONS)}")
        out[p] = how
    return out


def from_suite(
    value: Any,
    suite_file: Path,
    suite_dtypes: tuple[str, ...],
    taken: Iterable[str],
) -> dict[str, Candidate]:
    """The ``[[candidates.external]]`` array of ``suite_file`` -> {id: Candidate}, loaded
    and probed. TargetError(key path, problem) on the first problem."""
    key = "candidates.external"
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise TargetError(key, "must be an array of tables ([[candidates.external]])")
    if not value:
        raise TargetError(key, "is empty")
    taken = set(taken)
    out: dict[str, Candidate] = {}
    for i, table in enumerate(value):
        tkey = f"{key}[{i}]"
        spec = parse_spec(table, tkey, suite_dtypes, str(suite_file))
        if spec.id in taken:
            raise TargetError(f"{tkey}.id", f"{spec.id!r} is a built-in candidate's id")
        if spec.id in out:
            raise TargetError(f"{tkey}.id", f"{spec.id!r} is declared twice")
        try:
            out[spec.id] = build(spec, suite_file.parent)
        except TargetError as exc:
            raise TargetError(f"{tkey}.target", f"{spec.target}: {exc.args[0]}") from None
    return out


# ----------------------------------------------------------------------- the command line


def parse_parameters(text: str | None, family: str) -> dict[str, str] | str | None:
    """``--parameters`` text (``p=how,p=how`` or ``torch-nb``) -> the declaration;
    TargetError when malformed."""
    if text is None:
        return None
    if text.strip() == TORCH_NB:
        return _parameters(TORCH_NB, family, lambda p: TargetError(f"--parameters: {p}"))
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        p, sep, how = item.partition("=")
        if not sep:
            raise TargetError(f"--parameters: {item!r} is not 'parameter=natural|log'")
        out[p.strip()] = how.strip()

    def fail(problem: str) -> TargetError:
        return TargetError(f"--parameters: {problem}")

    return _parameters(out, family, fail)


def from_cli(target: str, family: str, args: Any, dtypes: tuple[str, ...]) -> Candidate:
    """The candidate for a ``module:function`` given on the command line, loaded and
    probed in ``dtypes`` (numpy kind: float64); UserError (one line) when it cannot be."""
    try:
        spec = ExternalSpec(
            id=f"user/{target.rpartition(':')[2].split('.')[-1] or 'fn'}",
            target=target,
            family=family,
            form=args.form,
            sign=args.sign,
            kind=args.kind,
            dtypes=("float64",) if args.kind == "numpy" else tuple(dtypes),
            parameters=parse_parameters(args.parameters, family),
        )
        return build(spec, ".")
    except TargetError as exc:
        raise UserError(f"{target}: {exc.args[-1]}") from None
