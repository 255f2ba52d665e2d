"""The shipped count matrices: contents as recorded, checksums verified, bad input -> exit 2."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ztbench import datasets
from ztbench.cli import main
from ztbench.errors import UserError


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
