"""First-derivative graphs written for their own derivatives (double backward, Hessians).

Where the loss's backward is itself differentiated, :func:`ztbench.loss.autograd.
derivatives_graph` adds a graph to the saved first derivatives as ``d_saved + (d -
d.detach())``: the graph's value is discarded, only its derivatives count. The kernels'
first-derivative forms (:mod:`ztbench.loss.kernels`) are built for their values: quotients
such as ``(lam - k)/lam`` and ``num/(mu (1 + x))`` whose numerators are exact or free of
cancellation. Their autograd derivative, ``num'/den - num den'/den^2``, subtracts two terms
of order 1/den that agree to the result's digits:

- ZTP, lam >= 1: d^2/dlam^2 = k/lam^2 - e^lam/expm1(lam)^2 comes out as 1/lam - (lam -
  k)/lam^2, a relative error ~ eps lam/k (6e-8 at lam = 1e9);
- ZTNB, x = mu/theta < 1: d^2/dmu^2 at k = 1 is O(1) while the two quotient terms are
  O(1/mu) (relative error 2e-3 at mu = 1e-12, theta = 1e3).

Here the same first derivatives are written as sums of smooth terms, each differentiated
without that cancellation (the derivatives of the value's own terms):

- ZTP, lam >= 1: ``1 - k/lam + e^-lam/(1 - e^-lam)``;
- ZTNB, x < 1, the mu-derivative of the x < 1 loss -(k - 1) log(mu) + k log1p(x) +
  log(r) + h(w), r = log1p(x)/x = 1 + log1pmx(x)/x, w = mu r, h' = q:
  ``-(k - 1)/mu + S``, S = ``k/(theta (1 + x)) + r'/(r theta) + q(w) (r + x r')``, with
  r' = -1/(1 + x) - log1pmx(x)/x^2 and log1pmx(x)/x^2 by its series
  (:func:`~ztbench.loss.primitives.log1pmx_over_x2`). Only its derivative in mu is used:
  its derivative in theta, d^2/dmu dtheta, comes from the kernel's form, which is
  accurate there (the theta-terms of the sum cancel where mu ~ k).

In a log-parameter the derivative p d/dp is written ``-k + lam + lam/expm1(lam)``,
``-(k - 1) + lam q(lam)`` and ``-(k - 1) + mu S``: the constant's derivative is 0, whereas
the derivative of the product (-(k - 1)/mu) mu would leave a rounding error of order k
where the exact second derivative can be as small as mu (5e-22 at k = 100, mu = 1e-21,
theta = 1e10).

Elsewhere (ZTP lam < 1 in lam, ZTNB x >= 1, and d/dtheta everywhere) the kernels' own forms
differentiate accurately. Measured against exact Hessians (mpmath), see
tests/loss/test_second_derivatives.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ztbench.loss import primitives as P
from ztbench.loss.kernels import KERNELS, chain_rule

__all__ = ["first_derivative_graph"]


def _ztp(k: Tensor, lam: Tensor, kernel: list[Tensor], is_log: Sequence[bool]) -> list[Tensor]:
    # d/dlam = -(k - 1)/lam + q(lam) (lam < 1, the kernel's form) or 1 - k/lam + 1/expm1(lam)
    large = lam >= 1.0
    lam_l = torch.where(large, lam, 2.0)  # safe stand-ins where a branch is not taken
    tail = torch.exp(-lam_l) / (-torch.expm1(-lam_l))  # 1/expm1(lam), no overflow
    if is_log[0]:  # lam d/dlam: the constants -k, -(k - 1) have no derivative to cancel
        lam_s = torch.where(large, 0.5, lam)
        q = P.inv1mexp_minus_inv(lam_s)
        return [torch.where(large, (lam_l - k) + lam_l * tail, lam_s * q - (k - 1.0))]
    return [torch.where(large, (1.0 - k / lam_l) + tail, kernel[0])]


def _ztnb(k: Tensor, mu: Tensor, theta: Tensor, kernel: list[Tensor], is_log: Sequence[bool]
          ) -> list[Tensor]:  # fmt: skip
    d_mu, d_theta = kernel
    below = mu / theta < 1.0
    # safe stand-ins where x >= 1 (the sum is not used there); theta enters detached
    mu_b = torch.where(below, mu, 0.5)
    theta_b = torch.where(below, theta.detach(), 1.0)
    x = mu_b / theta_b
    r = 1.0 + P.log1pmx_over_x(x)
    r_prime = -1.0 / (1.0 + x) - P.log1pmx_over_x2(x)
    q = P.inv1mexp_minus_inv(mu_b * r)
    smooth = k / (theta_b * (1.0 + x)) + r_prime / (r * theta_b) + q * (r + x * r_prime)
    # the kernel's d_mu with mu detached: its value cancels, its theta-derivative stays
    _, d_mu_theta, _ = KERNELS["ztnb"].traced(k, mu.detach(), theta, True)
    by_theta = d_mu_theta - d_mu_theta.detach()
    if is_log[0]:  # mu d/dmu: the constant -(k - 1) has no derivative to cancel
        mixed = (mu_b * smooth - (k - 1.0)) + mu.detach() * by_theta
        d_first = torch.where(below, mixed, mu * d_mu)
    else:
        mixed = (smooth - (k - 1.0) / mu_b) + by_theta
        d_first = torch.where(below, mixed, d_mu)
    return [d_first, theta * d_theta if is_log[1] else d_theta]


_GRAPHS = {"ztpoisson": _ztp, "ztnb": _ztnb}


def first_derivative_graph(family: str, k: Tensor, params: Sequence[Tensor],
                           is_log: Sequence[bool]) -> list[Tensor]:  # fmt: skip
    """The first derivatives in the caller's parametrisation (d/dp, or p d/dp for a
    log-parameter; float64, the parameters ``params`` natural) as a graph whose derivatives
    are the second derivatives, accurate where the kernels' quotient forms cancel (see the
    module docstring). Its values are exactly the where-based kernel's (the sums above
    enter as ``kernel + (sum - sum.detach())``): only their derivatives are taken from the
    sums."""
    _, *kernel = KERNELS[family].traced(k, *params, True)
    values = chain_rule(kernel, list(params), is_log)
    graphs = _GRAPHS[family](k, *params, kernel, is_log)
    return [v.detach() + (g - g.detach()) for v, g in zip(values, graphs, strict=True)]
