"""Training impact (``ztbench.fit.masked``, ``ztbench impact --model masked``): a
masked-count network trained with each loss, on counts drawn from a known law."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

from ztbench.candidates import Candidate, get_candidate
from ztbench.candidates.base import DTYPES_ALL
from ztbench.cli import main
from ztbench.fit.masked import (
    MaskedSettings,
    heldout_mask,
    prepare,
    summarize_training,
    training_impact,
)
from ztbench.io.errors import UserError
from ztbench.loss import zt_negbin_nll

# The law of the synthetic counts: each gene g is NB(MU[g], THETA[g]) in every cell, so
# a hidden nonzero count of gene g follows ZTNB(MU[g], THETA[g]) whatever the input.
GENES = 24
MU = np.geomspace(0.3, 8.0, GENES)
THETA = np.tile([0.7, 2.0, 8.0], GENES // 3)
CELLS = 3000
# small and quick: 24 genes, 2000 training and 1000 held-out cells, a 16-wide network
SMALL = MaskedSettings(genes=GENES, train_cells=None, heldout_cells=1000, hidden=16,
                       steps=300, batch=256, lr=1e-2, seeds=(0, 1, 2), heads=("free",))  # fmt: skip
SHIPPED = get_candidate("ztnb/ztbench")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """These networks are tiny: one thread is faster than two, and does not stall when
    another process holds a core (an op split over two threads waits for both)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def counts() -> sp.csr_matrix:
    rng = np.random.default_rng(20240611)
    x = rng.negative_binomial(THETA, THETA / (THETA + MU), size=(CELLS, GENES))
    return sp.csr_matrix(x.astype(np.int64))


def _candidate(name: str, fn: Callable[..., torch.Tensor]) -> Candidate:
    return Candidate(id=f"ztnb/{name}", family="ztnb", form="loss", description=name,
                     provenance="test", kind="torch", dtypes=DTYPES_ALL, fn=fn)


def _untruncated(k: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor,
                 threshold: float | None = None) -> torch.Tensor:  # fmt: skip
    """A threshold rule that always fires (theta + mu > 0): log(e^w - 1) replaced by w
    everywhere, i.e. the untruncated NB NLL, -log P(X = k) (full form)."""
    nb = torch.distributions.NegativeBinomial(theta, logits=torch.log(mu) - torch.log(theta),
                                              validate_args=False)  # fmt: skip
    return -nb.log_prob(k)


def _true_nll(counts: sp.csr_matrix, settings: MaskedSettings, seed: int) -> tuple[float, int]:
    """Mean -log P(X = k | X > 0) of the held-out hidden counts under the true law
    (scipy.stats.nbinom, independent of ztbench's loss), and how many there are."""
    data = prepare(counts, settings)
    hidden = heldout_mask(data, seed, settings)
    rows, cols = np.nonzero(hidden)
    k = data.heldout[rows, cols]
    gene = data.genes[cols]
    mu, theta = MU[gene], THETA[gene]
    p = theta / (theta + mu)
    logp = stats.nbinom.logpmf(k, theta, p) - np.log1p(-stats.nbinom.pmf(0, theta, p))
    return float(-logp.mean()), len(k)


def test_exact_loss_recovers_the_law_and_a_wrong_loss_costs(counts: sp.csr_matrix) -> None:
    wrong = _candidate("untruncated", _untruncated)
    runs, summary = training_impact(counts, "ztnb", [SHIPPED, wrong], SMALL, dataset="nb")
    assert list(runs["status"]) == ["ok"] * 6
    assert (runs["nonfinite_step"] == -1).all() and (runs["steps"] == SMALL.steps).all()
    ship = runs[runs["candidate"] == "ztnb/ztbench"].set_index("seed")
    for seed in SMALL.seeds:
        truth, n = _true_nll(counts, SMALL, seed)
        assert ship.loc[seed, "n_hidden"] == n > 500
        # (a) the exact loss recovers the law: its held-out NLL is the truth's, up to
        # estimation noise (here 0.004 to 0.01 nats above the truth's ~1.88 per count)
        assert abs(ship.loc[seed, "heldout_nll"] - truth) < 0.015, (seed, truth)
    # (b) the untruncated loss cannot put mass where the truncation removed it: a cost
    # well above the seeds' spread
    row = summary.set_index("candidate").loc["ztnb/untruncated"]
    assert row["diff_mean"] > 0.02 and bool(row["diff_exceeds_3sd"]), summary
    assert row["diff_mean"] > 3 * row["diff_std"]
    ref = summary.set_index("candidate").loc["ztnb/ztbench"]
    assert ref["diff_mean"] == 0 and not ref["diff_exceeds_3sd"]
    assert row["frac_mu_lt_1"] < ref["frac_mu_lt_1"]  # it cannot fit the small means


def test_deterministic_per_seed(counts: sp.csr_matrix) -> None:
    s = dataclasses.replace(SMALL, steps=40, seeds=(3,), heads=("published", "free"))
    bento = get_candidate("ztnb/published-code")
    a, sa = training_impact(counts, "ztnb", [bento, SHIPPED], s)
    b, sb = training_impact(counts, "ztnb", [bento, SHIPPED], s)
    timing = ["seconds_per_step"]
    pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing))
    pd.testing.assert_frame_equal(sa.drop(columns=timing), sb.drop(columns=timing))
    # the same seed gives every candidate the same initial weights, batches and masks:
    # the two heads and the two losses are evaluated on the same hidden counts
    assert a["n_hidden"].nunique() == 1
    # another seed: other numbers
    c, _ = training_impact(counts, "ztnb", [SHIPPED], dataclasses.replace(s, seeds=(4,)))
    assert not np.isclose(c["heldout_nll"].to_numpy(), a["heldout_nll"].to_numpy()[2:]).any()


def test_nonfinite_and_failing_losses_are_recorded(counts: sp.csr_matrix) -> None:
    calls = {"nan": 0, "raise": 0}

    def goes_nan(k: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor,
                 threshold: float | None = None) -> torch.Tensor:  # fmt: skip
        calls["nan"] += 1
        value = zt_negbin_nll(k, mu, theta, reduction="none", validate=False)
        return value * float("inf") if calls["nan"] >= 3 else value  # non-finite from step 3

    def raises(k: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor,
               threshold: float | None = None) -> torch.Tensor:  # fmt: skip
        calls["raise"] += 1
        if calls["raise"] >= 2:
            raise RuntimeError("my loss broke\nsecond line")
        return zt_negbin_nll(k, mu, theta, reduction="none", validate=False)

    s = dataclasses.replace(SMALL, steps=10, seeds=(0,))
    cands = [_candidate("goes-nan", goes_nan), _candidate("raises", raises)]
    runs, summary = training_impact(counts, "ztnb", cands, s)
    r = runs.set_index("candidate")
    # the shipped loss, the reference, is added first when it is not among the candidates
    assert list(runs["candidate"]) == ["ztnb/ztbench", "ztnb/goes-nan", "ztnb/raises"]
    assert r.loc["ztnb/goes-nan", "status"] == "nonfinite"
    assert r.loc["ztnb/goes-nan", "nonfinite_step"] == 3 and r.loc["ztnb/goes-nan", "steps"] == 3
    assert np.isnan(r.loc["ztnb/goes-nan", "heldout_nll"])
    assert r.loc["ztnb/raises", "status"] == "failed"
    assert r.loc["ztnb/raises", "reason"] == "step 2: RuntimeError: my loss broke"
    assert np.isnan(r.loc["ztnb/raises", "heldout_nll"])
    assert np.isfinite(r.loc["ztnb/ztbench", "heldout_nll"])
    sm = summary.set_index("candidate")
    assert sm.loc["ztnb/goes-nan", "nonfinite_seeds"] == 1
    assert np.isnan(sm.loc["ztnb/goes-nan", "diff_mean"])
    assert not sm.loc["ztnb/goes-nan", "diff_exceeds_3sd"]
    assert summarize_training(runs).equals(summary)


def test_bad_input_is_a_user_error(counts: sp.csr_matrix) -> None:
    s = dataclasses.replace(SMALL, steps=2, seeds=(0,))
    for bad in (np.array([[0.5, 1.0], [2.0, 0.0]]), -counts.toarray(), np.ones((3, 3, 3))):
        with pytest.raises(UserError, match="count matrix"):
            training_impact(bad, "ztnb", [SHIPPED], s)
    with pytest.raises(UserError, match="steps: must be a positive integer"):
        training_impact(counts, "ztnb", [SHIPPED], dataclasses.replace(s, steps=0))
    with pytest.raises(UserError, match="family ztpoisson, not ztnb"):
        training_impact(counts, "ztnb", [get_candidate("ztpoisson/ztbench")], s)
    with pytest.raises(UserError, match="no gradients"):
        training_impact(counts, "ztnb", [get_candidate("ztnb/scipy")], s)


# ------------------------------------------------------------------------------- CLI


def _write_npz(path: Path, counts: sp.csr_matrix) -> Path:
    n_cells, n_genes = counts.shape
    np.savez(path, counts_data=counts.data, counts_indices=counts.indices,
             counts_indptr=counts.indptr, shape=np.array(counts.shape),
             gene_symbols=np.array([f"g{i}" for i in range(n_genes)]),
             gene_ids=np.array([f"G{i}" for i in range(n_genes)]),
             barcodes=np.array([f"c{i}" for i in range(n_cells)]))  # fmt: skip
    return path


TINY = ["--model", "masked", "--steps", "4", "--genes", "12", "--seeds", "2", "--hidden", "8",
        "--batch", "32", "--train-cells", "200", "--heldout-cells", "100",
        "--no-progress"]  # fmt: skip


def test_cli_masked(counts: sp.csr_matrix, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _write_npz(tmp_path / "nb.npz", counts)
    out = tmp_path / "out"
    assert main(["impact", str(data), *TINY, "-o", str(out)]) == 0
    runs = pd.read_csv(out / "training_impact.csv")
    summary = pd.read_csv(out / "training_summary.csv")
    # both families, both heads, the default candidates (the published package and the
    # shipped loss of each family), two seeds
    assert len(runs) == 2 * 2 * 2 * 2 and set(runs["status"]) == {"ok"}
    assert set(runs["candidate"]) == {"ztnb/bento-sc", "ztnb/ztbench", "ztpoisson/bento-sc",
                                      "ztpoisson/ztbench"}  # fmt: skip
    assert (runs["genes"] == 12).all() and (runs["dataset"] == "nb").all()
    assert len(summary) == 8 and summary["diff_exceeds_3sd"].dtype == bool
    printed = capsys.readouterr().out
    assert "training_summary.csv" in printed and "held-out NLL" in printed

    # the user's own loss, trained and compared the same way
    (tmp_path / "mine.py").write_text(
        "from ztbench.loss import zt_negbin_nll\n"
        "def nll(k, mu, log_theta):\n"
        "    return zt_negbin_nll(k, mu, log_theta=log_theta, reduction='none', validate=False)\n"
    )
    out2 = tmp_path / "out2"
    rc = main(["impact", str(data), *TINY, "--family", "ztnb", "--heads", "free",
               "--candidate", f"{tmp_path / 'mine.py'}:nll", "--parameters", "theta=log",
               "-o", str(out2)])  # fmt: skip
    assert rc == 0
    runs = pd.read_csv(out2 / "training_impact.csv")
    assert set(runs["candidate"]) == {"ztnb/bento-sc", "ztnb/ztbench", "user/nll"}
    mine = runs[runs["candidate"] == "user/nll"]["heldout_nll"].to_numpy()
    ship = runs[runs["candidate"] == "ztnb/ztbench"]["heldout_nll"].to_numpy()
    # the same loss through the other parameterisation: the same training, to rounding
    np.testing.assert_allclose(mine, ship, rtol=1e-4)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--steps", "0"], "--steps: must be a positive integer, got 0"),
        (["--candidates", "ztnb/nope"], "--candidates: candidate pattern 'ztnb/nope'"),
        (["--heads", "exp"], "--heads: must be among published, free"),
    ],
)
def test_cli_bad_input_one_line_exit_2(
    counts: sp.csr_matrix, tmp_path: Path, capsys: pytest.CaptureFixture,
    extra: list[str], expected: str,
) -> None:  # fmt: skip
    data = _write_npz(tmp_path / "nb.npz", counts)
    rc = main(["impact", str(data), *TINY, *extra, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out" / "training_impact.csv").exists()
