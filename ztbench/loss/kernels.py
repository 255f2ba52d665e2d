"""The careful kernels: the loss and its first derivatives in float64, each formula written
once as a function of a dispatcher ``D`` (:mod:`ztbench.loss.dispatch`), and the two ways
of running it.

- :func:`ztp`, :func:`ztnb`: the formulas (their docstrings state each form and why it does
  not cancel).
- :func:`ztp_kernel`, :func:`ztnb_kernel`: ``D = WHERE``, every branch on every element with
  safe inputs where it is not taken (traceable and differentiable: torch.compile on a GPU
  and the differentiable backward use it).
- :func:`ztp_indexed`, :func:`ztnb_indexed`: ``D = INDEX``, each branch on its own elements
  (the eager paths, flat inputs).

The two give the same bits, element by element (tests/loss/test_nll.py): they compute the
same operations on the same operands. :func:`in_chunks` runs an eager kernel on slices
that stay in cache. Every kernel maps ``(k, *params, need_grad)`` to
``(value, *d_params)`` in float64, derivatives in the natural parameters (``None``
without ``need_grad``); :func:`chain_rule` converts them to log-parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ztbench.loss import primitives as P
from ztbench.loss.dispatch import INDEX, WHERE, Dispatcher

__all__ = [
    "EAGER_CHUNK",
    "FULL_CHUNK_SHARE",
    "KERNELS",
    "FamilyKernels",
    "chain_rule",
    "chunk_size",
    "flat_indices",
    "in_chunks",
    "to_float64",
    "ztnb",
    "ztnb_indexed",
    "ztnb_kernel",
    "ztp",
    "ztp_indexed",
    "ztp_kernel",
]

F64 = torch.float64


def ztp(D: Dispatcher, k: Tensor, lam: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """ZTP loss -k log(lam) + log(expm1(lam)) and its derivative in lam (float64).

    Value: ``h(lam) - (k - 1) log(lam)``, h(x) = log(expm1(x)/x); taking one log(lam)
    out of the truncation term removes the small-lam cancellation (k = 1: the loss ~
    lam/2). h(x) = log1p(sum_{n>=1} x^n/(n+1)!) for x < 1 (no cancellation) and
    x + log1p(-e^-x) - log(x) for x >= 1 (never overflows; at least half the larger
    term, see :func:`~ztbench.loss.primitives.log_expm1_over_x`).

    Derivative ``-k/lam + 1/(1 - e^-lam)``:

    - lam < 1: ``q(lam) - (k - 1)/lam``, q(x) = 1/(1 - e^-x) - 1/x by its Bernoulli series
      (1/2 at k = 1; for k >= 2 the second term dominates q < 0.6 by at least 1/0.6);
    - lam >= 1: ``(lam - k)/lam + 1/expm1(lam)``; lam - k is exact when k/2 <= lam <= 2k
      (Sterbenz), so at k = lam the result is exactly 1/expm1(lam) (tiny, not rounding
      noise of 1 - k/lam).
    """

    def small(k: Tensor, lam: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        value = P._h_small_fn(D)(lam) - (k - 1.0) * torch.log(lam)
        if not need_grad:
            return value
        return value, P._q_small_fn(D)(lam) - (k - 1.0) / lam

    def large(k: Tensor, lam: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        log_lam = torch.log(lam)
        e = torch.exp(-lam)  # underflows to 0 past lam ~ 745, where it no longer matters
        value = (lam + torch.log1p(-e) - log_lam) - (k - 1.0) * log_lam
        if not need_grad:
            return value
        # 1/expm1(lam) = e^-lam / (1 - e^-lam): no overflow of expm1 past lam ~ 709 (the
        # term is then a subnormal that the reference keeps)
        return value, (lam - k) / lam + e / (-torch.expm1(-lam))

    out = D.branch(lam < 1.0, small, large, (k, lam), (None, 0.5), (None, 2.0))
    if not need_grad:
        return out, None  # type: ignore[return-value]
    return out  # type: ignore[return-value]


def ztnb(
    D: Dispatcher, k: Tensor, mu: Tensor, theta: Tensor, need_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """ZTNB loss and its derivatives in mu and theta (float64).

    With x = mu/theta, lx = log1p(x), w = theta lx = -log P(0), r = lx/x, h(w) =
    log(expm1(w)/w), D = lgamma(k+theta) - lgamma(theta) - k log(theta) and
    G = D + (k - 1) log(theta) (:func:`~ztbench.loss.primitives.lgamma_excess`),
    the loss lgamma(theta) - lgamma(k+theta) + k log1p(theta/mu) + log(expm1(w)) is

    - x < 1: ``-D - (k - 1) log(mu) + k lx + log(r) + h(w)`` (theta >= 10; for theta < 10
      -D - (k - 1) log(mu) is evaluated as -G - (k - 1) log(x)): no k log(theta) is formed
      and subtracted (the large-theta cancellation); at k = 1 the loss is
      lx + log r + h(w) ~ x/2 + w/2 (the tiny-NLL region) to full relative accuracy;
      log r = log1p(log1pmx(x)/x) (:func:`~ztbench.loss.primitives.log1pmx_over_x`, no
      underflow at tiny x); w = mu r.
    - x >= 1: ``-G + k log1p(1/x) + log(lx) + h(w)`` (log(theta) cancelled analytically
      between lgamma(theta) ~ -log(theta) and log(w), which matters for tiny theta).

    d/dmu = k/(theta+mu) - k/mu + theta/(theta+mu) / (1 - e^-w) = num / (mu (1 + x)):

    - w <= 1: num = (1/r - 1) - (k - 1) + mu q(w), 1/r - 1 = -(log1pmx(x)/x) (x/lx) >= 0;
    - w > 1: num = (mu - k) + mu/expm1(w) (mu - k exact near k, Sterbenz).

    d/dtheta = psi(theta) - psi(k+theta) + k/(theta+mu) + s/(1 - e^-w), s = lx - y,
    y = x/(1+x) (s = -log1pmx(-y) for y <= 1/2); with E = k/theta - (psi(k+theta) -
    psi(theta)) and F = psi(k+theta) - psi(1+theta)
    (:func:`~ztbench.loss.primitives.digamma_excess`):

    - w > 1: ``Dpsi - log1pmx(t) + s/expm1(w)``, t = (k - mu)/(theta + mu),
      Dpsi = psi(theta) - psi(k+theta) + log1p(k/theta)
      (:func:`~ztbench.loss.primitives.digamma_log_difference`): the logs of
      the digamma difference, k/(theta+mu) and s cancel analytically into -log1pmx(t)
      ~ t^2/2, whose k - mu is exact near the mode (the Poisson limit's (k - mu)^2);
      log1pmx(t) = log((k+theta)/(theta+mu)) - t away from t = 0 (1 + t formed from the
      rounded t would cancel when k << mu);
    - w <= 1 and (x < 1 or theta >= 1): ``E - (k - 1) y/theta + log1pmx(x)/((1 + x) w)
      + s q(w)`` (the k/theta parts cancelled analytically; -y/theta + s/w =
      log1pmx(x)/((1+x)w));
    - w <= 1, x >= 1 and theta < 1: ``-F + k/(theta + mu) - x/((1 + x) w) + s q(w)``
      (the 1/theta of psi(theta) cancelled analytically against s/w).

    Where x = mu/theta overflows float64 (theta < mu/DBL_MAX, so theta < 1): the forms of
    :func:`_ztnb_huge_x` (log1p(x) from log(mu) - log(theta)), on their own elements.
    """
    x = mu / theta
    huge = torch.isinf(x)
    # eager, the common case: no element overflows. Then the finite forms alone, as one
    # graph: the branch's extra nodes would regroup autograd's sums (double backward, jvp)
    if not torch.compiler.is_compiling() and not _any_element(huge):
        return _ztnb_finite_x(D, k, mu, theta, need_grad)

    def finite(k: Tensor, mu: Tensor, theta: Tensor) -> Tensor | tuple[Tensor, ...]:
        out = _ztnb_finite_x(D, k, mu, theta, need_grad)
        return out if need_grad else out[0]  # type: ignore[return-value]

    def huge_x(k: Tensor, mu: Tensor, theta: Tensor) -> Tensor | tuple[Tensor, ...]:
        out = _ztnb_huge_x(D, k, mu, theta, need_grad)
        return out if need_grad else out[0]  # type: ignore[return-value]

    # safe stand-ins where a branch is not taken: mu/theta = 1e310 overflows (with w ~ 7e-8,
    # nothing infinite in the huge-x forms), mu = theta = 1 does not
    out = D.branch(huge, huge_x, finite, (k, mu, theta), (None, 1e300, 1e-10), (None, 1.0, 1.0))
    if not need_grad:
        return out, None, None  # type: ignore[return-value]
    return out  # type: ignore[return-value]


def _any_element(mask: Tensor) -> bool:
    """Whether any element of ``mask`` is set; False under ``torch.vmap``, which cannot branch
    on data (there the finite forms run alone, as they did before the huge-x forms)."""
    try:
        return bool(mask.any())
    except RuntimeError:  # vmap: "data-dependent control flow" is not supported
        return False


def _ztnb_huge_x(
    D: Dispatcher, k: Tensor, mu: Tensor, theta: Tensor, need_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """:func:`ztnb` where x = mu/theta overflows float64 (x > DBL_MAX, so theta < 1).

    With e = theta/mu < 2^-1024: log1p(x) = L + log1p(e), L = log(mu) - log(theta) >= 709
    (log1p(e) is below 2^-1033 of L: L is log1p(x) to its rounding; the difference of the
    two logs cancels at most 2-fold, |log mu| + |log theta| <= 1455 against L);
    y = x/(1 + x) = 1 and 1/x = e to far below an ulp; w = theta L. The forms of the
    x >= 1 branch with these (no quantity that overflows is formed):

    - loss ``-G + k e + log(L) + h(w)``, G = lgamma(k + theta) - lgamma(1 + theta) (theta
      < 1: no lgamma(theta) ~ -log(theta) is formed; |lgamma(1 + theta)| <= 0.13, and at
      k = 2 the two lgammas have opposite signs: no cancellation inside G). The sum
      crosses zero for k >= 7 (log L ~ G - h): float64 results are refined there in
      double-double (:func:`ztbench.loss.dd.ztnb.ztnb_value_terms`, L from the logs too);
    - d/dmu = theta/(theta + mu) (1/(1 - e^-w) - k/mu) = ``(1/L + theta (q(w) - k/mu))/mu``
      (theta/(theta + mu) = e to relative e; e/w = 1/(mu L); q(w) = 1/(1 - e^-w) - 1/w):
      every term >= 0 but k theta/mu, below k L/x < k 2^-1013 of the first;
    - d/dtheta = ``(k/mu - F) + ((L - 1) q(w) - 1/w)``, F = psi(k + theta) - psi(1 + theta):
      psi(theta) = psi(1 + theta) - 1/theta and s/(1 - e^-w) = (L - 1)(1/w + q(w)) =
      1/theta - 1/w + (L - 1) q(w), their 1/theta cancelled analytically. Near its zero
      crossing (w ~ 2/L) a few ulp times the cancellation: the double-double d/dtheta
      takes x as a quotient and is not used here.
    """
    log_l = torch.log(mu) - torch.log(theta)
    w = theta * log_l
    g = torch.lgamma(k + theta) - torch.lgamma(1.0 + theta)
    value = -g + k * (theta / mu) + torch.log(log_l) + P.log_expm1_over_x(w, D)
    if not need_grad:
        return value, None, None
    q = P.inv1mexp_minus_inv(w, D)
    d_mu = (1.0 / log_l + theta * (q - k / mu)) / mu
    f = torch.digamma(k + theta) - torch.digamma(1.0 + theta)
    d_theta = (k / mu - f) + ((log_l - 1.0) * q - 1.0 / w)
    return value, d_mu, d_theta


def _ztnb_finite_x(
    D: Dispatcher, k: Tensor, mu: Tensor, theta: Tensor, need_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """:func:`ztnb` where x = mu/theta is finite (see its docstring)."""
    x = mu / theta
    lx = torch.log1p(x)
    lpm_x = P.log1pmx_over_x(x, D)  # log1pmx(x)/x
    below = x < 1.0
    # safe stand-ins for (x, lx, lpm_x) in a branch not taken: a point of its own domain
    at_half = (0.5, math.log1p(0.5), (math.log1p(0.5) - 0.5) / 0.5)
    at_two = (2.0, math.log(3.0), None)

    def w_below(mu: Tensor, theta: Tensor, x: Tensor, lx: Tensor, lpm_x: Tensor) -> Tensor:
        return mu * (1.0 + lpm_x)  # no subnormal log1p(x) when x is tiny

    def w_above(mu: Tensor, theta: Tensor, x: Tensor, lx: Tensor, lpm_x: Tensor) -> Tensor:
        return theta * lx

    args_w = (mu, theta, x, lx, lpm_x)
    w = D.branch(below, w_below, w_above, args_w, (None, None, *at_half), (None,) * 5)
    h = P.log_expm1_over_x(w, D)  # type: ignore[arg-type]
    d, g = P.lgamma_excess(k, theta, D)

    def v_below(k, mu, theta, x, lx, lpm_x, h, d, g):  # type: ignore[no-untyped-def]
        # -D - (k-1) log(mu) for theta >= 10; for theta < 10 the same as -G - (k-1) log(x)
        # (x = mu/theta is rounded once, so log(x) is accurate to ~1 ulp of |log x|
        # whereas D = G - (k-1) log(theta) and (k-1) log(mu) would each carry ulps of
        # much larger numbers into a cancellation).
        logx = torch.where(x > 1e-300, torch.log(x), torch.log(mu) - torch.log(theta))
        head = torch.where(
            theta >= P.STIRLING_MIN, -d - torch.xlogy(k - 1.0, mu), -g - (k - 1.0) * logx
        )
        v = head + k * lx
        return v + torch.log1p(lpm_x) + h

    def v_above(k, mu, theta, x, lx, lpm_x, h, d, g):  # type: ignore[no-untyped-def]
        return -g + k * torch.log1p(1.0 / x) + torch.log(lx) + h

    args_v = (k, mu, theta, x, lx, lpm_x, h, d, g)
    keep3 = (None, None, None)
    value = D.branch(
        below, v_below, v_above, args_v, (*keep3, *at_half, *keep3), (*keep3, *at_two, *keep3)
    )
    if not need_grad:
        return value, None, None  # type: ignore[return-value]

    def s_of(lx: Tensor, y: Tensor) -> Tensor:
        """s = log1p(x) - x/(1+x), as -log1pmx(-y) for y <= 1/2."""

        def near(lx: Tensor, y: Tensor) -> Tensor:
            return -P.log1pmx(-y, D)

        def far(lx: Tensor, y: Tensor) -> Tensor:
            return lx - y

        return D.branch(y <= 0.5, near, far, (lx, y), (None, 0.25), (None, None))  # type: ignore[return-value]

    def over_mu_1x(num: Tensor, mu: Tensor, one_x: Tensor) -> Tensor:
        """num / (mu (1 + x)); where mu (1 + x) overflows (mu^2/theta > DBL_MAX) the two
        divisions one after the other (their result is then tiny, not 0)."""
        den = mu * one_x
        return torch.where(torch.isinf(den), num / one_x / mu, num / den)

    def g_wsmall(k, mu, theta, x, lx, lpm_x, w):  # type: ignore[no-untyped-def]
        q = P.inv1mexp_minus_inv(w, D)
        one_x = 1.0 + x
        # x/lx -> 1 as x -> 0: where mu/theta underflows to 0, lx = 0 too (0/0)
        x_lx = torch.where(x > 0.0, x / torch.where(x > 0.0, lx, 1.0), 1.0)
        d_mu = over_mu_1x(-lpm_x * x_lx - (k - 1.0) + mu * q, mu, one_x)
        y = x / one_x
        sq = s_of(lx, y) * q
        e, f = P.digamma_excess(k, theta, D)
        # log1pmx(x)/((1 + x) w) as (log1pmx(x)/x) (x/w)/(1 + x): no x^2 to underflow
        t_l = e - (k - 1.0) * y / theta + lpm_x * (x / w) / one_x + sq
        t_s = -f + k / (theta + mu) - x / (one_x * w) + sq
        return d_mu, torch.where((x < 1.0) | (theta >= 1.0), t_l, t_s)

    def g_wlarge(k, mu, theta, x, lx, lpm_x, w):  # type: ignore[no-untyped-def]
        one_x = 1.0 + x
        em1 = -torch.expm1(-w)  # 1 - e^-w; mu/expm1(w) = exp(log(mu) - w)/(1 - e^-w)
        d_mu = over_mu_1x((mu - k) + torch.exp(torch.log(mu) - w) / em1, mu, one_x)
        s = s_of(lx, x / one_x)
        # w > 1: psi(theta) - psi(k+theta) + k/(theta+mu) + s + s/expm1(w), regrouped
        # around t = (k - mu)/(theta + mu)
        t = (k - mu) / (theta + mu)

        def lpm_near(t: Tensor, k: Tensor, theta: Tensor, mu: Tensor) -> Tensor:
            return P.log1pmx(t, D)

        def lpm_far(t: Tensor, k: Tensor, theta: Tensor, mu: Tensor) -> Tensor:
            return torch.log((k + theta) / (theta + mu)) - t

        lpm_t = D.branch(
            t.abs() <= 0.5, lpm_near, lpm_far, (t, k, theta, mu), (0.0, *keep3), (None, *keep3)
        )
        s_pos = torch.where(s > 0, s, torch.ones_like(s))  # type: ignore[arg-type]
        s_em1 = torch.where(s > 0, torch.exp(torch.log(s_pos) - w) / em1, 0.0 * s)  # type: ignore[operator]
        return d_mu, P.digamma_log_difference(k, theta, D) - lpm_t + s_em1

    args_g = (k, mu, theta, x, lx, lpm_x, w)
    d_mu, d_theta = D.branch(
        w <= 1.0, g_wsmall, g_wlarge, args_g, (None,) * 6 + (0.5,), (None,) * 6 + (1.0,)
    )
    return value, d_mu, d_theta  # type: ignore[return-value]


def ztp_kernel(k: Tensor, lam: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """:func:`ztp` with every branch everywhere (traced by torch.compile, autograd)."""
    return ztp(WHERE, k, lam, need_grad)


def ztnb_kernel(
    k: Tensor, mu: Tensor, theta: Tensor, need_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """:func:`ztnb` with every branch everywhere (traced by torch.compile, autograd)."""
    return ztnb(WHERE, k, mu, theta, need_grad)


def ztp_indexed(k: Tensor, lam: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """:func:`ztp`, eager, each branch on its own elements (any shape; flattened inside)."""
    v, g = ztp(INDEX, k.reshape(-1), lam.reshape(-1), need_grad)
    return v.reshape(lam.shape), None if g is None else g.reshape(lam.shape)


def ztnb_indexed(
    k: Tensor, mu: Tensor, theta: Tensor, need_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """:func:`ztnb`, eager, each branch on its own elements (any shape; flattened inside)."""
    outs = ztnb(INDEX, k.reshape(-1), mu.reshape(-1), theta.reshape(-1), need_grad)
    return tuple(None if o is None else o.reshape(mu.shape) for o in outs)  # type: ignore[return-value]


# (k, *params, need_grad) -> (value, *d_params), float64
Kernel = Callable[..., tuple[Tensor | None, ...]]


@dataclass(frozen=True)
class FamilyKernels:
    """A family's kernel, run two ways: ``traced`` (WHERE) and ``indexed`` (INDEX)."""

    traced: Kernel
    indexed: Kernel


KERNELS: dict[str, FamilyKernels] = {
    "ztpoisson": FamilyKernels(traced=ztp_kernel, indexed=ztp_indexed),
    "ztnb": FamilyKernels(traced=ztnb_kernel, indexed=ztnb_indexed),
}


def flat_indices(mask: Tensor) -> Tensor:
    """The indices of the True (nonzero) elements of a flat tensor."""
    return mask.nonzero().squeeze(1)


def to_float64(t: Tensor, is_log: bool) -> Tensor:
    """A parameter as its natural value in float64: exp of a log-parameter is taken in
    float64, where it stays finite for every float32 log-parameter below log(2^128)."""
    t64 = t.to(F64)
    return torch.exp(t64) if is_log else t64


def chain_rule(ds: list[Tensor], ps: list[Tensor], is_log: tuple[bool, ...] | list[bool]
               ) -> list[Tensor]:  # fmt: skip
    """Derivatives in natural parameters to the caller's: d/dlog p = p d/dp."""
    return [d * p if lg else d for d, p, lg in zip(ds, ps, is_log, strict=True)]


# Elements per thread and call of an eager kernel: the eager path makes dozens of passes
# over its float64 temporaries, and 2^15 elements per thread (256 KiB per temporary)
# keep them in a core's L2 cache, which is faster than one call over 10^6 elements;
# much smaller slices pay per-operation overhead instead. A call takes EAGER_CHUNK
# elements per intra-op thread, so that each operation still spreads over every thread
# (torch splits an operation into pieces of 2^15 elements at least).
EAGER_CHUNK = 2**15
# The full form's refinement (double-double terms of lgamma(k + 1) and of the loss, Loader's
# terms and their condition number) holds ~4 kB per element at its peak, about 4x the
# careful kernel with its refinement: its slices are a quarter as long, so that its working
# set per slice stays that of the kernel's.
FULL_CHUNK_SHARE = 4


def chunk_size(share: int = 1) -> int:
    """Elements per eager call: EAGER_CHUNK // share per intra-op thread."""
    return max(1, EAGER_CHUNK // share) * max(1, torch.get_num_threads())


def in_chunks(kernel, need: bool, k: Tensor, *params: Tensor,  # type: ignore[no-untyped-def]
              extra: tuple[Tensor, ...] = (), share: int = 1) -> list[Tensor | None]:  # fmt: skip
    """kernel(k, *params, *extra, need) on slices of :func:`chunk_size` (``share``)
    elements on the CPU (elementwise: the same bits as one call), the outputs (the value,
    then one per parameter when ``need``) written into full-size tensors of k's dtype.
    ``extra``: further inputs of the same shape, sliced alongside, with no output of their
    own."""
    shape = k.shape
    flat = [t.reshape(-1) for t in (k, *params, *extra)]
    n = flat[0].numel()
    chunk = chunk_size(share)
    if n <= chunk or k.device.type != "cpu":  # a GPU wants one large launch per op
        outs = list(kernel(*flat, need))
    else:
        outs = [torch.empty_like(flat[0])]
        outs += [torch.empty_like(flat[0]) if need else None for _ in params]
        for start in range(0, n, chunk):
            part = kernel(*(t[start : start + chunk] for t in flat), need)
            for out, res in zip(outs, part, strict=True):
                if out is not None:
                    out[start : start + chunk] = res
    return [None if o is None else o.reshape(shape) for o in outs]
