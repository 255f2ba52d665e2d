"""Certified float64 reference values of the NLLs and their gradients.

Public entry point: :func:`compute_references`. For each input point it returns the
family's quantities (``nll``, ``nll_loss``, ``d_lam`` or ``d_mu``/``d_theta``), each the
correctly rounded float64 of the exact value, plus a ``certified`` flag that is False
only where an engine could not settle a quantity within its precision cap (such values
must not be trusted; the accuracy runner excludes them).

Work is split into chunks of unique points, sorted so that the same set of points always
forms the same chunks. Each chunk is looked up in the content-addressed cache
(:mod:`ztbench.reference.cache`) and, when missing, computed by the engine on an executor
(:mod:`ztbench.io.executors`: this machine's process pool, or a Dask cluster) and stored by
this process as soon as it is done, so an interrupted run resumes where it stopped and
workers never touch the cache. A chunk's values do not depend on where it ran.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
from tqdm import tqdm

from ztbench.core.families import (
    TORCH_NB,
    Family,
    get_family,
    is_torch_nb,
    to_natural,
    validate_points,
)
from ztbench.core.schema import ENGINE_NAMES
from ztbench.io.errors import UserError
from ztbench.io.executors import Executor, LocalPool, active_executor
from ztbench.reference import arb_engine, mpmath_engine
from ztbench.reference.cache import ReferenceCache, chunk_key, default_cache_dir

ENGINES: dict[str, ModuleType] = {arb_engine.NAME: arb_engine, mpmath_engine.NAME: mpmath_engine}
assert tuple(ENGINES) == ENGINE_NAMES
CHUNK_POINTS = 1024
# Below this many points to compute, a local process pool costs more than it saves.
MIN_PARALLEL_POINTS = 4 * CHUNK_POINTS

__all__ = ["ENGINES", "compute_references", "engine_version"]


def engine_version(engine: str) -> str:
    """Version string of an engine (library version and algorithm revision)."""
    return _engine(engine).VERSION


def _engine(name: str) -> ModuleType:
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(
            f"unknown reference engine {name!r} (known: {', '.join(ENGINES)})"
        ) from None


def _run_chunks(
    args: tuple[str, str, list[np.ndarray], tuple],
) -> tuple[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Some chunks' (values, certified flags), and the engine version of the process.

    Runs on whichever worker gets the task. The version is the worker's own: a cluster
    worker with other library versions than the client's would otherwise file its values
    under the client's cache key.
    """
    engine, family, blocks, log_mask = args
    eng = ENGINES[engine]
    return eng.VERSION, [eng.evaluate_chunk(family, *b, log_mask=log_mask) for b in blocks]


def compute_references(
    family: Family | str,
    points: pd.DataFrame | Mapping[str, np.ndarray],
    engine: str = "arb",
    cache_dir: Path | str | bool | None = None,
    progress: bool | None = None,
    workers: int | None = None,
    log_params: tuple[str, ...] = (),
    executor: Executor | None = None,
) -> pd.DataFrame:
    """Certified reference quantities at each point.

    Args:
        family: "ztpoisson" / "ztnb" or a :class:`~ztbench.core.families.Family`.
        points: columns ``k`` and the family's parameters (float64-convertible); other
            columns are ignored.
        engine: "arb" (certified balls, fast) or "mpmath" (agreement of two precisions).
        cache_dir: cache directory; None for the default (:func:`default_cache_dir`),
            False to disable caching.
        progress: show a progress bar; None shows one only if the work lasts over 2 s.
        workers: worker processes of the local pool (default: the number of CPUs).
        log_params: parameters given as logarithms: ``points`` then has ``log_<p>``
            instead of ``p``; the quantities are taken at p = exp(log_p) exactly (inside
            the engine) and the gradients are ``d_log_<p>`` = p d/dp
            (:meth:`~ztbench.core.families.Family.quantities_for`).
        executor: where missing chunks run (default: the active executor of
            :func:`ztbench.io.executors.scheduler_scope`, else the local pool).

    Returns:
        A DataFrame aligned with ``points`` (same index for a DataFrame), with one float64
        column per quantity and a bool ``certified`` column. ``df.attrs["reference_stats"]``
        holds the numbers of unique, cached and computed points.

    Raises:
        ValueError: unknown family or engine, or an invalid point (the message names the row).
    """
    fam = family if isinstance(family, Family) else get_family(family)
    eng = _engine(engine)
    columns = fam.columns_for(log_params)
    quantities = fam.quantities_for(log_params)
    # which parameters are logs; the torch-nb parameterisation travels as its own name
    log_mask = (TORCH_NB,) if is_torch_nb(fam, log_params) else tuple(
        p in log_params for p in fam.params)  # fmt: skip
    for col in columns:
        if col not in points:
            raise ValueError(f"{fam.name}: missing column {col!r}")
    validate_points(fam, to_natural(fam, points, log_params) if log_params else points)
    index = points.index if isinstance(points, pd.DataFrame) else None
    table = np.column_stack([np.asarray(points[c], dtype=np.float64) for c in columns])
    nq = len(quantities)

    unique, inverse = np.unique(table, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    values = np.empty((nq, len(unique)), dtype=np.float64)
    certified = np.empty(len(unique), dtype=bool)

    cache = None
    if cache_dir is not False:
        cache = ReferenceCache(default_cache_dir() if cache_dir in (None, True) else cache_dir)

    starts = range(0, len(unique), CHUNK_POINTS)
    missing: list[tuple[int, str]] = []
    for start in starts:
        block = unique[start : start + CHUNK_POINTS]
        cols = [block[:, j] for j in range(block.shape[1])]
        key = chunk_key(fam.name, quantities, eng.NAME, eng.VERSION, cols)
        hit = cache.load(key, nq, len(block)) if cache is not None else None
        if hit is None:
            missing.append((start, key))
        else:
            values[:, start : start + len(block)], certified[start : start + len(block)] = hit

    n_missing = sum(min(CHUNK_POINTS, len(unique) - s) for s, _ in missing)
    if executor is None:
        executor = active_executor()
    if executor is None:
        executor = LocalPool(workers if n_missing >= MIN_PARALLEL_POINTS else 1)
    # Several chunks per task where the executor asks for it (a cluster's scheduler has a
    # cost per task); each chunk is still cached on its own, under its own key.
    per_task = executor.items_per_task(len(missing))
    groups = [missing[i : i + per_task] for i in range(0, len(missing), per_task)]
    tasks = [
        (eng.NAME, fam.name, [unique[s : s + CHUNK_POINTS].T.copy() for s, _ in g], log_mask)
        for g in groups
    ]
    keys = [f"ztref-{group[0][1]}-{len(group)}" for group in groups]
    bar = tqdm(
        total=n_missing,
        unit="pt",
        desc=f"references {fam.name} ({eng.NAME})",
        disable=progress is False or n_missing == 0,
        delay=0 if progress else 2,
        leave=False,
    )
    if tasks:
        results = executor.map_unordered(_run_chunks, tasks, keys=keys)
        with bar, contextlib.closing(results):
            # Each chunk is stored as it arrives (atomically): an interrupted run keeps
            # every finished chunk and no partial one.
            for i, (version, chunks) in results:
                if version != eng.VERSION:
                    raise UserError(
                        f"a worker computed references with {eng.NAME} {version}, this "
                        f"process has {eng.VERSION}: install the same versions on the workers"
                    )
                for (start, key), (vals, cert) in zip(groups[i], chunks, strict=True):
                    n = vals.shape[1]
                    values[:, start : start + n] = vals
                    certified[start : start + n] = cert
                    if cache is not None:
                        cache.store(key, vals, cert)
                    bar.update(n)

    out = pd.DataFrame({q: values[i, inverse] for i, q in enumerate(quantities)}, index=index)
    out["certified"] = certified[inverse]
    out.attrs["reference_stats"] = {
        "unique_points": len(unique),
        "cached_points": len(unique) - n_missing,
        "computed_points": n_missing,
        "engine": eng.NAME,
        "engine_version": eng.VERSION,
    }
    return out

