"""The float64 refinement's flags against seeded mpmath sweeps: every result they leave
unrefined, and every refined one, within the value goal (4 ulp).

The ZTP full form (Loader's stirlerr + bd0, flagged by its weighted condition number) and
the ZTNB loss form (flagged by the magnitudes its terms formed, the lgamma excess's
included) over k in [2, 1e4] and the mean within a factor 20-30 of k, the region where
their terms cancel; theta down to 1e-12, where lgamma takes k + theta rounded. Unweighted
flags left results 5-6 ulp off here."""

from __future__ import annotations

import loss_references
import numpy as np
import pytest
import torch

from ztbench.core.metrics import ulp_error
from ztbench.loss import zt_negbin_nll, zt_poisson_nll

N = 4000


def _ulp(got: torch.Tensor, refs: list[float]) -> np.ndarray:
    return np.asarray(ulp_error(got.numpy(), np.array(refs), "float64"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_ztp_full_form_sweep(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = np.floor(np.exp(rng.uniform(np.log(2), np.log(1e4), N)))
    lam = k * np.exp(rng.uniform(np.log(1 / 20), np.log(20), N))
    got = zt_poisson_nll(torch.tensor(k), torch.tensor(lam), full=True, reduction="none")
    refs = [float(loss_references.ztp(a, b, prec=200)["full"]) for a, b in zip(k, lam, strict=True)]
    assert _ulp(got, refs).max() <= 4.0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [4, 5])
def test_ztnb_value_sweep(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = np.floor(np.exp(rng.uniform(0, np.log(1e4), N)))
    mu = k * np.exp(rng.uniform(np.log(1 / 30), np.log(30), N))
    theta = np.exp(rng.uniform(np.log(1e-12), np.log(1e4), N))
    got = zt_negbin_nll(torch.tensor(k), torch.tensor(mu), torch.tensor(theta),
                        reduction="none")  # fmt: skip
    refs = [float(loss_references.ztnb(a, b, c, prec=200)["value"])
            for a, b, c in zip(k, mu, theta, strict=True)]  # fmt: skip
    assert _ulp(got, refs).max() <= 4.0
