"""Float32 and bfloat16 results at the zero crossings of the loss form and its gradients:
within 0.5 + 1/8 ulp of mpmath (200 bits, analytic derivatives written out here).

At the float32 nearest a crossing, the float64 sum of the careful kernel can cancel by
2^30 and more, beyond what float64 carries to a float32 result; those elements are
refined (ztbench.loss.refine.NARROW_SCALE). The crossings come from the adversarial
search's scan-and-bisect in float64 (seeded), then the neighbouring floats of the dtype
either side."""

from __future__ import annotations

import loss_references
import numpy as np
import pytest
import torch

from ztbench.core.families import get_family
from ztbench.core.metrics import step_floats, ulp_error
from ztbench.loss import zt_negbin_nll, zt_poisson_nll
from ztbench.measure import adversarial as A

GOAL = 0.5 + 1 / 8
TORCH = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MEAN = {"ztpoisson": "lam", "ztnb": "mu"}


def _reference(family: str, k: float, *params: float) -> list[float]:
    if family == "ztpoisson":
        ref = loss_references.ztp(k, *params)
        return [float(ref["value"]), float(ref["d_lam"])]
    ref = loss_references.ztnb(k, *params)
    return [float(ref[q]) for q in ("value", "d_mu", "d_theta")]


def _points(family: str, dtype: str) -> dict[str, np.ndarray]:
    """The dtype's floats within 3 steps of each crossing of the mean (k and the other
    parameter rounded to the dtype)."""
    starts = A._random_starts(family, 24, np.random.default_rng(7))
    cross = A._crossings(family, starts).drop_duplicates()
    fam = get_family(family)
    cols: dict[str, list[np.ndarray]] = {c: [] for c in fam.columns}
    for s in range(-3, 4):
        for c in fam.columns:
            cols[c].append(step_floats(cross[c].to_numpy(), dtype, s if c == MEAN[family] else 0))
    pts = {c: np.concatenate(v) for c, v in cols.items()}
    lo, hi = fam.domain[MEAN[family]]
    keep = (pts[MEAN[family]] >= lo) & (pts[MEAN[family]] <= hi) & (pts["k"] >= 1)
    return {c: v[keep] for c, v in pts.items()}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_narrow_results_at_crossings(family: str, dtype: str) -> None:
    pts = _points(family, dtype)
    fam = get_family(family)
    assert len(pts["k"]) > 50
    k = torch.tensor(pts["k"], dtype=TORCH[dtype])
    params = [torch.tensor(pts[p], dtype=TORCH[dtype], requires_grad=True) for p in fam.params]
    fn = zt_poisson_nll if family == "ztpoisson" else zt_negbin_nll
    value = fn(k, *params, reduction="none")
    grads = torch.autograd.grad(value.sum(), params)
    got = [value.detach(), *grads]
    refs = np.array([_reference(family, *row) for row in zip(*(pts[c] for c in fam.columns),
                                                             strict=True)])  # fmt: skip
    for i, name in enumerate(["value", *(f"d_{p}" for p in fam.params)]):
        err = np.asarray(ulp_error(got[i].to(torch.float64).numpy(), refs[:, i], dtype))
        worst = int(np.nanargmax(err))
        assert err[worst] <= GOAL, (name, err[worst], {c: pts[c][worst] for c in fam.columns})
