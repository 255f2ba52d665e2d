"""Candidate metadata, the registry, and the typed "unsupported" result.

A candidate is one formulation of a family's NLL under test. Torch candidates are pure
functions ``fn(k, *params, threshold=None) -> Tensor`` of tensors of one dtype on one
device (``k`` is passed as a float tensor of that dtype), computing the elementwise NLL in
that dtype, differentiable by autograd. Peer candidates wrap other libraries: numpy
float64 in, float64 out, no autograd.

``form`` says which quantity a candidate computes: ``"full"`` (the negative log
probability, with lgamma(k + 1)) or ``"loss"`` (the training loss, without it); the
accuracy runner compares each candidate with the reference of its form.

Parameterisation: ``log_params`` names the parameters a candidate takes as logarithms
(natural otherwise). A candidate with ``log_params=("theta",)`` is called
``fn(k, mu, log_theta)``; its input columns are ``k, mu, log_theta`` and its gradients
``d_mu, d_log_theta`` (:attr:`Candidate.columns`, :attr:`Candidate.gradients`). The
accuracy runner rounds the candidate's own inputs to the dtype (log_theta =
round_T(log theta)), takes the reference at the exact value they stand for (theta =
exp(log_theta), evaluated inside the reference engine) and compares the gradients with
the certified d/dlog_theta = theta d/dtheta, so that no candidate is charged for
rounding an input it never sees. A minimal candidate of one's own::

    from ztbench.candidates.base import register_torch

    def my_nll(k, mu, log_theta, threshold=None):   # tensors of one dtype and device
        ...                                          # the elementwise NLL, that dtype

    register_torch("ztnb", "mine", my_nll, "loss", "what it computes",
                   "where it comes from", log_params=("theta",))
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ztbench.core.families import Family, get_family
from ztbench.core.schema import DTYPE_NAMES, FAMILY_NAMES

DTYPES_ALL: tuple[str, ...] = DTYPE_NAMES
DTYPES_PEER: tuple[str, ...] = ("float64",)


class Unsupported(Exception):
    """A candidate cannot run for this dtype, device or environment (a typed result).

    Raised by a candidate (or by the machinery around it) instead of computing garbage;
    :func:`ztbench.measure.evaluate.evaluate` turns it into ``status="unsupported"`` with
    ``reason`` = the message.
    """

    @property
    def reason(self) -> str:
        return str(self.args[0]) if self.args else "unsupported"


@dataclass(frozen=True)
class Candidate:
    """One formulation under test and its metadata.

    Attributes:
        id: ``"family/name"``, unique.
        family: the :class:`~ztbench.core.families.Family` (given as its name, resolved
            once when the candidate is made).
        form: ``"full"`` (with lgamma(k+1)) or ``"loss"`` (without).
        description: one sentence stating the formula.
        provenance: where the formula comes from.
        kind: ``"torch"`` (tensor function, autograd) or ``"peer"`` (numpy float64 only).
        dtypes: dtype names it accepts.
        threshold: default threshold of a threshold-family candidate, None otherwise.
        published_thresholds: thresholds used by published code or text (may be empty).
        fn: the callable, ``fn(k, *params, threshold=None)``, the parameters in the
            family's order, each natural or its log (``log_params``).
        log_params: the parameters taken as logarithms (e.g. ``("theta",)``); () = natural.
        threshold_variable: what a threshold family switches on (a key of
            :data:`ztbench.core.rules.SWEEP_VARIABLES`), None otherwise.
        target: for a user's own candidate declared in a suite
            (:mod:`ztbench.candidates.external`), the ``module:function`` or
            ``file.py:function`` it calls; None for the built-in ones.
    """

    id: str
    family: Family
    form: Literal["full", "loss"]
    description: str
    provenance: str
    kind: Literal["torch", "peer"]
    dtypes: tuple[str, ...]
    fn: Callable[..., Any] = field(repr=False, compare=False)
    threshold: float | None = None
    published_thresholds: tuple[float, ...] = ()
    log_params: tuple[str, ...] = ()
    threshold_variable: str | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        # the family's name resolved once, here: every stage below uses the object
        object.__setattr__(self, "family", get_family(self.family))

    @property
    def parameterisation(self) -> dict[str, str]:
        """``{param: "natural" | "log"}`` in the family's order."""
        return {p: ("log" if p in self.log_params else "natural") for p in self.family.params}

    @property
    def columns(self) -> tuple[str, ...]:
        """The candidate's own input columns: ``k`` then ``p`` or ``log_p`` per parameter."""
        return self.family.columns_for(self.log_params)

    @property
    def gradients(self) -> tuple[str, ...]:
        """The gradients it is measured on: ``d_p`` or ``d_log_p`` per parameter."""
        return self.family.gradients_for(self.log_params)

    @property
    def name(self) -> str:
        """The part of the id after the family."""
        return self.id.split("/", 1)[1]

    @property
    def is_threshold_family(self) -> bool:
        """True for candidates with a threshold parameter (swept by the accuracy runner)."""
        return self.threshold is not None

    def __call__(self, k: Any, *params: Any, threshold: float | None = None) -> Any:
        return self.fn(k, *params, threshold=threshold)


_REGISTRY: dict[str, Candidate] = {}


def register(candidate: Candidate) -> Candidate:
    """Add ``candidate`` to the registry (ValueError on a duplicate or malformed id)."""
    family, sep, name = candidate.id.partition("/")
    if not sep or not name or family != candidate.family:
        raise ValueError(f"candidate id {candidate.id!r} must be '{candidate.family}/<name>'")
    if candidate.form not in ("full", "loss"):
        raise ValueError(f"{candidate.id}: form must be 'full' or 'loss'")
    if candidate.kind not in ("torch", "peer"):
        raise ValueError(f"{candidate.id}: kind must be 'torch' or 'peer'")
    try:
        candidate.family.own_params(candidate.log_params)
    except ValueError as exc:
        raise ValueError(f"{candidate.id}: log_params: {exc}") from None
    if candidate.id in _REGISTRY:
        raise ValueError(f"candidate {candidate.id!r} registered twice")
    _REGISTRY[candidate.id] = candidate
    return candidate


def register_torch(
    family: str,
    name: str,
    fn: Callable[..., Any],
    form: str,
    description: str,
    provenance: str,
    **metadata: Any,
) -> Candidate:
    """Register a torch candidate ``family/name`` accepting every dtype (see :class:`Candidate`)."""
    return register(
        Candidate(
            id=f"{family}/{name}",
            family=family,
            form=form,  # type: ignore[arg-type]
            description=description,
            provenance=provenance,
            kind="torch",
            dtypes=DTYPES_ALL,
            fn=fn,
            **metadata,
        )
    )


def in_float64(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` evaluated on float64 copies of its inputs, the result rounded once to the
    parameters' dtype ("just compute it in double"); gradients flow through the casts.

    For float64 inputs it is ``fn`` itself. It isolates what float64 internals alone buy
    (and cost) a formula, apart from any rewriting.
    """

    def wrapped(k: torch.Tensor, *params: torch.Tensor, threshold: float | None = None):  # type: ignore[no-untyped-def]
        f64 = torch.float64
        out = fn(k.to(f64), *(p.to(f64) for p in params), threshold=threshold)
        return out.to(params[0].dtype)

    wrapped.__doc__ = f"{fn.__name__} in float64, rounded once to the input dtype."
    return wrapped


def _order(c: Candidate) -> tuple[int, int, int]:
    fam = FAMILY_NAMES.index(c.family) if c.family in FAMILY_NAMES else len(FAMILY_NAMES)
    kind = 0 if c.kind == "torch" else 1
    return fam, kind, list(_REGISTRY).index(c.id)


def list_candidates(family: str | None = None) -> list[Candidate]:
    """Registered candidates, optionally of one family, in a stable order.

    Order: family (ztpoisson, ztnb), torch candidates before peers, then registration order.
    """
    out = [c for c in _REGISTRY.values() if family is None or c.family == family]
    return sorted(out, key=_order)


def get_candidate(candidate_id: str) -> Candidate:
    """The candidate with this id; ValueError listing the known ids otherwise."""
    try:
        return _REGISTRY[candidate_id]
    except KeyError:
        known = ", ".join(c.id for c in list_candidates())
        raise ValueError(f"unknown candidate {candidate_id!r} (known: {known})") from None


def select_candidates(patterns: list[str]) -> list[Candidate]:
    """Candidates matching any of ``patterns`` (ids or fnmatch globs such as ``ztnb/*``).

    Returned in the registry's stable order, without duplicates. ValueError naming the
    first pattern that matches nothing.
    """
    all_c = list_candidates()
    chosen: set[str] = set()
    for pat in patterns:
        hits = [c.id for c in all_c if fnmatch.fnmatchcase(c.id, pat)]
        if not hits:
            known = ", ".join(c.id for c in all_c)
            raise ValueError(f"candidate pattern {pat!r} matches nothing (known: {known})")
        chosen.update(hits)
    return [c for c in all_c if c.id in chosen]
