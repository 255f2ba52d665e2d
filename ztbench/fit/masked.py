"""Training impact: a masked-count network trained with each candidate loss.

Where :mod:`ztbench.fit.impact` refits every gene on its own, this module asks what a loss
does to a model trained with it ("does the published loss hurt my model?"). The model is
the masked-count objective of single-cell foundation models:

- data: the ``genes`` most expressed genes (by total count) of a cells x genes count
  matrix; a fixed split (``split_seed``) into ``heldout_cells`` held-out cells and up to
  ``train_cells`` training cells;
- input of a cell: ``log1p(x_visible / s)``, where ``x_visible`` is the cell's counts with
  ``mask_fraction`` of its nonzero counts hidden (set to 0; round(fraction x nonzero)
  counts per cell, chosen at random) and ``s`` the size factor of the visible counts
  (their total over the median total of the training cells);
- network: an MLP ``G -> hidden -> hidden -> P*G`` (ReLU), P = 2 outputs per gene for
  ZTNB (``y1``, ``y2``), 1 for ZTP (``y``), parameters in ``dtype``;
- heads (:data:`HEADS`): ``published`` (mu = min(e^y1 + 1, 1e7), theta = e^y2, log theta
  = y2; ZTP: lam = min(e^y + 1, 1e7)), the head of the published system, and ``free``
  (mu = e^y1, theta = e^y2, log mu = y1, log theta = y2; ZTP: lam = e^y, log lam = y).
  Each candidate gets its own parameterisation (:attr:`Candidate.columns`) in the most
  direct way: log-parameters straight from y where the head has them, otherwise the log
  of the natural parameter (the published head's log mu = log(min(e^y1 + 1, 1e7)));
- training: Adam (``lr``), ``steps`` steps of ``batch`` training cells, fresh masks at
  each step; the loss is the candidate's NLL averaged over the batch's hidden nonzero
  counts (the hidden zeros and the visible counts do not enter it);
- evaluation: the exact zero-truncated NLL, -log P(X = k | X > 0) with lgamma(k + 1)
  (:func:`ztbench.loss.zt_negbin_nll` / :func:`~ztbench.loss.zt_poisson_nll`, float64,
  ``full=True``), of every hidden nonzero count of the held-out cells under fixed masks,
  averaged per hidden count: ``heldout_nll``.

Every candidate, head and seed starts from the same initial weights and sees the same
batches and masks for a given seed (each stream from its own seeded
:class:`torch.Generator`; no global random state is read or changed), so two runs give
identical numbers and the differences between candidates are paired. A run whose loss or
any gradient is non-finite stops at that step (``nonfinite_step``), with NaN held-out
metrics; a candidate that raises is recorded as ``failed``, one that cannot run here as
``unsupported``.

:func:`training_impact` returns one row per (family, head, candidate, seed) and a summary
per (family, head, candidate) (:func:`summarize_training`): mean and standard deviation
over seeds, and the paired difference with :data:`REFERENCE` (the shipped loss of the
family), with a flag where it exceeds three standard deviations of the per-seed
differences.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ztbench.candidates import Candidate, get_candidate
from ztbench.candidates.base import Unsupported
from ztbench.candidates.execution import first_line
from ztbench.core.dtypes import get_format
from ztbench.core.families import FAMILIES, TORCH_NB
from ztbench.core.significance import exceeds_seed_noise
from ztbench.io.atomic import atomic_paths
from ztbench.io.environment import STAGE_KEYS, environment_info, stage_env_text
from ztbench.io.errors import UserError
from ztbench.io.pointsio import csv_frame
from ztbench.loss import zt_negbin_nll, zt_poisson_nll

MODEL = "masked"
HEADS: tuple[str, ...] = ("published", "free")
# The published head's ceiling on mu (and lam): min(e^y + 1, MU_MAX)
MU_MAX = 1e7
# The comparison each candidate is paired with: the shipped loss of its family
REFERENCE: dict[str, str] = {"ztnb": "ztnb/ztbench", "ztpoisson": "ztpoisson/ztbench"}
# What `ztbench impact --model masked` trains by default: the published package and the
# shipped loss
DEFAULT_CANDIDATES: dict[str, tuple[str, ...]] = {
    "ztnb": ("ztnb/bento-sc", "ztnb/ztbench"),
    "ztpoisson": ("ztpoisson/bento-sc", "ztpoisson/ztbench"),
}
THETA_QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)
# independent random streams of a seed
_STREAM_INIT, _STREAM_TRAIN, _STREAM_HELDOUT = 0, 1, 2


@dataclass(frozen=True)
class MaskedSettings:
    """The settings of a training-impact run (see the module docstring).

    Attributes:
        genes: the number of genes (the most expressed ones; all of them if the matrix
            has fewer).
        train_cells: at most this many training cells (None: every cell not held out).
        heldout_cells: held-out cells (the rest of the cells are training cells).
        hidden: width of the two hidden layers.
        steps: optimiser steps per run.
        batch: training cells per step.
        lr: Adam's learning rate.
        mask_fraction: fraction of each cell's nonzero counts hidden, in (0, 1).
        seeds: one run per seed (initial weights, batches and masks).
        heads: which heads (:data:`HEADS`).
        dtype: the network's and the training loss's dtype (float32 by default).
        device: torch device ("cpu", "cuda").
        split_seed: seed of the train / held-out split of the cells (the same for every
            seed).
    """

    genes: int = 300
    train_cells: int | None = 2000
    heldout_cells: int = 1000
    hidden: int = 64
    steps: int = 160
    batch: int = 256
    lr: float = 2e-3
    mask_fraction: float = 0.15
    seeds: tuple[int, ...] = (0, 1, 2)
    heads: tuple[str, ...] = HEADS
    dtype: str = "float32"
    device: str = "cpu"
    split_seed: int = 0

    def check(self, label: Callable[[str], str] = str) -> None:
        """UserError (one line) for the first setting out of its range, named by
        ``label(field)`` (the CLI passes its flags' names)."""

        def bad(name: str, problem: str) -> UserError:
            return UserError(f"{label(name)}: {problem}, got {getattr(self, name)!r}")

        for name in ("genes", "heldout_cells", "hidden", "steps", "batch"):
            if not _positive_int(getattr(self, name)):
                raise bad(name, "must be a positive integer")
        if self.train_cells is not None and not _positive_int(self.train_cells):
            raise bad("train_cells", "must be a positive integer (or None: all)")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise bad("lr", "must be a finite number > 0")
        if not (isinstance(self.mask_fraction, int | float) and 0 < self.mask_fraction < 1):
            raise bad("mask_fraction", "must lie strictly between 0 and 1")
        if not self.seeds:
            raise bad("seeds", "give at least one seed")
        if len(set(self.seeds)) != len(self.seeds) or not all(
            _positive_int(s + 1) for s in self.seeds
        ):
            raise bad("seeds", "must be distinct non-negative integers")
        if not self.heads or any(h not in HEADS for h in self.heads):
            raise bad("heads", f"must be among {', '.join(HEADS)}")
        try:
            get_format(self.dtype)
        except ValueError as exc:
            raise UserError(f"{label('dtype')}: {exc}") from None
        try:
            torch.empty(0, device=self.device)
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"{label('device')}: {self.device!r}: {first_line(exc)}") from None


def _positive_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


# What `make bench` runs (mouse_brain_10k, both families and heads, the two default
# candidates each, 3 seeds: 24 runs; bench.json shows the impact stage's time): the full
# setting scaled down (300 genes, a 64-wide network, 2000 training and 1000 held-out cells,
# 160 steps) with twice its learning rate, so that 160 steps go about as far as 320 at
# 1e-3; sized so that the published ZTNB loss's cost still shows, above three seed
# standard deviations of the paired differences, with both heads.
DEFAULTS = MaskedSettings()
# The seed's own setting: G-256-256-2G on the 2000 most expressed genes (every gene of a
# smaller matrix: mouse_brain_10k ships 1000), Adam at 1e-3, 1000 steps of 256 cells,
# 2000 held-out cells and every other cell for training (minutes per run on a CPU).
# `ztbench impact DATASET --model masked --full`.
FULL = MaskedSettings(genes=2000, train_cells=None, heldout_cells=2000, hidden=256,
                      steps=1000, lr=1e-3)  # fmt: skip


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class MaskedData:
    """The counts a training-impact run sees (dense, float64 on the CPU).

    Attributes:
        train, heldout: cells x genes counts of the training and held-out cells.
        genes: the column of the input matrix of each gene kept (most expressed first).
        train_rows, heldout_rows: the input matrix's row of each training / held-out cell.
        median_total: the median total count of the training cells (the size factors'
            scale).
    """

    train: np.ndarray
    heldout: np.ndarray
    genes: np.ndarray
    train_rows: np.ndarray
    heldout_rows: np.ndarray
    median_total: float


def _as_counts(counts: Any) -> sp.csr_matrix:
    """A count matrix (scipy sparse or 2-d array) as CSR float64; UserError when it is not
    one (not 2-d, non-finite, negative or non-integer entries)."""
    if sp.issparse(counts):
        mat = sp.csr_matrix(counts)
    else:
        arr = np.asarray(counts)
        if arr.ndim != 2:
            raise UserError(f"the count matrix must be 2-d (cells x genes), got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.number) and not np.iscomplexobj(arr)):
            raise UserError(f"the count matrix must be numeric, got dtype {arr.dtype}")
        mat = sp.csr_matrix(arr)
    if mat.ndim != 2 or min(mat.shape) < 1:
        raise UserError(f"the count matrix is empty (shape {mat.shape})")
    data = np.asarray(mat.data)
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise UserError(f"the count matrix must be numeric, got dtype {data.dtype}")
    data = data.astype(np.float64)
    if not np.isfinite(data).all():
        raise UserError("the count matrix holds non-finite values: not counts")
    if (data < 0).any():
        raise UserError("the count matrix holds negative values: not counts")
    if (data != np.floor(data)).any():
        raise UserError("the count matrix holds non-integer values: not counts")
    out = sp.csr_matrix((data, mat.indices, mat.indptr), shape=mat.shape)
    out.sum_duplicates()
    out.eliminate_zeros()
    return out


def prepare(counts: Any, settings: MaskedSettings) -> MaskedData:
    """Select the genes and split the cells (see :class:`MaskedData`); UserError for a
    matrix that is not counts or too small for the settings."""
    mat = _as_counts(counts)
    n_cells, n_genes = mat.shape
    if settings.heldout_cells >= n_cells:
        raise UserError(f"heldout_cells = {settings.heldout_cells} leaves no training cell "
                        f"(the matrix has {n_cells} cells)")  # fmt: skip
    totals = np.asarray(mat.sum(axis=0)).ravel()
    genes = np.argsort(-totals, kind="stable")[: min(settings.genes, n_genes)]
    perm = np.random.default_rng(settings.split_seed).permutation(n_cells)
    heldout_rows = np.sort(perm[: settings.heldout_cells])
    train_rows = perm[settings.heldout_cells :]
    if settings.train_cells is not None:
        train_rows = train_rows[: settings.train_cells]
    train_rows = np.sort(train_rows)
    sub = mat[:, genes]
    train = sub[train_rows].toarray()
    heldout = sub[heldout_rows].toarray()
    if not (heldout > 0).any():
        raise UserError("the held-out cells have no nonzero count among the genes kept")
    cell_totals = train.sum(axis=1)
    positive = cell_totals[cell_totals > 0]
    if not len(positive):
        raise UserError("the training cells have no nonzero count among the genes kept")
    return MaskedData(train, heldout, genes, train_rows, heldout_rows,
                      float(np.median(positive)))  # fmt: skip


def _stream(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one random stream of ``seed`` (streams are independent)."""
    state = np.random.SeedSequence([seed, stream]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def hide_mask(x: Tensor, fraction: float, gen: torch.Generator) -> Tensor:
    """Boolean mask of the hidden counts of ``x`` (cells x genes): in each cell,
    round(``fraction`` x its nonzero count) of its nonzero entries, chosen uniformly at
    random: one uniform draw per nonzero entry (in row-major order), ranked within its
    cell by one sort of row + draw."""
    nonzero = x > 0
    rows, cols = nonzero.nonzero(as_tuple=True)
    u = torch.rand(rows.numel(), generator=gen, dtype=torch.float64)
    order = torch.argsort(rows.to(torch.float64) + u)  # by cell, then by draw
    per_cell = nonzero.sum(dim=1)
    first = torch.cumsum(per_cell, 0) - per_cell
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel()) - first[rows[order]]
    n_hide = torch.round(fraction * per_cell.to(torch.float64)).to(rank.dtype)
    hide = rank < n_hide[rows]
    mask = torch.zeros_like(nonzero)
    mask[rows[hide], cols[hide]] = True
    return mask


def model_input(x: Tensor, hidden: Tensor, median_total: float) -> Tensor:
    """log1p of the visible counts normalised by the visible size factor (float64)."""
    visible = torch.where(hidden, torch.zeros_like(x), x)
    total = visible.sum(dim=1, keepdim=True)
    scale = torch.where(total > 0, median_total / total.clamp(min=1.0), torch.ones_like(total))
    return torch.log1p(visible * scale)


# ----------------------------------------------------------------------------- model


class MaskedMLP(nn.Module):
    """``G -> hidden -> hidden -> outputs*G`` with ReLU, initialised like ``nn.Linear``
    (weights and biases uniform in +-1/sqrt(fan_in)) from ``gen``, without touching the
    global random state."""

    def __init__(self, genes: int, hidden: int, outputs: int, gen: torch.Generator,
                 dtype: torch.dtype) -> None:  # fmt: skip
        super().__init__()
        sizes = [(genes, hidden), (hidden, hidden), (hidden, outputs * genes)]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in sizes:
            bound = 1.0 / math.sqrt(fan_in)
            w = torch.empty(fan_out, fan_in, dtype=torch.float64).uniform_(
                -bound, bound, generator=gen
            )
            b = torch.empty(fan_out, dtype=torch.float64).uniform_(-bound, bound, generator=gen)
            self.weights.append(nn.Parameter(w.to(dtype)))
            self.biases.append(nn.Parameter(b.to(dtype)))
        self.genes, self.outputs = genes, outputs

    def forward(self, x: Tensor) -> list[Tensor]:
        """The ``outputs`` per-gene output matrices (cells x genes each)."""
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = nn.functional.linear(h, w, b)
            if i < last:
                h = torch.relu(h)
        return list(h.split(self.genes, dim=1))


# ----------------------------------------------------------------------------- heads


def head_parameters(family: str, head: str, ys: Sequence[Tensor]) -> dict[str, Tensor]:
    """The head's parameters from the network's outputs ``ys`` (one tensor per output),
    natural and log: ``mu``, ``log_mu``, ``theta``, ``log_theta`` (ZTNB) or ``lam``,
    ``log_lam`` (ZTP). Computed in the outputs' dtype."""
    if head == "published":
        mean = torch.clamp(torch.exp(ys[0]) + 1.0, max=MU_MAX)
        log_mean = torch.log(mean)
    else:
        mean, log_mean = torch.exp(ys[0]), ys[0]
    if family == "ztpoisson":
        return {"lam": mean, "log_lam": log_mean}
    return {"mu": mean, "log_mu": log_mean, "theta": torch.exp(ys[1]), "log_theta": ys[1]}


def candidate_inputs(cand: Candidate, params: dict[str, Tensor]) -> list[Tensor]:
    """The candidate's own parameters (after ``k``), in its columns' order, from
    :func:`head_parameters`' dict (``total_count``, ``logits`` for torch-nb)."""
    if cand.log_params == (TORCH_NB,):
        return [params["theta"], params["log_mu"] - params["log_theta"]]
    return [params[c] for c in cand.columns[1:]]


def exact_nll(family: str, head: str, k: Tensor, ys: Sequence[Tensor]) -> Tensor:
    """-log P(X = k | X > 0) of each count under the head's law: the shipped loss in
    float64, ``full=True``, on the head's parameters computed in float64 from the
    outputs ``ys``.

    The natural parameters are used (the fastest float64 path); where exp(y) leaves the
    float64 range (0 or inf) the same law is evaluated from its log-parameters instead.
    """
    p = head_parameters(family, head, [t.to(torch.float64) for t in ys])
    k64 = k.to(torch.float64)
    names = ("lam",) if family == "ztpoisson" else ("mu", "theta")
    fn = zt_poisson_nll if family == "ztpoisson" else zt_negbin_nll
    nll = fn(k64, *(p[n] for n in names), reduction="none", full=True, validate=False)
    bad = torch.zeros_like(k64, dtype=torch.bool)
    for n in names:
        bad |= ~(torch.isfinite(p[n]) & (p[n] > 0))
    if bool(bad.any()):
        logs = {f"log_{n}": p[f"log_{n}"][bad] for n in names}
        nll[bad] = fn(k64[bad], reduction="none", full=True, validate=False, **logs)
    return nll


# ------------------------------------------------------------------------------ runs


@dataclass(frozen=True)
class Schedule:
    """What every run of one seed sees: the initial weights' generator seed, the training
    batches and their hidden counts, the held-out cells' fixed masks.

    Attributes:
        seed: the seed.
        batches: per step, (the rows of ``data.train`` in the batch, the flat row-major
            positions of its hidden counts in the batch x genes matrix).
        heldout_x, heldout_inputs, heldout_hidden: the held-out counts (float64), the
            model's inputs (the settings' dtype) and the fixed hidden mask (device).
    """

    seed: int
    batches: list[tuple[Tensor, Tensor]]
    heldout_x: Tensor
    heldout_inputs: Tensor
    heldout_hidden: Tensor


def heldout_mask(data: MaskedData, seed: int, settings: MaskedSettings) -> np.ndarray:
    """The fixed mask of ``seed``'s hidden counts among the held-out cells (a boolean
    cells x genes array over ``data.heldout``): the counts its held-out NLL is taken on."""
    x = torch.from_numpy(data.heldout)
    return hide_mask(x, settings.mask_fraction, _stream(seed, _STREAM_HELDOUT)).numpy()


def schedule(data: MaskedData, seed: int, settings: MaskedSettings) -> Schedule:
    """Draw ``seed``'s batches and masks (:class:`Schedule`), once for all its runs.

    Batches go through the training cells in a random order per epoch (a new order when
    fewer than a batch are left; the rest of the old one is dropped).
    """
    s = settings
    gen = _stream(seed, _STREAM_TRAIN)
    train = torch.from_numpy(data.train)
    n_train = train.shape[0]
    batch = min(s.batch, n_train)
    order, at = torch.randperm(n_train, generator=gen), 0
    batches = []
    for _ in range(s.steps):
        if at + batch > n_train:
            order, at = torch.randperm(n_train, generator=gen), 0
        rows = order[at : at + batch]
        at += batch
        hidden = hide_mask(train[rows], s.mask_fraction, gen)
        batches.append((rows, hidden.view(-1).nonzero().view(-1)))
    x = torch.from_numpy(data.heldout)
    hidden = torch.from_numpy(heldout_mask(data, seed, s))
    inputs = model_input(x, hidden, data.median_total).to(get_format(s.dtype).torch_dtype)
    dev = torch.device(s.device)
    return Schedule(seed, batches, x.to(dev), inputs.to(dev), hidden.to(dev))


def _all_finite(loss: Tensor, params: Sequence[Tensor]) -> bool:
    """True when the loss and every gradient are finite (one check over all of them)."""
    grads = [p.grad.reshape(-1) for p in params if p.grad is not None]
    return bool(torch.isfinite(torch.cat([loss.detach().reshape(-1), *grads])).all())


def train_one(
    data: MaskedData,
    family: str,
    cand: Candidate,
    head: str,
    settings: MaskedSettings,
    plan: Schedule,
) -> dict[str, Any]:
    """Train the network with ``cand``'s loss through ``head`` on ``plan`` (one seed's
    batches and masks, :func:`schedule`), evaluate it on the held-out cells; one row of
    :func:`training_impact` (without the keys)."""
    s = settings
    dt = get_format(s.dtype).torch_dtype
    dev = torch.device(s.device)
    outputs = 1 if family == "ztpoisson" else 2
    init = _stream(plan.seed, _STREAM_INIT)
    model = MaskedMLP(data.train.shape[1], s.hidden, outputs, init, dt).to(dev)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=s.lr, foreach=True)
    train = torch.from_numpy(data.train)
    status, reason, nonfinite_step, steps_run = "ok", "", -1, 0
    losses: list[Tensor] = []
    start = time.perf_counter()
    for step, (rows, flat) in enumerate(plan.batches, start=1):
        x = train[rows]
        hidden = torch.zeros(x.numel(), dtype=torch.bool)
        hidden[flat] = True
        inp = model_input(x, hidden.view(x.shape), data.median_total)
        inp = inp.to(device=dev, dtype=dt)
        flat_d = flat.to(dev)
        k = x.reshape(-1)[flat].to(device=dev, dtype=dt)
        opt.zero_grad(set_to_none=True)
        ys = [y.reshape(-1)[flat_d] for y in model(inp)]
        try:
            value = cand.fn(k, *candidate_inputs(cand, head_parameters(family, head, ys)))
            loss = value.sum() / max(int(k.numel()), 1)
            loss.backward()
        except Unsupported as exc:
            status, reason = "unsupported", exc.reason
            break
        except Exception as exc:  # the candidate's own code failed: recorded, not raised
            status, reason = "failed", f"step {step}: {first_line(exc)}"
            break
        steps_run = step
        if not _all_finite(loss, params):
            status, nonfinite_step = "nonfinite", step
            reason = f"non-finite loss or gradient at step {step}"
            break
        losses.append(loss.detach())
        opt.step()
    seconds = time.perf_counter() - start
    row: dict[str, Any] = {
        "status": status,
        "reason": reason,
        "nonfinite_step": nonfinite_step,
        "steps": steps_run,
        "seconds_per_step": seconds / steps_run if steps_run else float("nan"),
        "final_train_loss": float(losses[-1]) if losses else float("nan"),
    }
    row.update(evaluate(model, family, head, plan, ok=status == "ok"))
    return row


def evaluate(model: MaskedMLP, family: str, head: str, plan: Schedule,
             ok: bool = True) -> dict[str, Any]:  # fmt: skip
    """Held-out metrics of a trained model: ``heldout_nll`` (exact, float64, per hidden
    count), ``n_hidden``, ``frac_mu_lt_1`` (of the fitted mu, or lam, at the hidden
    counts) and ``theta_q10``, ``theta_q50``, ``theta_q90`` (ZTNB); NaN unless ``ok``."""
    n_hidden = int(plan.heldout_hidden.sum())
    out: dict[str, Any] = {"heldout_nll": float("nan"), "n_hidden": n_hidden,
                           "frac_mu_lt_1": float("nan")}  # fmt: skip
    out.update({f"theta_q{round(q * 100)}": float("nan") for q in THETA_QUANTILES})
    if not ok:
        return out
    with torch.no_grad():
        ys = [y[plan.heldout_hidden] for y in model(plan.heldout_inputs)]
        k = plan.heldout_x[plan.heldout_hidden]
        nll = exact_nll(family, head, k, ys)
        p = head_parameters(family, head, [y.to(torch.float64) for y in ys])
        mean = p["lam" if family == "ztpoisson" else "mu"]
        out["heldout_nll"] = float(nll.sum() / max(n_hidden, 1))
        out["frac_mu_lt_1"] = float((mean < 1).to(torch.float64).mean())
        if family == "ztnb":
            q = torch.tensor(THETA_QUANTILES, dtype=torch.float64, device=p["theta"].device)
            for qq, v in zip(THETA_QUANTILES, torch.quantile(p["theta"], q).tolist(), strict=True):
                out[f"theta_q{round(qq * 100)}"] = v
    return out


def check_candidates(family: str, candidates: Sequence[Candidate],
                     settings: MaskedSettings) -> list[Candidate]:  # fmt: skip
    """The candidates to train: ``candidates`` with :data:`REFERENCE` added (first) when
    missing, without duplicates; UserError for one of another family, a peer (no
    gradients) or one that does not take ``settings.dtype``."""
    if family not in FAMILIES:
        raise UserError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})")
    out: dict[str, Candidate] = {}
    if REFERENCE[family] not in {c.id for c in candidates}:
        out[REFERENCE[family]] = get_candidate(REFERENCE[family])
    for c in candidates:
        if c.family != family:
            raise UserError(f"candidate {c.id} is of family {c.family}, not {family}")
        if c.kind != "torch":
            raise UserError(f"candidate {c.id} has no gradients (kind {c.kind}): it cannot "
                            "be trained")  # fmt: skip
        if settings.dtype not in c.dtypes:
            raise UserError(f"candidate {c.id} does not take {settings.dtype} "
                            f"(it takes {', '.join(c.dtypes)})")  # fmt: skip
        out.setdefault(c.id, c)
    return list(out.values())


RUN_KEYS = ["dataset", "model", "family", "head", "candidate", "seed"]
SUMMARY_KEYS = ["dataset", "model", "family", "head", "candidate"]


def training_impact(
    counts: Any,
    family: str,
    candidates: Sequence[Candidate],
    settings: MaskedSettings = DEFAULTS,
    *,
    dataset: str = "",
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train the masked-count network on ``counts`` (cells x genes, scipy sparse or
    array) with each candidate's loss (the family's :data:`REFERENCE` added if missing),
    through each head, from each seed; return ``(runs, summary)``.

    ``runs``: one row per (family, head, candidate, seed): dataset, model ("masked"),
    family, head, candidate, seed, reference (the candidate of :data:`REFERENCE`),
    status (ok, nonfinite, failed, unsupported), reason, nonfinite_step (-1 if none),
    steps (completed), seconds_per_step, final_train_loss, heldout_nll (exact, float64,
    nats per hidden count; NaN unless ok), n_hidden, frac_mu_lt_1, theta_q10, theta_q50,
    theta_q90, genes, train_cells, heldout_cells. ``summary``: :func:`summarize_training`.
    UserError for bad settings, a matrix that is not counts or unusable candidates.
    """
    settings.check()
    chosen = check_candidates(family, candidates, settings)
    data = prepare(counts, settings)
    jobs = [(seed, head, c) for seed in settings.seeds for head in settings.heads
            for c in chosen]  # fmt: skip
    rows = []
    plan: Schedule | None = None
    for seed, head, cand in tqdm(jobs, desc=f"train {dataset or 'counts'} {family}",
                                 disable=not progress, leave=False):  # fmt: skip
        if plan is None or plan.seed != seed:
            plan = schedule(data, seed, settings)
        row = {"dataset": dataset, "model": MODEL, "family": family, "head": head,
               "candidate": cand.id, "seed": seed, "reference": REFERENCE[family]}  # fmt: skip
        row.update(train_one(data, family, cand, head, settings, plan))
        row.update(genes=len(data.genes), train_cells=len(data.train_rows),
                   heldout_cells=len(data.heldout_rows))  # fmt: skip
        rows.append(row)
    runs = pd.DataFrame(rows)
    return runs, summarize_training(runs)


def summarize_training(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, family, head, candidate) of :func:`training_impact`'s
    runs.

    Columns: reference; seeds (runs), ok_seeds (finite held-out NLL), nonfinite_seeds;
    nll_mean, nll_std (over the seeds, ddof = 1; NaN if any seed is not ok); diff_mean,
    diff_std: the paired per-seed difference heldout_nll - the reference's (same head and
    seed), its mean and standard deviation (ddof = 1); diff_exceeds_3sd: |diff_mean| >
    3 diff_std (False where diff_std is NaN, with a single seed, or the difference is
    NaN); seconds_per_step (mean); frac_mu_lt_1 and theta_q50 (means over seeds).
    """
    rows = []
    for key, g in runs.groupby(SUMMARY_KEYS, sort=False):
        row = dict(zip(SUMMARY_KEYS, key, strict=True))
        ref_id = g["reference"].iloc[0]
        ref = runs[(runs["dataset"] == row["dataset"]) & (runs["family"] == row["family"])
                   & (runs["head"] == row["head"]) & (runs["candidate"] == ref_id)]  # fmt: skip
        nll = g["heldout_nll"].to_numpy(dtype=np.float64)
        paired = g.merge(ref[["seed", "heldout_nll"]], on="seed", suffixes=("", "_ref"))
        diff = (paired["heldout_nll"] - paired["heldout_nll_ref"]).to_numpy(dtype=np.float64)
        n = len(nll)
        diff_mean = float(diff.mean()) if len(diff) else float("nan")
        diff_std = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
        row.update(
            reference=ref_id,
            seeds=n,
            ok_seeds=int(np.isfinite(nll).sum()),
            nonfinite_seeds=int((g["status"] == "nonfinite").sum()),
            nll_mean=float(nll.mean()),
            nll_std=float(nll.std(ddof=1)) if n > 1 else float("nan"),
            diff_mean=diff_mean,
            diff_std=diff_std,
            diff_exceeds_3sd=exceeds_seed_noise(diff_mean, diff_std),
            seconds_per_step=float(g["seconds_per_step"].mean()),
            frac_mu_lt_1=float(g["frac_mu_lt_1"].mean()),
            theta_q50=float(g["theta_q50"].mean()),
        )
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- output

OUTPUT_FILES: tuple[str, ...] = ("training_impact.csv", "training_summary.csv", "env.json")


def settings_record(settings: MaskedSettings) -> dict[str, Any]:
    """The settings as a JSON-ready dict."""
    rec = dataclasses.asdict(settings)
    rec["seeds"], rec["heads"] = list(settings.seeds), list(settings.heads)
    return rec


def write_training(
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    out: Path,
    settings: MaskedSettings,
    digests: dict[str, str | None] | None = None,
) -> tuple[Path, Path]:
    """Write training_impact.csv, training_summary.csv and env.json (the impact stage's
    section gains ``training``: the settings and the datasets' sha256; the section's other
    keys are kept) into ``out``, as one set (atomically); return the CSV paths."""
    paths = (out / "training_impact.csv", out / "training_summary.csv")
    section = _previous_impact_section(out)
    section["training"] = {"model": MODEL, "settings": settings_record(settings),
                           "datasets": dict(digests or {})}  # fmt: skip
    env_text = stage_env_text(out, "impact", environment_info(devices=(settings.device,)),
                              section)  # fmt: skip
    with atomic_paths(*paths, out / "env.json") as (runs_tmp, summary_tmp, env_tmp):
        csv_frame(runs).to_csv(runs_tmp, index=False)
        csv_frame(summary).to_csv(summary_tmp, index=False)
        env_tmp.write_text(env_text, encoding="utf-8")
    return paths


def _previous_impact_section(out: Path) -> dict[str, Any]:
    """The impact stage's own keys already in ``out/env.json`` (the per-gene run's), so
    that writing the training keys keeps them."""
    try:
        env = json.loads((out / "env.json").read_text(encoding="utf-8"))
        section = env["stages"]["impact"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(section, dict):
        return {}
    return {k: v for k, v in section.items() if k not in STAGE_KEYS and k != "training"}
