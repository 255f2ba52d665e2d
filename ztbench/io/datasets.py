"""The real UMI count matrices shipped with ztbench (package data), checksummed.

Each dataset is a NumPy ``.npz`` file in ``ztbench/data/`` holding a cells x genes count
matrix in CSR form and its labels (keys below), loaded with ``allow_pickle=False``.
:func:`load` checks the file's SHA-256 against the digest recorded here before reading
it, so a damaged or substituted file is an error, never a silently different benchmark.
Sources and licences are in the README ("Data").

Keys: ``counts_data`` (nonzero counts), ``counts_indices`` (column of each),
``counts_indptr`` (row pointers, length cells + 1), ``shape`` (cells, genes),
``gene_symbols``, ``gene_ids`` (one per column), ``barcodes`` (one per row).
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ztbench.io.errors import UserError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
# name -> sha256 of the shipped file (from the data's provenance record)
DATASETS: dict[str, str] = {
    "mouse_brain_10k": "8fb386b7082eb470699a9f8550a17e534e26a63c4b6a250049ff625c947bdbf1",
    "human_pbmc_1k_subset": "f84aa6fe5d018bbbb081d2e412bca3f2614f54230af4045cd449a8accd661eea",
}
KEYS = (
    "counts_data",
    "counts_indices",
    "counts_indptr",
    "shape",
    "gene_symbols",
    "gene_ids",
    "barcodes",
)


@dataclass(frozen=True)
class Dataset:
    """A count matrix and its labels.

    Attributes:
        name: the dataset's name (the file stem for a file given by path).
        counts: cells x genes ``scipy.sparse.csr_matrix`` of int64 counts.
        gene_symbols, gene_ids: one string per gene (column).
        barcodes: one string per cell (row).
        sha256: hex digest of the file's bytes.
    """

    name: str
    counts: sp.csr_matrix
    gene_symbols: np.ndarray
    gene_ids: np.ndarray
    barcodes: np.ndarray
    sha256: str


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dataset_path(name: str) -> Path:
    """Path of a shipped dataset; UserError listing the known names otherwise."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    return DATA_DIR / f"{name}.npz"


def resolve(spec: str) -> tuple[str, Path, str | None]:
    """(name, path, expected sha256 or None) for a shipped name or a path to an ``.npz``."""
    if not spec.strip():
        raise UserError(f"no dataset given (an empty name; known: {', '.join(DATASETS)})")
    if spec in DATASETS:
        return spec, dataset_path(spec), DATASETS[spec]
    path = Path(spec)
    if path.suffix == ".npz" or path.exists():
        return path.stem, path, None
    return spec, dataset_path(spec), None  # raises: unknown name


def load(spec: str) -> Dataset:
    """The dataset ``spec``: a shipped name (checksum verified) or a path to an ``.npz``.

    Raises :class:`~ztbench.io.errors.UserError` (one line naming the file and the problem)
    for an unknown name, a missing or unreadable file, a checksum mismatch, a missing key
    or inconsistent shapes.
    """
    name, path, expected = resolve(spec)
    if not path.is_file():
        raise UserError(f"{path}: no such dataset file")
    digest = file_sha256(path)
    if expected is not None and digest != expected:
        raise UserError(f"{path}: sha256 {digest} does not match the recorded {expected}")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise UserError(f"{path}: a single array (.npy), not an .npz archive of arrays")
        with npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                raise UserError(f"{path}: missing key {missing[0]!r} (expected: {', '.join(KEYS)})")
            arrays = {k: npz[k] for k in KEYS}
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # numpy's own text for a file it cannot parse suggests allow_pickle=True: never that
        why = "pickled data, refused" if "pickle" in str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a readable .npz archive of arrays ({why})") from None
    return _build(name, path, arrays, digest)


# the largest count accepted: what the certified references cover (k up to 1e7)
MAX_COUNT = 10**7


def _build(name: str, path: Path, a: dict[str, np.ndarray], digest: str) -> Dataset:
    """Check every array before scipy sees it (a bad index or row pointer makes its C code
    crash, not raise), then build the matrix; duplicate (cell, gene) entries are summed,
    as scipy's sparse formats define them."""
    raw_shape = np.asarray(a["shape"]).ravel()
    if (raw_shape.size != 2 or not np.issubdtype(raw_shape.dtype, np.integer)
            or (raw_shape < 0).any()):  # fmt: skip
        raise UserError(f"{path}: key 'shape' must hold two non-negative integers (cells, "
                        f"genes), got {raw_shape.tolist()}")  # fmt: skip
    n_cells, n_genes = (int(x) for x in raw_shape)
    shape = (n_cells, n_genes)
    data = np.asarray(a["counts_data"])
    indices = np.asarray(a["counts_indices"])
    indptr = np.asarray(a["counts_indptr"])
    for key, arr in (("counts_data", data), ("counts_indices", indices), ("counts_indptr", indptr)):
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise UserError(f"{path}: key {key!r} must be a 1-d integer array")
    if len(indptr) != n_cells + 1 or indptr[0] != 0 or indptr[-1] != len(data):
        raise UserError(f"{path}: key 'counts_indptr' does not match shape {shape}")
    if (np.diff(indptr.astype(np.int64)) < 0).any():
        raise UserError(f"{path}: key 'counts_indptr' is not non-decreasing")
    if len(indices) != len(data):
        raise UserError(f"{path}: keys 'counts_indices' and 'counts_data' differ in length")
    if len(data):
        # compared before any cast: uint64 values past 2^63 would wrap to negative int64
        if (indices < 0).any() or (indices >= n_genes).any():
            raise UserError(f"{path}: key 'counts_indices' holds a gene index outside "
                            f"0..{n_genes - 1}")  # fmt: skip
        if (data < 0).any():
            raise UserError(f"{path}: key 'counts_data' holds a negative count: not counts")
        if (data > MAX_COUNT).any():
            raise UserError(f"{path}: key 'counts_data' holds a count above {MAX_COUNT:.0e} "
                            "(the references' domain)")  # fmt: skip
    labels = {}
    for key, n in (("gene_symbols", n_genes), ("gene_ids", n_genes), ("barcodes", n_cells)):
        arr = np.asarray(a[key])
        if arr.shape != (n,) or arr.dtype.kind not in "US":
            raise UserError(f"{path}: key {key!r} must hold {n} strings")
        labels[key] = arr.astype(str)
    counts = sp.csr_matrix(
        (data.astype(np.int64), indices.astype(np.int64), indptr.astype(np.int64)), shape=shape
    )
    counts.sum_duplicates()
    return Dataset(name=name, counts=counts, sha256=digest, **labels)
