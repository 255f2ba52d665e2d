"""Your own count matrices: 10x MatrixMarket directories, plain .mtx files, .h5ad and
Cell Ranger .h5 files load to exactly the counts written, and bad input is one line."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from ztbench.cli import main
from ztbench.io import datasets
from ztbench.io.errors import UserError

# cells x genes, as load() gives them
COUNTS = np.array(
    [
        [0, 3, 0, 1, 7],
        [2, 0, 0, 0, 1],
        [0, 0, 5, 0, 0],
        [1, 1, 0, 12, 0],
    ]
)
SYMBOLS = ["Xkr4", "Gm1992", "Rp1", "Sox17", "Mrpl15"]
IDS = [f"ENSMUSG0000{i}" for i in range(5)]
BARCODES = ["AAAC-1", "AAAG-1", "AACT-1", "AAGT-1"]
# the 10x files list an antibody between the genes: it is dropped
ANTIBODY_AT, ANTIBODY = 2, np.array([[9], [0], [4], [2]])
FULL = np.hstack([COUNTS[:, :ANTIBODY_AT], ANTIBODY, COUNTS[:, ANTIBODY_AT:]])
FEATURES = [[i, s, "Gene Expression"] for i, s in zip(IDS, SYMBOLS, strict=True)]
FEATURES.insert(ANTIBODY_AT, ["CD3", "CD3_TotalSeqB", "Antibody Capture"])


def _mtx(matrix: np.ndarray, field: str | None = None) -> bytes:
    """A coordinate MatrixMarket file of ``matrix`` as it is (rows x columns)."""
    field = field or ("integer" if matrix.dtype.kind in "iu" else "real")
    rows, cols = np.nonzero(matrix)
    lines = [f"%%MatrixMarket matrix coordinate {field} general", "% written by a test"]
    lines.append(f"{matrix.shape[0]} {matrix.shape[1]} {len(rows)}")
    lines += [f"{r + 1} {c + 1} {matrix[r, c].item()!r}" for r, c in zip(rows, cols, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def _write(path: Path, blob: bytes) -> Path:
    path.write_bytes(gzip.compress(blob) if path.name.endswith(".gz") else blob)
    return path


def _tsv(rows: list[list[str]] | list[str]) -> bytes:
    return "".join("\t".join(r if isinstance(r, list) else [r]) + "\n" for r in rows).encode()


def _tenx_dir(
    root: Path,
    counts: np.ndarray = FULL,
    features: list[list[str]] = FEATURES,
    barcodes: list[str] = BARCODES,
    gz: bool = True,
) -> Path:
    """A Cell Ranger matrix directory: the matrix genes x cells, as 10x writes it."""
    d = root / "filtered_feature_bc_matrix"
    d.mkdir()
    ext = ".gz" if gz else ""
    _write(d / f"matrix.mtx{ext}", _mtx(counts.T))
    _write(d / f"{'features' if len(features[0]) > 2 else 'genes'}.tsv{ext}", _tsv(features))
    _write(d / f"barcodes.tsv{ext}", _tsv(barcodes))
    return d


def _check(ds: datasets.Dataset, symbols=SYMBOLS, ids=IDS, barcodes=BARCODES, counts=COUNTS):
    assert isinstance(ds.counts, sp.csr_matrix) and ds.counts.dtype == np.int64
    np.testing.assert_array_equal(ds.counts.toarray(), counts)
    assert ds.gene_symbols.tolist() == list(symbols)
    assert ds.gene_ids.tolist() == list(ids)
    assert ds.barcodes.tolist() == list(barcodes)
    assert len(ds.sha256) == 64


def _one_line_error(spec: Path | str, *needles: str) -> str:
    with pytest.raises(UserError) as info:
        datasets.load(str(spec))
    msg = str(info.value)
    assert "\n" not in msg and str(spec) in msg, msg
    for needle in needles:
        assert needle in msg, msg
    return msg


# ------------------------------------------------------------------------------ MatrixMarket


@pytest.mark.parametrize("gz", [True, False])
def test_10x_directory(tmp_path, gz):
    d = _tenx_dir(tmp_path, gz=gz)
    ds = datasets.load(str(d))
    _check(ds)
    assert ds.name == "filtered_feature_bc_matrix"
    # the matrix file itself, named as 10x names it: the same data (the sidecars say genes x
    # cells), named after its directory
    same = datasets.load(str(next(d.glob("matrix.mtx*"))))
    _check(same)
    assert same.name == ds.name and same.sha256 == ds.sha256


def test_10x_v2_genes_tsv_two_columns(tmp_path):
    d = _tenx_dir(tmp_path, counts=COUNTS, features=[r[:2] for r in FEATURES if r[0] != "CD3"])
    assert (d / "genes.tsv.gz").is_file()
    _check(datasets.load(str(d)))


def test_plain_mtx_is_cells_by_genes_with_numbered_names(tmp_path):
    path = _write(tmp_path / "counts.mtx.gz", _mtx(COUNTS.astype(np.float64)))  # real field
    ds = datasets.load(str(path))
    _check(ds, symbols=[f"gene{j}" for j in range(1, 6)], ids=[f"gene{j}" for j in range(1, 6)],
           barcodes=[f"cell{i}" for i in range(1, 5)])  # fmt: skip
    assert ds.name == "counts" and ds.sha256 == datasets.file_sha256(path)


@pytest.mark.parametrize("genes_by_cells", [True, False])
def test_plain_mtx_sidecars_decide_the_orientation(tmp_path, genes_by_cells):
    # GEO style: a sample prefix on each file
    _write(tmp_path / "GSM1_matrix.mtx.gz", _mtx(FULL.T if genes_by_cells else FULL))
    _write(tmp_path / "GSM1_features.tsv.gz", _tsv(FEATURES))
    _write(tmp_path / "GSM1_barcodes.tsv.gz", _tsv(BARCODES))
    _check(datasets.load(str(tmp_path / "GSM1_matrix.mtx.gz")))


def test_missing_mtx_path_is_no_such_file_not_unknown_name(tmp_path):
    _one_line_error(tmp_path / "nope.mtx.gz", "no such dataset file")


def _negative(c):
    c[1, 0] = -2


def _half(c):
    c[3, 3] = 0.5


def _nan(c):
    c[0, 1] = np.nan


def _inf(c):
    c[2, 5] = np.inf


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (_negative, ["holds a negative count: not counts (1 in all, e.g. -2 for cell "
                     "'AAAG-1', gene 'Xkr4')"]),
        (_half, ["a non-integer value: not counts (1 in all, e.g. 0.5 for cell 'AAGT-1', "
                 "gene 'Rp1')"]),
        (_nan, ["a value that is not finite: not counts", "nan for cell 'AAAC-1', gene 'Gm1992'"]),
        (_inf, ["a value that is not finite", "inf for cell 'AACT-1', gene 'Mrpl15'"]),
        (lambda c: c.fill(0), ["empty matrix (4 cells x 5 genes, no nonzero count)"]),
        (lambda c: c.__setitem__((slice(None), slice(None)), c * 10**7), ["count above 1e+07"]),
    ],
)  # fmt: skip
def test_10x_directory_not_counts(tmp_path, change, needles):
    counts = FULL.astype(np.float64) if change in (_half, _nan, _inf) else FULL.copy()
    change(counts)
    d = _tenx_dir(tmp_path, counts=counts)
    msg = _one_line_error(d, *needles)
    assert "empty" in msg or "matrix.mtx.gz holds" in msg  # the file within the directory


def test_10x_directory_bad_files(tmp_path):
    d = _tenx_dir(tmp_path)
    _write(d / "features.tsv.gz", _tsv(FEATURES[:-1]))
    _one_line_error(d, "features.tsv.gz (column 2: symbols) must hold 6 strings (one per "
                       "gene), got 5")  # fmt: skip
    _write(d / "features.tsv.gz", _tsv(FEATURES))
    _write(d / "barcodes.tsv.gz", _tsv([*BARCODES, "TTTT-1"]))
    _one_line_error(d, "barcodes.tsv.gz must hold 4 strings (one per cell), got 5")
    _write(d / "barcodes.tsv.gz", b"")
    _one_line_error(d, "barcodes.tsv.gz must hold 4 strings (one per cell), got 0")
    (d / "barcodes.tsv.gz").write_bytes(b"\x1f\x8b\x08 not really gzip")
    _one_line_error(d, "barcodes.tsv.gz is not a readable tab-separated file")
    (d / "barcodes.tsv.gz").unlink()
    _one_line_error(d, "not a 10x matrix directory (no barcodes.tsv[.gz]")
    _write(d / "barcodes.tsv.gz", _tsv(BARCODES))
    (d / "matrix.mtx.gz").write_bytes(gzip.compress(b"not a matrix\n")[:-6])
    _one_line_error(d, "matrix.mtx.gz is not a readable MatrixMarket file")
    _write(d / "matrix.mtx.gz", b"not a matrix\n")
    _one_line_error(d, "matrix.mtx.gz is not a readable MatrixMarket file")
    _write(d / "matrix.mtx.gz", _mtx(np.zeros((6, 0), dtype=np.int64)))
    _write(d / "barcodes.tsv.gz", b"")
    _one_line_error(d, "empty matrix (0 cells x 5 genes)")


def test_only_other_features_is_an_error(tmp_path):
    feats = [[i, s, "Antibody Capture"] for i, s, _ in FEATURES]
    _one_line_error(_tenx_dir(tmp_path, features=feats), "no 'Gene Expression' feature")


def test_pattern_mtx_is_not_counts(tmp_path):
    path = tmp_path / "p.mtx"
    path.write_text("%%MatrixMarket matrix coordinate pattern general\n2 2 1\n1 1\n")
    _one_line_error(path, "p.mtx holds pattern values, not counts")


# -------------------------------------------------------------------------------------- HDF5


def _strings(group, name: str, values: list[str]) -> None:
    import h5py

    group.create_dataset(name, data=np.array(values, dtype=object), dtype=h5py.string_dtype())


def _h5ad(path: Path, counts: np.ndarray = FULL, layout: str = "csr", layer: bool = False):
    """An AnnData file (0.8+ layout) as anndata writes it: X float32, feature types as a
    categorical; with ``layer``, X normalised and the counts in layers/counts."""
    import h5py

    def matrix(f, key: str, values: np.ndarray) -> None:
        if layout == "dense":
            f.create_dataset(key, data=values)
            return
        m = (sp.csr_matrix if layout == "csr" else sp.csc_matrix)(values)
        g = f.create_group(key)
        g.attrs.update({"encoding-type": f"{layout}_matrix", "encoding-version": "0.1.0",
                        "shape": np.array(values.shape)})  # fmt: skip
        g["data"], g["indices"], g["indptr"] = m.data, m.indices, m.indptr

    with h5py.File(path, "w") as f:
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        values = counts.astype(np.float32)
        if layer:
            matrix(f, "X", np.log1p(values))
            matrix(f.create_group("layers"), "counts", values)
        else:
            matrix(f, "X", values)
        obs = f.create_group("obs")
        obs.attrs.update({"_index": "cell", "encoding-type": "dataframe"})
        _strings(obs, "cell", BARCODES)
        var = f.create_group("var")
        var.attrs.update({"_index": "_index", "encoding-type": "dataframe"})
        _strings(var, "_index", [r[1] for r in FEATURES])
        _strings(var, "gene_ids", [r[0] for r in FEATURES])
        ft = var.create_group("feature_types")
        ft.attrs["encoding-type"] = "categorical"
        _strings(ft, "categories", ["Antibody Capture", "Gene Expression"])
        ft["codes"] = np.array([0 if r[2] == "Antibody Capture" else 1 for r in FEATURES],
                               dtype=np.int8)  # fmt: skip
    return path


def _tenx_h5(path: Path, counts: np.ndarray = FULL) -> Path:
    """A Cell Ranger 3 HDF5 file: genes x cells in CSC form (= cells x genes in CSR)."""
    import h5py

    m = sp.csr_matrix(counts)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"] = m.data.astype(np.int32)
        g["indices"], g["indptr"] = m.indices.astype(np.int64), m.indptr.astype(np.int64)
        g["shape"] = np.array([counts.shape[1], counts.shape[0]], dtype=np.int32)
        g["barcodes"] = np.array(BARCODES, dtype="S")
        fg = g.create_group("features")
        for key, col in (("id", 0), ("name", 1), ("feature_type", 2)):
            fg[key] = np.array([r[col] for r in FEATURES], dtype="S")
        fg["genome"] = np.array(["mm10"] * len(FEATURES), dtype="S")
    return path


@pytest.mark.parametrize("layout", ["csr", "csc", "dense"])
def test_h5ad(tmp_path, layout):
    pytest.importorskip("h5py")
    ds = datasets.load(str(_h5ad(tmp_path / "pbmc.h5ad", layout=layout)))
    _check(ds)
    assert ds.name == "pbmc"


def test_h5ad_counts_layer_is_read_before_normalised_x(tmp_path):
    pytest.importorskip("h5py")
    _check(datasets.load(str(_h5ad(tmp_path / "n.h5ad", layer=True))))


def test_tenx_h5(tmp_path):
    pytest.importorskip("h5py")
    ds = datasets.load(str(_tenx_h5(tmp_path / "filtered_feature_bc_matrix.h5")))
    _check(ds)
    assert ds.name == "filtered_feature_bc_matrix"


@pytest.mark.parametrize("layout", ["csc", "dense"])
def test_h5ad_bad(tmp_path, layout):
    pytest.importorskip("h5py")
    counts = FULL.astype(np.float64)
    counts[2, 4] = 1.5
    _one_line_error(_h5ad(tmp_path / "x.h5ad", counts, layout), "a non-integer value: not "
                    "counts (1 in all, e.g. 1.5 for cell 'AACT-1', gene 'Sox17')")  # fmt: skip


def test_h5_bad_files(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = _tenx_h5(tmp_path / "x.h5", -FULL)
    _one_line_error(
        path,
        "matrix/data holds a negative count: not counts (12 in all, e.g. -3 for cell 'AAAC-1', "
        "gene 'Gm1992')",
    )
    with h5py.File(path, "r+") as f:
        first = f["matrix/indices"][0]
        f["matrix/indices"][0] = 99  # past the genes: scipy's C code would crash on it
    _one_line_error(path, "matrix/indices holds a gene index outside 0..5")
    with h5py.File(path, "r+") as f:
        f["matrix/indices"][0] = first
    with h5py.File(path, "r+") as f:
        del f["matrix/barcodes"]
        f["matrix/barcodes"] = np.array(BARCODES[:3], dtype="S")
    _one_line_error(path, "matrix/barcodes must hold 4 strings (one per cell), got 3")
    with h5py.File(path, "r+") as f:
        del f["matrix/indptr"]
    _one_line_error(path, "no 'indptr' in this HDF5 file")
    path.write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    _one_line_error(path, "not a readable .h5 (10x HDF5) file")
    h5ad = _h5ad(tmp_path / "y.h5ad")
    with h5py.File(h5ad, "r+") as f:
        del f["obs/cell"]
        _strings(f["obs"], "cell", BARCODES[:2])
    _one_line_error(h5ad, "obs's index must hold 4 strings (one per cell), got 2")


def test_h5_without_h5py_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py -> ImportError
    path = tmp_path / "x.h5ad"
    path.write_bytes(b"whatever")
    _one_line_error(path, "reading .h5ad (AnnData) files needs h5py", "ztbench[h5]")


# --------------------------------------------------------------------------------------- CLI


def test_cli_fit_on_a_10x_directory(tmp_path, capsys):
    d = _tenx_dir(tmp_path)
    out = tmp_path / "out"
    argv = ["fit", str(d), "--family", "ztpoisson", "--min-nonzero", "2", "--no-cache",
            "-o", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert (out / "fits.parquet").is_file()
    import pandas as pd

    fits = pd.read_parquet(out / "fits.parquet")
    assert set(fits["dataset"]) == {"filtered_feature_bc_matrix"}
    assert fits["gene"].tolist() == ["Xkr4", "Gm1992", "Sox17", "Mrpl15"]  # >= 2 cells each
    capsys.readouterr()
    bad = FULL.astype(np.float64)
    bad[0, 0] = 0.25
    (tmp_path / "bad").mkdir()
    argv[1] = str(_tenx_dir(tmp_path / "bad", counts=bad))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not counts" in err and argv[1] in err, err
