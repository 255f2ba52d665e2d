"""The published rules stated once (ztbench/rules.py), and the suites that use them."""

from __future__ import annotations

import numpy as np
import pytest

from ztbench.candidates import load_suite
from ztbench.core import rules
from ztbench.suite import SUITES_DIR


@pytest.mark.parametrize("path", sorted(SUITES_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_suite_has_the_published_domain(path) -> None:
    suite = load_suite(path)
    region = suite.regions[rules.PUBLISHED_DOMAIN_REGION]
    for family, bounds in rules.PUBLISHED_DOMAIN.items():
        assert region.applies_to(family)
        ((lo, hi),) = bounds.values()
        assert region.bounds["mean"] == (lo, hi)


def test_rules_switch_where_the_published_statements_say() -> None:
    # ZTP: lam = 10 takes the approximation
    assert list(rules.ztp_approximates(np.array([9.999, 10.0]))) == [False, True]
    mu = np.array([4.0, 4.0, 6.0, 0.5, 5.0])
    theta = np.array([6.0, 6.000001, 3.5, 14.4, 10.0])
    # text: mu + theta > 15 or (mu - 1)(theta - 1) > 15; (4 - 1)(6 - 1) = 15 is not > 15,
    # (6 - 1)(3.5 - 1) = 12.5 is not, (5 - 1)(10 - 1) = 36 is
    assert list(rules.ztnb_text_approximates(mu, theta)) == [False, True, False, False, True]
    # the code as published: (mu - 1 + 1e-8)(theta + 1e-8) > 15 or mu + theta > 15
    assert list(rules.ztnb_code_approximates(mu, theta)) == [True, True, True, False, True]
    # October 2024: theta + mu > 15 only
    assert not rules.ztnb_code_2024_10_approximates(mu, theta).any()  # 5 + 10 = 15 is not
    # the swept pair at t = 15 is the code's rule
    np.testing.assert_array_equal(
        rules.approximates("code_pair", 15.0, mu=mu, theta=theta),
        rules.ztnb_code_approximates(mu, theta),
    )


def test_curves_lie_on_the_switch() -> None:
    for m in (1.5, 2.0, 6.0):
        th = float(rules.pair_curve_theta(m))
        assert not rules.ztnb_code_approximates(m, np.nextafter(th, 0)) or m + th > 15
        assert rules.ztnb_code_approximates(m, np.nextafter(th, np.inf))
    th = 20.0
    w = th * np.log1p(rules.w_curve_mu(th, 7.0) / th)
    assert w == pytest.approx(7.0, rel=1e-14)
