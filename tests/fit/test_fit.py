"""Reference and candidate fits checked against independent solutions and the truth."""

from __future__ import annotations

import mpmath
import numpy as np
import pandas as pd
import pytest
import torch

from ztbench.candidates import Unsupported, get_candidate
from ztbench.cli import main
from ztbench.fit.objective import Problem
from ztbench.fit.run import candidate_fit, reference_fit
from ztbench.fit.synthetic import sample_ztnb, synthetic_data
from ztbench.points.counts import from_columns


def _gene_data(hists: list[dict[int, int]], sizes: list[np.ndarray] | None = None):
    """Fit data of genes given as {k: number of cells}."""
    gi, ks = [], []
    for g, h in enumerate(hists):
        for k, c in h.items():
            gi += [g] * c
            ks += [k] * c
    gi_a, k_a = np.array(gi), np.array(ks, dtype=np.float64)
    s = np.ones(len(k_a)) if sizes is None else np.concatenate(sizes)
    names = np.array([f"g{i}" for i in range(len(hists))])
    return from_columns(
        "hand", "per-gene" if sizes is None else "size-factor", gi_a, k_a, s, names, names
    )


HISTS = [{1: 60, 2: 25, 3: 10, 5: 5}, {1: 30, 2: 30, 4: 20, 9: 20}, {1: 95, 2: 5}]


def test_ztp_mle_solves_the_mean_equation():
    """The ZTP MLE solves mean(k) = lam / (1 - e^-lam); mpmath solves that at 50 digits."""
    fits = reference_fit(_gene_data(HISTS), "ztpoisson", cache_dir=False)
    mpmath.mp.dps = 50
    for h, lam in zip(HISTS, fits["mu"], strict=True):
        mean = mpmath.mpf(sum(k * c for k, c in h.items())) / sum(h.values())
        exact = mpmath.findroot(lambda x, m=mean: x / (1 - mpmath.exp(-x)) - m, 2 * (mean - 1))
        assert abs(lam / float(exact) - 1) < 1e-9
    assert (fits["status"] == "ok").all()
    assert (fits["rel_grad"] < 1e-6).all()


def test_ztp_size_factor_mle_solves_its_score_equation():
    """With size factors s_i: sum k_i = sum s_i m / (1 - e^(-s_i m)), solved with mpmath."""
    rng = np.random.default_rng(3)
    h = HISTS[1]
    n = sum(h.values())
    s = rng.uniform(0.3, 3.0, n)
    fits = reference_fit(_gene_data([h], [s]), "ztpoisson", cache_dir=False)
    ks = [k for k, c in h.items() for _ in range(c)]
    mpmath.mp.dps = 50
    si = [mpmath.mpf(float(x)) for x in s]

    def score(m):
        return sum(x * m / (1 - mpmath.exp(-x * m)) for x in si) - sum(ks)

    exact = mpmath.findroot(score, 3.0)
    assert abs(fits["mu"].iloc[0] / float(exact) - 1) < 1e-9


def test_ztnb_reference_matches_the_sample_mean():
    """At an interior per-gene ZTNB MLE the score in mu gives E[k | k > 0] = mean(k)."""
    fits = reference_fit(_gene_data(HISTS[:2]), "ztnb", cache_dir=False)
    ok = fits["status"] == "ok"
    assert ok.any()
    rel = (fits["truncated_mean"] / fits["sample_mean"] - 1).abs()[ok]
    assert (rel < 1e-8).all()


def test_all_ones_gene_is_flagged_not_hidden():
    fits = reference_fit(_gene_data([{1: 50}]), "ztnb", cache_dir=False)
    assert fits["status"].iloc[0] == "boundary"
    assert fits["reason"].iloc[0] == "mu -> 0"


def test_sampler_is_the_truncated_law():
    """Sample mean and P(k = 1) of exact ZTNB draws against the closed forms, within 5 SE."""
    rng = np.random.default_rng(11)
    mu, theta, n = 1.5, 15.0, 40000
    k = sample_ztnb(rng, mu, theta, n)
    assert k.min() >= 1
    p0 = (theta / (theta + mu)) ** theta
    mean = mu / (1 - p0)
    assert abs(k.mean() - mean) < 5 * k.std() / np.sqrt(n)
    p1 = theta * (theta / (theta + mu)) ** theta * (mu / (theta + mu)) / (1 - p0)
    assert abs((k == 1).mean() - p1) < 5 * np.sqrt(p1 * (1 - p1) / n)


@pytest.mark.slow
def test_synthetic_fits_recover_the_truth():
    """The exact fit lies within 5 standard errors of the truth (SE from the observed
    information, a finite-difference Hessian of the float64 objective)."""
    mus, thetas = np.array([0.3, 1.5]), np.array([2.0, 15.0])
    data, truth = synthetic_data(7, 20000, mus, thetas)
    fits = reference_fit(data, "ztnb", cache_dir=False)
    assert (fits["status"] == "ok").all()
    x = np.log(fits[["mu", "theta"]].to_numpy())
    fun = Problem(data, "ztnb").candidate_objective(get_candidate("ztnb/ztbench"), "float64")
    genes = np.arange(len(x))
    h = 1e-4
    hess = np.empty((len(x), 2, 2))
    for j in range(2):
        e = np.zeros(2)
        e[j] = h
        hess[:, :, j] = (fun(x + e, genes)[1] - fun(x - e, genes)[1]) / (2 * h)
    cov = np.linalg.inv(hess) / 20000  # objective is per count
    se = np.sqrt(np.stack([cov[:, 0, 0], cov[:, 1, 1]], axis=1))
    z = np.abs(x - np.log(truth)) / se
    assert (z < 5).all(), z


def test_published_rule_runs_away_where_the_shipped_loss_does_not():
    """Truth mu = 1.5, theta = 15, started above the switch (theta0 = 100). The published
    code's rule in float32 drops log(1 - P(0)) once mu + theta > 15, where the loss is the
    untruncated NB whose optimum on truncated data lies at large theta: the fit runs away
    with a worse exact likelihood; the shipped loss returns to the exact optimum."""
    data, _ = synthetic_data(5, 20000, np.array([1.5]), np.array([15.0]))
    ref = reference_fit(data, "ztnb", cache_dir=False)
    pub = candidate_fit(
        data, "ztnb", get_candidate("ztnb/published-code"), "float32", cache_dir=False, theta0=100.0
    )
    ship = candidate_fit(
        data, "ztnb", get_candidate("ztnb/ztbench"), "float32", cache_dir=False, theta0=100.0
    )
    ex_pub = pub["exact_nll_per_count"].iloc[0] - ref["exact_nll_per_count"].iloc[0]
    ex_ship = ship["exact_nll_per_count"].iloc[0] - ref["exact_nll_per_count"].iloc[0]
    assert ex_ship < 1e-7
    assert ex_pub > 1e-4
    assert pub["theta"].iloc[0] > 2 * ref["theta"].iloc[0]


def test_fits_are_bit_identical_and_cached(tmp_path):
    data = _gene_data(HISTS)
    cand = get_candidate("ztnb/published-code")
    a = candidate_fit(data, "ztnb", cand, "float32", cache_dir=False)
    b = candidate_fit(data, "ztnb", cand, "float32", cache_dir=tmp_path)
    c = candidate_fit(data, "ztnb", cand, "float32", cache_dir=tmp_path)  # from the cache
    assert list((tmp_path / "fits").rglob("*.ztref"))
    for df in (b, c):
        for col in a.columns:
            if pd.api.types.is_float_dtype(a[col]):
                assert a[col].to_numpy().tobytes() == df[col].to_numpy().tobytes(), col
            else:
                assert a[col].tolist() == df[col].tolist(), col


def test_fit_cli_twice_gives_identical_files(tmp_path, capsys):
    for d in ("a", "b"):
        rc = main(
            [
                "fit",
                "human_pbmc_1k_subset",
                "--family",
                "ztpoisson",
                "--no-cache",
                "-o",
                str(tmp_path / d),
            ]
        )
        assert rc == 0
    fa = pd.read_parquet(tmp_path / "a" / "fits.parquet")
    fb = pd.read_parquet(tmp_path / "b" / "fits.parquet")
    pd.testing.assert_frame_equal(fa, fb, check_exact=True)
    assert len(fa) == 118 and set(fa["status"]) <= {"ok", "boundary", "failed"}


def test_impact_cli_bad_arguments(capsys):
    assert main(["impact", "human_pbmc_1k_subset", "--dtypes", "float8"]) == 2
    assert "unknown dtype 'float8'" in capsys.readouterr().err
    assert main(["impact", "human_pbmc_1k_subset", "--model", "bulk"]) == 2
    assert "unknown model 'bulk'" in capsys.readouterr().err
    assert main(["impact"]) == 2
    assert "give a DATASET" in capsys.readouterr().err
    for argv, message in (
        (["--seed", "-1"], "'-1' is not a non-negative integer"),
        (["--synthetic-n", "0"], "'0' is not a positive integer"),
        (["--synthetic-n", "2000000000"], "over the budget of 10,000,000"),
        (["--synthetic-grid", "100000x100000"], "asks for 20,000,000,000,000 counts"),
    ):
        try:
            rc = main(["impact", "--synthetic", *argv])
        except SystemExit as exc:  # argparse's own errors
            rc = exc.code
        assert rc == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


class _LogTheta:
    """ztnb/stable taking log theta (a candidate's ``log_params``), unregistered."""

    id = "ztnb/test-log-theta"
    family = "ztnb"
    log_params = ("theta",)

    def __call__(self, k, mu, log_theta, threshold=None):
        return get_candidate("ztnb/stable")(k, mu, torch.exp(log_theta))


class _Unsupported:
    id = "ztnb/test-unsupported"
    family = "ztnb"

    def __call__(self, k, mu, theta, threshold=None):
        raise Unsupported("needs a package that is not installed")


def test_log_parameter_candidate_reaches_the_same_optimum():
    """d/dlog theta is chained as such: the same loss in log theta fits the same optimum."""
    data = _gene_data(HISTS[:2])
    a = candidate_fit(data, "ztnb", get_candidate("ztnb/stable"), "float64", cache_dir=False)
    b = candidate_fit(data, "ztnb", _LogTheta(), "float64", cache_dir=False)
    ok = (a["status"] == "ok") & (b["status"] == "ok")
    assert ok.any()
    for p in ("mu", "theta"):
        assert np.allclose(a[p][ok], b[p][ok], rtol=1e-5)


def test_unsupported_candidate_fails_every_gene_with_its_reason():
    fit = candidate_fit(_gene_data(HISTS), "ztnb", _Unsupported(), "float32", cache_dir=False)
    assert (fit["status"] == "failed").all()
    assert fit["reason"].iloc[0] == "step 0: unsupported (needs a package that is not installed)"


def test_an_edited_loss_is_never_served_from_the_fit_cache(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from ztbench.candidates.external import from_cli

    monkeypatch.chdir(tmp_path)
    code = (
        "import torch\n\n"
        "def ztnb(k, mu, theta):\n"
        "    w = theta * torch.log1p(mu / theta)\n"
        "    nll = (torch.lgamma(theta) - torch.lgamma(k + theta)\n"
        "           + k * torch.log1p(theta / mu) + w + torch.log(-torch.expm1(-w)))\n"
        "    return nll * SCALE\n\n"
        "SCALE = 1.0\n"
    )
    (tmp_path / "mine.py").write_text(code)
    args = SimpleNamespace(form="loss", sign="nll", kind="torch", parameters=None)
    data = _gene_data(HISTS)
    cache = tmp_path / "cache"
    first = candidate_fit(data, "ztnb", from_cli("mine.py:ztnb", "ztnb", args, ("float32",)),
                          "float32", cache_dir=cache)  # fmt: skip
    (tmp_path / "mine.py").write_text(code.replace("SCALE = 1.0", "SCALE = 1.001"))
    edited = from_cli("mine.py:ztnb", "ztnb", args, ("float32",))
    again = candidate_fit(data, "ztnb", edited, "float32", cache_dir=cache)
    fresh = candidate_fit(data, "ztnb", edited, "float32", cache_dir=False)
    # the objective is scaled by 1.001: the cached fit of the old code must not come back
    assert not np.array_equal(again["objective"].to_numpy(), first["objective"].to_numpy())
    assert again["objective"].to_numpy().tobytes() == fresh["objective"].to_numpy().tobytes()
    assert len(list((cache / "fits").rglob("*.ztref"))) == 2
