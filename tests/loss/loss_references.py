"""mpmath references of the loss forms and their analytic derivatives, for the tests of
this directory (written from the textbook formulas, independently of ztbench.loss):

    ZTP : value = -k log(lam) + log(e^lam - 1),  d/dlam = -k/lam + 1/(1 - e^-lam)
    ZTNB: value = lgamma(theta) - lgamma(k + theta) + k log1p(theta/mu) + log(expm1(w)),
          w = theta log1p(mu/theta),
          d/dmu = k/(theta + mu) - k/mu + theta/(theta + mu)/(1 - e^-w)
                  ((1 + mu - k)/(mu (1 + mu)) at theta = 1, where its zero is exact),
          d/dtheta = psi(theta) - psi(k + theta) + k/(theta + mu)
                     + (log1p(mu/theta) - mu/(theta + mu))/(1 - e^-w)

and ``full`` = value + lgamma(k + 1). Values are mpmath numbers at ``prec`` bits."""

from __future__ import annotations

import mpmath as mp


def ztp(k: float, lam: float | mp.mpf, prec: int = 200) -> dict[str, mp.mpf]:
    with mp.workprec(prec):
        kk, lm = mp.mpf(k), mp.mpf(lam)
        value = -kk * mp.log(lm) + mp.log(mp.expm1(lm))
        return {"value": value, "full": value + mp.loggamma(kk + 1),
                "d_lam": -kk / lm + 1 / -mp.expm1(-lm)}  # fmt: skip


def ztnb(k: float, mu: float | mp.mpf, theta: float | mp.mpf,
         prec: int = 200) -> dict[str, mp.mpf]:  # fmt: skip
    with mp.workprec(prec):
        kk, m, t = mp.mpf(k), mp.mpf(mu), mp.mpf(theta)
        lx = mp.log1p(m / t)
        w = t * lx
        p1 = -mp.expm1(-w)
        value = mp.loggamma(t) - mp.loggamma(kk + t) + kk * mp.log1p(t / m) + mp.log(mp.expm1(w))
        d_mu = ((1 + m - kk) / (m * (1 + m)) if t == 1
                else kk / (t + m) - kk / m + t / (t + m) / p1)  # fmt: skip
        d_theta = mp.digamma(t) - mp.digamma(kk + t) + kk / (t + m) + (lx - m / (t + m)) / p1
        return {"value": value, "full": value + mp.loggamma(kk + 1), "d_mu": d_mu,
                "d_theta": d_theta}  # fmt: skip
