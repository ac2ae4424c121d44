"""The report's statistics (reports/stats.py) on inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reports import stats


def test_identical_groups_give_ratio_one_inside_the_interval() -> None:
    x = [1.0, 1.1, 0.9, 1.05, 0.95]
    iv = stats.ratio_interval(x, x, unit="seeds")
    assert iv.estimate == pytest.approx(1.0)
    assert iv.low < 1.0 < iv.high
    assert iv.contains_one
    assert stats.difference(iv) == "none"
    assert iv.n == 5 and iv.unit == "seeds"


def test_groups_twice_apart_exclude_one() -> None:
    rng = np.random.default_rng(0)
    slow = 2.0 * (1 + 0.02 * rng.standard_normal(30))
    fast = 1.0 * (1 + 0.02 * rng.standard_normal(30))
    iv = stats.ratio_interval(slow, fast)
    assert iv.estimate == pytest.approx(2.0, rel=0.03)
    assert 1.8 < iv.low < 2.0 < iv.high < 2.2
    assert not iv.contains_one
    assert stats.difference(iv) == "higher"
    assert stats.difference(stats.ratio_interval(fast, slow)) == "lower"


def test_three_seeds_give_a_coarse_interval_from_the_values() -> None:
    """With 3 values a resampled median is one of them: the bounds are ratios of values."""
    iv = stats.ratio_interval([4.0, 4.2, 4.4], [2.0, 2.1, 2.2])
    assert iv.estimate == pytest.approx(2.0)
    assert 4.0 / 2.2 - 1e-9 <= iv.low <= iv.estimate <= iv.high <= 4.4 / 2.0 + 1e-9
    assert stats.difference(iv) == "higher"


def test_bootstrap_is_reproducible() -> None:
    a, b = [3.0, 1.0, 2.0, 5.0], [2.0, 2.5, 1.5, 3.0]
    assert stats.ratio_interval(a, b) == stats.ratio_interval(a, b)
    assert stats.median_interval(a) == stats.median_interval(a)


def test_single_value_has_no_interval() -> None:
    iv = stats.ratio_interval([2.0], [1.0, 1.1, 0.9])
    assert iv.estimate == pytest.approx(2.0)
    assert not iv.has_interval and iv.n == 1
    assert iv.text() == stats.NO_INTERVAL == "n=1, no interval"
    assert stats.difference(iv) == "unknown"
    m = stats.median_interval([7.0])
    assert m.estimate == 7.0 and not m.has_interval and m.text() == "n=1, no interval"


def test_degenerate_inputs() -> None:
    assert math.isnan(stats.ratio_interval([], [1.0, 2.0]).estimate)
    assert stats.ratio_interval([], [1.0]).n == 0
    # NaNs are left out; a zero median in the denominator gives no ratio
    iv = stats.ratio_interval([1.0, math.nan, 1.0], [1.0, 1.0])
    assert iv.estimate == 1.0 and iv.n == 2
    assert math.isnan(stats.ratio_interval([1.0, 2.0], [0.0, 0.0]).estimate)
    # constant groups: a zero-width interval, at the ratio
    c = stats.ratio_interval([3.0, 3.0, 3.0], [1.5, 1.5])
    assert (c.low, c.estimate, c.high) == pytest.approx((2.0, 2.0, 2.0))
    assert stats.median_interval([]).n == 0
    assert math.isnan(stats.spread([]))


def test_estimate_from_a_table_is_kept() -> None:
    iv = stats.ratio_interval([2.0, 2.0], [1.0, 1.0], estimate=1.9)
    assert iv.estimate == 1.9 and iv.low == pytest.approx(2.0)


def test_median_interval_covers_the_median() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 1.0, 400)
    iv = stats.median_interval(x)
    assert iv.low < 10.0 < iv.high and iv.high - iv.low < 0.5


def test_many_values_get_fewer_resamples_within_the_budget() -> None:
    """The steps of one long run: fewer resamples (never fewer than MIN_RESAMPLES), so that
    an interval draws at most the budget's values, and is still an interval."""
    assert stats.resamples_for(10) == stats.RESAMPLES
    n = 20_000
    drawn = stats.resamples_for(n)
    assert stats.MIN_RESAMPLES <= drawn < stats.RESAMPLES and drawn * n <= stats._BUDGET
    assert stats.resamples_for(10**9) == stats.MIN_RESAMPLES
    x = np.random.default_rng(2).random(n)
    iv = stats.ratio_interval(x, x + 1)
    assert iv.has_interval and iv.low < iv.estimate < iv.high and iv.n == n


def test_median_interval_says_what_it_was_given() -> None:
    empty = stats.median_interval([], unit="ms")
    assert math.isnan(empty.estimate) and empty.n == 0 and empty.unit == "ms"
    one = stats.median_interval([7.0], unit="seeds")
    assert (one.n, one.unit) == (1, "seeds")
    two = stats.median_interval([1.0, 3.0])  # two values already resample
    assert two.has_interval and two.n == 2 and two.unit == ""
    assert 1.0 <= two.low <= two.estimate == 2.0 <= two.high <= 3.0
    assert stats.median_interval(np.arange(9.0), unit="steps").n == 9


def test_spread() -> None:
    assert stats.spread([1.0, 1.0, 1.0]) == 1.0
    assert stats.spread([14.0, 14.0, 49.0]) == pytest.approx(3.5)


def test_performance_profile() -> None:
    """w1: a 10 s, b 20 s; w2: a 30 s, b 15 s; w3: b 5 s, a never."""
    times = {
        "w1": {"a": 10.0, "b": 20.0},
        "w2": {"a": 30.0, "b": 15.0},
        "w3": {"a": math.inf, "b": 5.0},
    }
    prof = stats.performance_profile(times, taus=[1.0, 2.0, 100.0])
    got = prof.set_index(["optimizer", "tau"])["fraction"]
    assert got[("a", 1.0)] == pytest.approx(1 / 3)
    assert got[("a", 2.0)] == pytest.approx(2 / 3)
    assert got[("a", 100.0)] == pytest.approx(2 / 3)  # never reached w3
    assert got[("b", 1.0)] == pytest.approx(2 / 3)
    assert got[("b", 2.0)] == pytest.approx(1.0)
    # an optimizer absent from a workload counts as not reaching it
    frame = pd.DataFrame(
        {"workload": ["w1", "w1", "w2"], "optimizer": ["a", "b", "a"], "seconds": [1.0, 2.0, 1.0]}
    )
    got = stats.performance_profile(frame, taus=[1.0, 5.0]).set_index(["optimizer", "tau"])
    assert got.loc[("b", 5.0), "fraction"] == pytest.approx(0.5)
    none = pd.DataFrame(columns=["workload", "optimizer", "seconds"])
    assert stats.performance_profile(none).empty
