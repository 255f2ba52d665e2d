"""Count matrices: the real UMI count matrices shipped with ztbench (package data,
checksummed), and the user's own in the common single-cell formats.

Each shipped dataset is a NumPy ``.npz`` file in ``ztbench/data/`` holding a cells x genes
count matrix in CSR form and its labels (keys below), loaded with ``allow_pickle=False``.
:func:`load` checks the file's SHA-256 against the digest recorded here before reading
it, so a damaged or substituted file is an error, never a silently different benchmark.
Sources and licences are in the README ("Data").

Keys: ``counts_data`` (nonzero counts), ``counts_indices`` (column of each),
``counts_indptr`` (row pointers, length cells + 1), ``shape`` (cells, genes),
``gene_symbols``, ``gene_ids`` (one per column), ``barcodes`` (one per row).

A DATASET given by path may also be (see :func:`load` for each layout):

- a 10x Genomics matrix directory: ``matrix.mtx[.gz]`` (genes x cells),
  ``features.tsv[.gz]`` or ``genes.tsv[.gz]``, and ``barcodes.tsv[.gz]``;
- a MatrixMarket file ``*.mtx`` or ``*.mtx.gz`` (cells x genes, unless its sidecar files
  say genes x cells);
- an AnnData file ``*.h5ad`` or a Cell Ranger HDF5 file ``*.h5`` (these need h5py: the
  ``h5`` extra).

Every format is turned into the arrays above and checked by one function (:func:`_build`),
so each check (counts only, no empty matrix, labels matching the matrix...) has one
implementation and one message, which names the file.
"""

from __future__ import annotations

import csv
import hashlib
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ztbench.io.errors import UserError, os_error_text

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
# file name endings read as a dataset path (a directory is a 10x matrix directory)
MTX_SUFFIXES = (".mtx", ".mtx.gz")
H5_SUFFIXES = (".h5ad", ".h5", ".hdf5")
SUFFIXES = (".npz", *MTX_SUFFIXES, *H5_SUFFIXES)
# the feature type kept where a matrix lists several (10x: antibodies, CRISPR guides...)
GENE_EXPRESSION = "Gene Expression"
# the errors that reading a damaged file raises (beyond UserError)
_READ_ERRORS = (OSError, EOFError, ValueError, OverflowError, KeyError, TypeError, zlib.error)


@dataclass(frozen=True)
class Dataset:
    """A count matrix and its labels.

    Attributes:
        name: the dataset's name (the file's stem, or the directory's name, for a path).
        counts: cells x genes ``scipy.sparse.csr_matrix`` of int64 counts.
        gene_symbols, gene_ids: one string per gene (column).
        barcodes: one string per cell (row).
        sha256: hex digest of the file's bytes (for a matrix read with sidecar files, of
            each file's name and digest, in order: matrix, features, barcodes).
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


def _digest(path: Path, files: list[Path] | None = None) -> str:
    """``path``'s SHA-256 or, given ``files``, the SHA-256 of their names and digests;
    UserError (one line, naming ``path``) when a file cannot be read."""
    try:
        if files is None:
            return file_sha256(path)
        lines = "".join(f"{f.name}\t{file_sha256(f)}\n" for f in files)
    except OSError as exc:
        raise UserError(os_error_text(path, exc, "cannot read")) from None
    return hashlib.sha256(lines.encode()).hexdigest()


def dataset_path(name: str) -> Path:
    """Path of a shipped dataset; UserError listing the known names otherwise."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    return DATA_DIR / f"{name}.npz"


def _suffix(path: Path) -> str:
    """The format's file name ending of ``path`` (lower case; '' for none known)."""
    low = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if low.endswith(s)), "")


def _stem(path: Path) -> str:
    """The dataset name of a path: the name less its format ending (the directory's name
    for a 10x ``matrix.mtx`` file)."""
    suffix = _suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.stem
    if suffix in MTX_SUFFIXES and stem == "matrix" and path.parent.name:
        return path.parent.name
    return stem or path.name


def resolve(spec: str) -> tuple[str, Path, str | None]:
    """(name, path, expected sha256 or None) for a shipped name or a path (a file of a
    known format, see :data:`SUFFIXES`, or any existing file or directory)."""
    if not spec.strip():
        raise UserError(f"no dataset given (an empty name; known: {', '.join(DATASETS)})")
    if spec in DATASETS:
        return spec, dataset_path(spec), DATASETS[spec]
    path = Path(spec)
    if _suffix(path) or path.exists():
        return _stem(path), path, None
    return spec, dataset_path(spec), None  # raises: unknown name


def load(spec: str) -> Dataset:
    """The dataset ``spec``: a shipped name (checksum verified) or a path.

    A path is read by its form:

    - a directory: a 10x Genomics matrix directory (:func:`_load_mtx`): ``matrix.mtx`` or
      ``matrix.mtx.gz`` holding genes x cells, ``features.tsv[.gz]`` (or ``genes.tsv[.gz]``,
      Cell Ranger < 3) with one row per gene (id, symbol, feature type) and
      ``barcodes.tsv[.gz]`` with one per cell;
    - ``*.mtx``, ``*.mtx.gz``: a MatrixMarket file, cells x genes, with optional sidecar
      files beside it (:func:`_load_mtx`);
    - ``*.h5ad``, ``*.h5``, ``*.hdf5``: an AnnData or Cell Ranger HDF5 file
      (:func:`_load_h5`, needs h5py);
    - anything else: a NumPy ``.npz`` with the keys in :data:`KEYS`.

    Only "Gene Expression" features are kept where the file lists feature types. Raises
    :class:`~ztbench.io.errors.UserError` (one line naming the file and the problem) for
    an unknown name, a missing or unreadable file, a checksum mismatch, a missing key or
    sidecar file, labels that do not match the matrix, values that are not counts
    (negative, non-integer, not finite) and an empty matrix.
    """
    name, path, expected = resolve(spec)
    if path.is_dir():
        return _load_mtx(name, path)
    if not path.is_file():
        raise UserError(f"{path}: no such dataset file")
    suffix = _suffix(path)
    if suffix in MTX_SUFFIXES:
        return _load_mtx(name, path)
    if suffix in H5_SUFFIXES:
        return _load_h5(name, path)
    return _load_npz(name, path, expected)


def _load_npz(name: str, path: Path, expected: str | None) -> Dataset:
    """An ``.npz`` archive with the keys in :data:`KEYS` (``allow_pickle=False``)."""
    digest = _digest(path)
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


def _why(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 120 characters) for an error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__


# ------------------------------------------------------------------------------ MatrixMarket


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` that is a file in ``folder``."""
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _gz_or_plain(prefix: str, *stems: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{s}{gz}" for s in stems for gz in (".gz", ""))


def _read_tsv(path: Path, where: Path) -> list[np.ndarray]:
    """The columns (strings) of a headerless tab-separated file (gzip if it ends in .gz);
    an empty file has one column of no rows."""
    import pandas as pd

    try:
        table = pd.read_csv(path, sep="\t", header=None, dtype=str, na_filter=False,
                            quoting=csv.QUOTE_NONE, compression="infer")  # fmt: skip
    except pd.errors.EmptyDataError:
        return [np.array([], dtype=str)]
    except (*_READ_ERRORS, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: {path.name} is not a readable tab-separated file "
                        f"({_why(exc)})") from None  # fmt: skip
    return [table[c].to_numpy(dtype=str) for c in table.columns]


def _read_mtx(path: Path, where: Path) -> sp.csr_matrix:
    """The matrix of a MatrixMarket file as written (rows x columns), integer or real."""
    import scipy.io

    try:
        field = scipy.io.mminfo(path)[4]
        if field not in ("integer", "unsigned-integer", "real"):
            raise UserError(f"{where}: {path.name} holds {field} values, not counts")
        m = scipy.io.mmread(path)
    except UserError:
        raise
    except _READ_ERRORS as exc:
        raise UserError(f"{where}: {path.name} is not a readable MatrixMarket file "
                        f"({_why(exc)})") from None  # fmt: skip
    return sp.csr_matrix(m)  # built by scipy from checked entries: safe to handle


def _labels_fit(
    feat: list[np.ndarray] | None, bars: np.ndarray | None, n_genes: int, n_cells: int
) -> bool:
    """Whether the sidecar files (those there) have one row per gene and one per cell."""
    return (feat is None or len(feat[0]) == n_genes) and (bars is None or len(bars) == n_cells)


def _load_mtx(name: str, path: Path) -> Dataset:
    """A MatrixMarket matrix: a 10x directory (``path`` a directory) or a file.

    Directory (as Cell Ranger writes it): ``matrix.mtx.gz`` or ``matrix.mtx`` holding genes
    x cells; ``features.tsv[.gz]`` (or ``genes.tsv[.gz]``), one row per gene: id, symbol
    (the id where there is no second column) and feature type (optional; only "Gene
    Expression" rows are kept); ``barcodes.tsv[.gz]``, one barcode per cell (first column).
    All three must be there.

    File ``P/<prefix>matrix.mtx[.gz]`` or ``P/<name>.mtx[.gz]``: the sidecar files
    ``P/<prefix>features.tsv[.gz]`` (or ``genes.tsv[.gz]``) and ``P/<prefix>barcodes.tsv[.gz]``
    are read where they exist (``<prefix>`` may be empty, or a GEO sample's ``GSM..._``);
    a file not named ``*matrix.mtx`` has none. The matrix is cells x genes, unless the
    sidecar files match genes x cells (the features as many as its rows, the barcodes as
    many as its columns) and do not match cells x genes. Without a sidecar file, genes are
    named ``gene1``... and cells ``cell1``... (1-based, as MatrixMarket numbers them).
    """
    if path.is_dir():
        mtx = _first(path, _gz_or_plain("", "matrix.mtx"))
        features = _first(path, _gz_or_plain("", "features.tsv", "genes.tsv"))
        barcodes = _first(path, _gz_or_plain("", "barcodes.tsv"))
        if mtx is None or features is None or barcodes is None:
            lack = ("matrix.mtx[.gz]" if mtx is None else
                    "features.tsv[.gz] or genes.tsv[.gz]" if features is None else
                    "barcodes.tsv[.gz]")  # fmt: skip
            raise UserError(f"{path}: not a 10x matrix directory (no {lack}; expected matrix"
                            ".mtx[.gz], features.tsv[.gz] and barcodes.tsv[.gz])")  # fmt: skip
    else:
        mtx, features, barcodes = path, None, None
        low = path.name.lower()
        for suffix in ("matrix.mtx.gz", "matrix.mtx"):
            if low.endswith(suffix):
                prefix = path.name[: len(path.name) - len(suffix)]
                features = _first(path.parent, _gz_or_plain(prefix, "features.tsv", "genes.tsv"))
                barcodes = _first(path.parent, _gz_or_plain(prefix, "barcodes.tsv"))
                break
    m = _read_mtx(mtx, path)
    feat = _read_tsv(features, path) if features is not None else None
    bars = _read_tsv(barcodes, path)[0] if barcodes is not None else None
    rows, cols = m.shape
    named = feat is not None or bars is not None
    genes_x_cells = _labels_fit(feat, bars, rows, cols) and not _labels_fit(feat, bars, cols, rows)
    by_genes = path.is_dir() or (named and genes_x_cells)
    counts = m.T.tocsr() if by_genes else m
    n_cells, n_genes = counts.shape
    arrays: dict[str, np.ndarray] = {
        "counts_data": counts.data,
        "counts_indices": counts.indices,
        "counts_indptr": counts.indptr,
        "shape": np.array([n_cells, n_genes]),
    }
    labels = {"counts_data": mtx.name if path.is_dir() else "the matrix"}
    if feat is None:
        arrays["gene_ids"] = arrays["gene_symbols"] = np.array(
            [f"gene{j + 1}" for j in range(n_genes)], dtype=str
        )
    else:
        arrays["gene_ids"] = feat[0]
        arrays["gene_symbols"] = feat[1] if len(feat) > 1 else feat[0]
        labels["gene_ids"] = f"{features.name} (column 1: gene ids)"
        labels["gene_symbols"] = f"{features.name} (column {min(len(feat), 2)}: symbols)"
        if len(feat) > 2:
            arrays["feature_types"] = feat[2]
            labels["feature_types"] = f"{features.name} (column 3: feature types)"
    if bars is None:
        arrays["barcodes"] = np.array([f"cell{i + 1}" for i in range(n_cells)], dtype=str)
    else:
        arrays["barcodes"] = bars
        labels["barcodes"] = barcodes.name
    files = [f for f in (mtx, features, barcodes) if f is not None]
    digest = _digest(path, files) if len(files) > 1 else _digest(mtx)
    return _build(name, path, arrays, digest, labels)


# -------------------------------------------------------------------------------------- HDF5


def _h5_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _h5_node(f: Any, key: str, path: Path, layout: str) -> Any:
    """``f[key]``; UserError naming the key and the expected layout when it is missing."""
    if key not in f:
        raise UserError(f"{path}: no {key!r} in this HDF5 file (expected {layout})")
    return f[key]


def _h5_strings(node: Any) -> np.ndarray:
    """A 1-d string dataset as a str array; other data as it is (the checks name it);
    an AnnData categorical (group of codes and categories) as its values."""
    import h5py

    if isinstance(node, h5py.Group) and "codes" in node and "categories" in node:
        cats = np.append(_h5_strings(node["categories"]), "")  # code -1: missing
        codes = np.asarray(node["codes"][()]).astype(np.int64)
        return cats[np.where(codes < 0, len(cats) - 1, np.minimum(codes, len(cats) - 1))]
    if not isinstance(node, h5py.Dataset):
        return np.array(None)  # not strings: the checks say so
    if node.dtype.kind == "S" or h5py.check_string_dtype(node.dtype) is not None:
        return np.asarray(node.asstr()[()], dtype=str)
    return np.asarray(node[()])


def _h5ad_column(frame: Any, column: str | None) -> np.ndarray | None:
    """A column (None: the index) of an AnnData ``obs``/``var`` frame, or None if absent.

    AnnData >= 0.7 writes a group (the index's column named by its ``_index`` attribute);
    older versions a compound dataset with an ``index`` field.
    """
    import h5py

    if isinstance(frame, h5py.Group):
        key = _h5_text(frame.attrs.get("_index", "_index")) if column is None else column
        return _h5_strings(frame[key]) if key in frame else None
    names = frame.dtype.names or ()
    key = "index" if column is None else column
    if key not in names:
        return None
    values = frame.fields(key)[()]
    return values.astype(str) if values.dtype.kind in "SUO" else values


def _h5ad_arrays(f: Any, path: Path) -> tuple[dict[str, np.ndarray], dict[str, str], bool]:
    """(arrays, labels, by_gene) of an AnnData file's counts: ``layers/counts`` if there
    (where scanpy users keep the raw counts), else ``X``; sparse (csr_matrix or csc_matrix
    group: data, indices, indptr, attribute shape) or a dense 2-d dataset."""
    import h5py

    layout = "an AnnData file: X, obs and var"
    node = (
        f["layers/counts"]
        if "layers" in f and "counts" in f["layers"]
        else _h5_node(f, "X", path, layout)
    )
    where = node.name.lstrip("/")
    labels = {k: f"{where}/{k.split('_')[-1]}" for k in ("counts_data", "counts_indices",
                                                        "counts_indptr")}  # fmt: skip
    labels["shape"] = f"{where} (shape attribute)"
    if isinstance(node, h5py.Dataset):
        dense = np.asarray(node[()])
        if dense.ndim != 2 or dense.dtype.kind not in "iuf":
            raise UserError(f"{path}: {where} must be a 2-d matrix of numbers, got "
                            f"{dense.ndim}-d {dense.dtype}")  # fmt: skip
        m = sp.csr_matrix(dense)
        arrays = {"counts_data": m.data, "counts_indices": m.indices,
                  "counts_indptr": m.indptr, "shape": np.array(m.shape)}  # fmt: skip
        labels["counts_data"] = where
        by_gene = False
    else:
        kind = _h5_text(node.attrs.get("encoding-type", node.attrs.get("h5sparse_format", "")))
        if kind not in ("csr_matrix", "csc_matrix", "csr", "csc"):
            raise UserError(f"{path}: {where} is neither a csr_matrix nor a csc_matrix group "
                            f"(encoding-type {kind!r})")  # fmt: skip
        arrays = {f"counts_{k}": np.asarray(_h5_node(node, k, path, layout)[()])
                  for k in ("data", "indices", "indptr")}  # fmt: skip
        arrays["shape"] = np.asarray(node.attrs.get("shape", node.attrs.get("h5sparse_shape")))
        by_gene = kind.startswith("csc")
    obs, var = _h5_node(f, "obs", path, layout), _h5_node(f, "var", path, layout)
    symbols, barcodes = _h5ad_column(var, None), _h5ad_column(obs, None)
    ids = _h5ad_column(var, "gene_ids")
    arrays["gene_symbols"] = np.array(None) if symbols is None else symbols
    arrays["gene_ids"] = arrays["gene_symbols"] if ids is None else ids
    arrays["barcodes"] = np.array(None) if barcodes is None else barcodes
    labels.update(gene_symbols="var's index", gene_ids="var/gene_ids" if ids is not None
                  else "var's index", barcodes="obs's index")  # fmt: skip
    types = _h5ad_column(var, "feature_types")
    if types is not None:
        arrays["feature_types"], labels["feature_types"] = types, "var/feature_types"
    return arrays, labels, by_gene


def _tenx_h5_arrays(f: Any, path: Path) -> tuple[dict[str, np.ndarray], dict[str, str], bool]:
    """(arrays, labels, by_gene) of a Cell Ranger HDF5 file: ``matrix/`` (v3: data,
    indices, indptr, shape, barcodes, features/id, features/name, features/feature_type)
    or the one genome group of v2 (genes, gene_names). The matrix is genes x cells in CSC
    form, i.e. cells x genes in CSR form (indptr over cells, indices of genes)."""
    import h5py

    layout = "a Cell Ranger HDF5 file: matrix/data, indices, indptr, shape, barcodes, features"
    if "matrix" in f:
        g = f["matrix"]
    else:  # Cell Ranger 2: one group per genome
        groups = [g for g in f.values() if isinstance(g, h5py.Group) and "indptr" in g]
        if len(groups) != 1:
            raise UserError(f"{path}: no 'matrix' group in this HDF5 file (expected {layout}"
                            " or an AnnData file's X)")  # fmt: skip
        g = groups[0]
    where = g.name.lstrip("/")
    arrays = {f"counts_{k}": np.asarray(_h5_node(g, k, path, layout)[()])
              for k in ("data", "indices", "indptr")}  # fmt: skip
    arrays["shape"] = np.asarray(_h5_node(g, "shape", path, layout)[()]).ravel()[::-1]
    labels = {f"counts_{k}": f"{where}/{k}" for k in ("data", "indices", "indptr")}
    labels["shape"] = f"{where}/shape (reversed: cells, genes)"
    labels["barcodes"] = f"{where}/barcodes"
    arrays["barcodes"] = _h5_strings(_h5_node(g, "barcodes", path, layout))
    if "features" in g:
        fg = g["features"]
        for key, col in (("gene_ids", "id"), ("gene_symbols", "name"),
                         ("feature_types", "feature_type")):  # fmt: skip
            if col in fg or key != "feature_types":
                arrays[key] = _h5_strings(_h5_node(fg, col, path, layout))
                labels[key] = f"{where}/features/{col}"
    else:
        arrays["gene_ids"] = _h5_strings(_h5_node(g, "genes", path, layout))
        labels["gene_ids"] = f"{where}/genes"
        names = "gene_names" if "gene_names" in g else "genes"
        arrays["gene_symbols"], labels["gene_symbols"] = _h5_strings(g[names]), f"{where}/{names}"
    return arrays, labels, False


def _load_h5(name: str, path: Path) -> Dataset:
    """An HDF5 file, read with h5py: an AnnData file when it holds ``X`` (or
    ``layers/counts``), else a Cell Ranger one (see :func:`_h5ad_arrays` and
    :func:`_tenx_h5_arrays`); UserError naming the extra to install without h5py."""
    fmt = ".h5ad (AnnData)" if path.name.lower().endswith(".h5ad") else ".h5 (10x HDF5)"
    try:
        import h5py
    except ImportError:
        raise UserError(f"{path}: reading {fmt} files needs h5py, which is not installed "
                        "(pip install 'ztbench[h5]')") from None  # fmt: skip
    digest = _digest(path)
    try:
        with h5py.File(path, "r") as f:
            if "X" in f or "layers" in f:
                arrays, labels, by_gene = _h5ad_arrays(f, path)
            else:
                arrays, labels, by_gene = _tenx_h5_arrays(f, path)
    except UserError:
        raise
    except _READ_ERRORS as exc:
        raise UserError(f"{path}: not a readable {fmt} file ({_why(exc)})") from None
    return _build(name, path, arrays, digest, labels, by_gene)


# ------------------------------------------------------------------------- the one checker

# the largest count accepted: what the certified references cover (k up to 1e7)
MAX_COUNT = 10**7


def _build(
    name: str,
    path: Path,
    a: dict[str, np.ndarray],
    digest: str,
    labels: Mapping[str, str] | None = None,
    by_gene: bool = False,
) -> Dataset:
    """Check every array before scipy sees it (a bad index or row pointer makes its C code
    crash, not raise), then build the matrix; duplicate (cell, gene) entries are summed,
    as scipy's sparse formats define them.

    ``a`` holds the arrays of :data:`KEYS` (``counts_data`` integer or floating point:
    values must be finite, non-negative whole numbers) and optionally ``feature_types``
    (one per gene: only "Gene Expression" genes are kept). ``labels`` names each key in
    the messages (default: ``key 'counts_data'``...). ``by_gene``: the matrix is given in
    CSC form (indptr over genes, indices of cells) rather than CSR.
    """
    lab = {k: f"key {k!r}" for k in (*KEYS, "feature_types")} | dict(labels or {})
    raw_shape = np.asarray(a["shape"]).ravel()
    if (raw_shape.size != 2 or not np.issubdtype(raw_shape.dtype, np.integer)
            or (raw_shape < 0).any()):  # fmt: skip
        raise UserError(f"{path}: {lab['shape']} must hold two non-negative integers (cells, "
                        f"genes), got {raw_shape.tolist()}")  # fmt: skip
    n_cells, n_genes = (int(x) for x in raw_shape)
    shape = (n_cells, n_genes)
    n_major, n_minor, minor = (n_genes, n_cells, "cell") if by_gene else (n_cells, n_genes, "gene")
    data = np.asarray(a["counts_data"])
    indices = np.asarray(a["counts_indices"])
    indptr = np.asarray(a["counts_indptr"])
    for key, arr in (("counts_indices", indices), ("counts_indptr", indptr)):
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise UserError(f"{path}: {lab[key]} must be a 1-d integer array")
    if data.ndim != 1 or data.dtype.kind not in "iuf":
        raise UserError(f"{path}: {lab['counts_data']} must be a 1-d array of numbers")
    if len(indptr) != n_major + 1 or indptr[0] != 0 or indptr[-1] != len(data):
        raise UserError(f"{path}: {lab['counts_indptr']} does not match shape {shape}")
    if (np.diff(indptr.astype(np.int64)) < 0).any():
        raise UserError(f"{path}: {lab['counts_indptr']} is not non-decreasing")
    if len(indices) != len(data):
        raise UserError(f"{path}: {lab['counts_indices']} and {lab['counts_data']} differ in "
                        "length")  # fmt: skip
    # compared before any cast: uint64 values past 2^63 would wrap to negative int64
    if len(data) and ((indices < 0).any() or (indices >= n_minor).any()):
        raise UserError(f"{path}: {lab['counts_indices']} holds a {minor} index outside "
                        f"0..{n_minor - 1}")  # fmt: skip
    names: dict[str, np.ndarray] = {}
    wanted = [("gene_symbols", n_genes, "gene"), ("gene_ids", n_genes, "gene"),
              ("barcodes", n_cells, "cell")]  # fmt: skip
    if a.get("feature_types") is not None:
        wanted.append(("feature_types", n_genes, "gene"))
    for key, n, each in wanted:
        arr = np.asarray(a[key])
        if arr.shape != (n,) or arr.dtype.kind not in "US":
            got = f"{len(arr)}" if arr.ndim == 1 and arr.dtype.kind in "US" else (
                f"a {arr.ndim}-d {arr.dtype} array")  # fmt: skip
            raise UserError(f"{path}: {lab[key]} must hold {n} strings (one per {each}), "
                            f"got {got}")  # fmt: skip
        names[key] = arr.astype(str)

    def bad(mask: np.ndarray, what: str) -> None:
        """UserError for the values of ``data`` under ``mask``: how many, and the first."""
        if not mask.any():
            return
        p = int(np.flatnonzero(mask)[0])
        major = int(np.searchsorted(indptr, p, side="right")) - 1
        cell, gene = (int(indices[p]), major) if by_gene else (major, int(indices[p]))
        raise UserError(
            f"{path}: {lab['counts_data']} holds {what}: not counts ({int(mask.sum())} in all, "
            f"e.g. {data[p].item()!r} for cell {str(names['barcodes'][cell])!r}, gene "
            f"{str(names['gene_symbols'][gene])!r})"
        )

    if data.dtype.kind == "f":
        bad(~np.isfinite(data), "a value that is not finite")
    bad(data < 0, "a negative count")
    if data.dtype.kind == "f":
        bad(data != np.floor(data), "a non-integer value")
    if len(data) and (data > MAX_COUNT).any():
        raise UserError(f"{path}: {lab['counts_data']} holds a count above {MAX_COUNT:.0e} "
                        "(the references' domain)")  # fmt: skip
    counts = (sp.csc_matrix if by_gene else sp.csr_matrix)(
        (data.astype(np.int64), indices.astype(np.int64), indptr.astype(np.int64)), shape=shape
    ).tocsr()
    counts.sum_duplicates()
    types = names.pop("feature_types", None)
    if types is not None and (types != GENE_EXPRESSION).any():
        keep = np.flatnonzero(types == GENE_EXPRESSION)
        if not len(keep):
            listed = ", ".join(sorted(set(types.tolist()))[:5])
            raise UserError(f"{path}: no {GENE_EXPRESSION!r} feature ({lab['feature_types']} "
                            f"lists: {listed})")  # fmt: skip
        counts = counts[:, keep].tocsr()
        names = {k: v[keep] if k != "barcodes" else v for k, v in names.items()}
    size = f"{counts.shape[0]} cells x {counts.shape[1]} genes"
    if min(counts.shape) == 0:
        raise UserError(f"{path}: empty matrix ({size})")
    if not counts.count_nonzero():
        raise UserError(f"{path}: empty matrix ({size}, no nonzero count)")
    return Dataset(name=name, counts=counts, sha256=digest, **names)
