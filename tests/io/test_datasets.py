"""The shipped count matrices: contents as recorded, checksums verified, bad input -> exit 2."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ztbench.cli import main
from ztbench.io import datasets
from ztbench.io.errors import UserError


@pytest.mark.parametrize(
    ("name", "shape", "nnz", "kmax"),
    [
        ("mouse_brain_10k", (10000, 1000), 691914, 624),
        ("human_pbmc_1k_subset", (1107, 507), 23866, 36),
    ],
)
def test_load_matches_provenance(name, shape, nnz, kmax):
    ds = datasets.load(name)
    assert ds.counts.shape == shape
    assert ds.counts.nnz == nnz
    assert ds.counts.data.max() == kmax
    assert len(ds.gene_symbols) == len(ds.gene_ids) == shape[1]
    assert len(ds.barcodes) == shape[0]
    assert ds.sha256 == datasets.DATASETS[name]


def test_mouse_brain_first_gene_and_total():
    ds = datasets.load("mouse_brain_10k")
    assert ds.gene_symbols[0] == "Xkr4"  # the provenance's "from Xkr4 on chromosome 1"
    assert int(ds.counts.sum()) == 1597698


def test_checksum_mismatch_is_an_error(tmp_path, monkeypatch):
    src = datasets.dataset_path("human_pbmc_1k_subset")
    dst = tmp_path / "human_pbmc_1k_subset.npz"
    shutil.copyfile(src, dst)
    dst.chmod(0o644)
    blob = bytearray(dst.read_bytes())
    blob[-100] ^= 0xFF
    dst.write_bytes(bytes(blob))
    monkeypatch.setattr(datasets, "DATA_DIR", tmp_path)
    with pytest.raises(UserError, match="does not match the recorded"):
        datasets.load("human_pbmc_1k_subset")


def test_unknown_name(capsys):
    assert main(["fit", "no_such_dataset"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown dataset 'no_such_dataset'" in err


def test_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    assert main(["fit", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.npz" in err


def test_missing_key(tmp_path, capsys):
    with np.load(datasets.dataset_path("human_pbmc_1k_subset"), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "barcodes"}
    path = tmp_path / "nobarcodes.npz"
    np.savez(path, **arrays)
    assert main(["impact", str(path), "--dtypes", "float32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing key 'barcodes'" in err


def test_bad_shape_column(tmp_path, capsys):
    with np.load(datasets.dataset_path("human_pbmc_1k_subset"), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["gene_symbols"] = arrays["gene_symbols"][:-1]
    path = tmp_path / "short.npz"
    np.savez(path, **arrays)
    assert main(["fit", str(path)]) == 2
    assert "key 'gene_symbols' must hold 507 strings" in capsys.readouterr().err


def _shipped_arrays() -> dict[str, np.ndarray]:
    with np.load(datasets.dataset_path("human_pbmc_1k_subset"), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _first_row_wider(a: dict[str, np.ndarray]) -> None:
    a["counts_indices"] = a["counts_indices"].astype(np.int64)
    a["counts_indices"][0] = -1


def _indptr_back(a: dict[str, np.ndarray]) -> None:
    a["counts_indptr"] = a["counts_indptr"].copy()
    a["counts_indptr"][2], a["counts_indptr"][3] = a["counts_indptr"][3], a["counts_indptr"][2]


def _huge_uint64(a: dict[str, np.ndarray]) -> None:
    a["counts_data"] = a["counts_data"].astype(np.uint64)
    a["counts_data"][0] = np.uint64(2**63 + 5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_first_row_wider, "gene index outside 0..506"),  # C code crashed on it (double free)
        (_indptr_back, "'counts_indptr' is not non-decreasing"),  # crashed: invalid pointer
        (_huge_uint64, "count above 1e+07"),  # wrapped to a negative int64
        (lambda a: a.update(counts_data=(a["counts_data"].astype(np.int64) - 10**6)),
         "negative count: not counts"),
        (lambda a: a.update(shape=np.array([1107.5, 507.0])), "two non-negative integers"),
        (lambda a: a.update(shape=np.array([1107, 507, 1])), "two non-negative integers"),
    ],
)  # fmt: skip
def test_bad_matrix_is_one_line_before_scipy(tmp_path, capsys, change, message):
    arrays = _shipped_arrays()
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert main(["fit", str(path), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("content", [b"", b"k,lam\n1,2\n"])
def test_empty_or_text_npz_is_one_line_without_pickle_advice(tmp_path, capsys, content):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    assert main(["fit", str(path), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a readable .npz" in err and "allow_pickle" not in err


def test_npy_given_as_a_dataset(tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(3))
    assert main(["fit", str(path), "--no-cache"]) == 2
    assert "a single array (.npy), not an .npz archive" in capsys.readouterr().err


def test_duplicate_entries_are_summed_as_scipy_defines_them(tmp_path):
    arrays = _shipped_arrays()
    # cell 0 lists its first gene twice: 3 and 4 counts -> one entry of 7
    n0 = int(arrays["counts_indptr"][1])
    idx, dat = arrays["counts_indices"], arrays["counts_data"]
    arrays["counts_indices"] = np.concatenate([idx[:1], idx[:n0], idx[n0:]])
    arrays["counts_data"] = np.concatenate([[3], [4], dat[1:n0], dat[n0:]]).astype(dat.dtype)
    arrays["counts_indptr"] = np.concatenate([[0], arrays["counts_indptr"][1:] + 1])
    path = tmp_path / "dup.npz"
    np.savez(path, **arrays)
    ds = datasets.load(str(path))
    assert ds.counts[0, int(idx[0])] == 7
    assert ds.counts.nnz == len(dat)
