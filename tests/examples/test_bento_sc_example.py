"""examples/bento-sc: third-party code (bento-sc 0.0.8's real losses) measured through
the external-candidate mechanism, without editing ztbench.

What ztbench measured must be exactly what the package computes: at every point and in
every dtype of the example suite, the values and autograd gradients recorded in
points.parquet equal, bit for bit, a direct call of ``bento_sc.loss`` on the same rounded
inputs. Where ztbench also registers the package as built-in candidates (``*/bento-sc``),
the external rows must equal theirs bit for bit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ztbench.candidates import list_candidates, load_suite
from ztbench.measure.accuracy import run_accuracy

bento_loss = pytest.importorskip("bento_sc.loss", reason="bento-sc is not installed")

SUITE = Path(__file__).resolve().parents[2] / "examples" / "bento-sc" / "suite.toml"
OWN = {"bento/ztnb": ("k", "mu", "log_theta"), "bento/ztpoisson": ("k", "lam")}
GRADS = {"bento/ztnb": ("d_mu", "d_log_theta"), "bento/ztpoisson": ("d_lam",)}


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("bento-res")
    suite = load_suite(SUITE)
    cache = tmp_path_factory.mktemp("bento-cache")
    result = run_accuracy(suite, out, cache_dir=cache, progress=False)
    return out, result


def direct(cid: str, cols: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """bento_sc.loss called by hand on the rounded inputs: value and autograd gradients."""
    tdt = getattr(torch, dtype)
    t = {c: torch.tensor(v, dtype=tdt, requires_grad=c != "k") for c, v in cols.items()}
    if cid == "bento/ztnb":
        nb = bento_loss.NegativeBinomialNLL(1, reduction="none", omit_last_term=True,
                                            zero_truncated=True)  # fmt: skip
        mu, log_theta = t["mu"].clone(), t["log_theta"].clone()  # .loss writes into them
        value = nb.loss(mu, log_theta, t["k"])
        params = [t["mu"], t["log_theta"]]
    else:
        pois = bento_loss.PoissonNLL(1, reduction="none", omit_last_term=True,
                                     zero_truncated=True)  # fmt: skip
        value = pois.loss(t["lam"].clone(), t["k"])
        params = [t["lam"]]
    grads = torch.autograd.grad(value.sum(), params)
    out = {"value": value.detach().to(torch.float64).numpy()}
    for name, g in zip(GRADS[cid], grads, strict=True):
        out[name] = g.to(torch.float64).numpy()
    return out


@pytest.mark.parametrize("cid", ["bento/ztnb", "bento/ztpoisson"])
def test_external_rows_are_the_package_bit_for_bit(measured, cid: str) -> None:
    out, _ = measured
    pts = pd.read_parquet(out / "points.parquet", filters=[("candidate", "==", cid)])
    assert set(pts["dtype"]) == {"float64", "float32", "bfloat16"}
    checked = 0
    for dtype, d in pts.groupby("dtype"):
        value = d[d["quantity"] == "value"].reset_index(drop=True)
        cols = {c: value[c].to_numpy() for c in OWN[cid]}
        ref = direct(cid, cols, str(dtype))
        for q in ("value", *GRADS[cid]):
            rows = d[d["quantity"] == q].reset_index(drop=True)
            for c in OWN[cid]:  # the same points, in the same order, per quantity
                assert np.array_equal(rows[c].to_numpy(), cols[c])
            got = rows["computed"].to_numpy()
            assert np.array_equal(got.view(np.int64), ref[q].view(np.int64)), (cid, dtype, q)
            checked += len(got)
    assert checked > 1000


def test_log_theta_is_rounded_as_the_package_sees_it(measured) -> None:
    """The package takes log theta: its input is log_theta rounded to the dtype, and the
    reference is taken at exp(log_theta) (the parameterisation rule)."""
    out, result = measured
    pts = pd.read_parquet(out / "points.parquet",
                          filters=[("candidate", "==", "bento/ztnb"), ("dtype", "==", "float32")])
    lt = pts["log_theta"].to_numpy()
    assert np.array_equal(lt, lt.astype(np.float32).astype(np.float64))
    s = result.summary  # type: ignore[attr-defined]
    assert set(s[s["candidate"] == "bento/ztnb"]["quantity"]) == {"value", "d_mu", "d_log_theta"}


def test_external_rows_equal_the_built_in_bento_sc_rows(tmp_path: Path) -> None:
    """Where ztbench registers bento-sc itself (``ztnb/bento-sc``, ``ztpoisson/bento-sc``),
    the same package measured as an external candidate gives the same rows, bit for bit."""
    builtin = {c.id for c in list_candidates()}
    pairs = {"bento/ztnb": "ztnb/bento-sc", "bento/ztpoisson": "ztpoisson/bento-sc"}
    if not set(pairs.values()) <= builtin:
        pytest.skip("this ztbench has no built-in */bento-sc candidates to compare with")
    suite = load_suite(SUITE)
    both = dataclasses.replace(
        suite,
        candidates=(*suite.candidates, *pairs.values()),
        candidate_modes={**suite.candidate_modes, **{b: suite.modes for b in pairs.values()}},
    )
    s = run_accuracy(both, None, cache_dir=tmp_path / "c", progress=False).summary
    keys = ["dtype", "device", "mode", "quantity", "region"]
    for ext, bi in pairs.items():
        a = s[s["candidate"] == ext].drop(columns=["candidate"]).sort_values(keys)
        b = s[s["candidate"] == bi].drop(columns=["candidate"]).sort_values(keys)
        a = a.drop(columns=["threshold"]).reset_index(drop=True)
        b = b.drop(columns=["threshold"]).reset_index(drop=True)
        assert len(a) > 0
        pd.testing.assert_frame_equal(a, b, check_exact=True)
