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


def test_three_seeds_give_a_coarse_percentile_interval_from_the_values() -> None:
    """With 3 values a resampled median is one of them: the bounds are ratios of values, and
    the interval says it is approximate."""
    iv = stats.ratio_interval([4.0, 4.2, 4.4], [2.0, 2.1, 2.2], method="percentile")
    assert iv.estimate == pytest.approx(2.0)
    assert 4.0 / 2.2 - 1e-9 <= iv.low <= iv.estimate <= iv.high <= 4.4 / 2.0 + 1e-9
    assert stats.difference(iv) == "higher"
    assert iv.method == stats.PERCENTILE and iv.approximate
    assert iv.label == "percentile bootstrap, n=3, approximate"
    a, b = [4.0, 4.2, 4.4, 4.1, 4.3], [2.0, 2.1, 2.2, 2.3, 1.9]
    five = stats.ratio_interval(a, b, method="percentile")
    assert five.has_interval and not five.approximate and five.label.endswith("n=5")


def test_the_t_interval_is_scipys_on_the_logs() -> None:
    """Welch's and the paired t on log values, against scipy.stats' own t-tests."""
    from scipy import stats as sps

    a = np.array([4.0, 4.4, 3.9, 5.1, 4.6])
    b = np.array([2.0, 2.6, 2.1, 2.2, 2.9])
    welch = stats.ratio_interval(a, b, unit="seeds")
    ref = sps.ttest_ind(np.log(a), np.log(b), equal_var=False).confidence_interval(0.95)
    assert welch.method == stats.WELCH and welch.n == 5 and welch.unit == "seeds"
    assert welch.estimate == pytest.approx(np.exp(np.log(a).mean() - np.log(b).mean()))
    assert (welch.low, welch.high) == pytest.approx((np.exp(ref.low), np.exp(ref.high)))
    paired = stats.ratio_interval(a, b, paired=True)
    ref = sps.ttest_rel(np.log(a), np.log(b)).confidence_interval(0.95)
    assert paired.method == stats.PAIRED and paired.estimate == pytest.approx(welch.estimate)
    assert (paired.low, paired.high) == pytest.approx((np.exp(ref.low), np.exp(ref.high)))
    assert not paired.approximate and paired.label == "t on log ratios, paired, n=5"
    assert paired.described() == f"{paired.text()} (t on log ratios, paired, n=5)"
    # a seed missing on one side leaves its pair out; groups of unequal length cannot pair
    gap = stats.ratio_interval([4.0, math.nan, 3.9, 5.1], [2.0, 2.6, math.nan, 2.2], paired=True)
    assert gap.n == 2 and gap.estimate == pytest.approx(math.sqrt(2.0 * 5.1 / 2.2))
    with pytest.raises(ValueError, match="paired"):
        stats.ratio_interval([1.0, 2.0], [1.0, 2.0, 3.0], paired=True)
    # values that are not all positive have no logs: the percentile bootstrap, and it says so
    assert stats.ratio_interval([1.0, 2.0, 0.0], [1.0, 2.0]).method == stats.PERCENTILE
    with pytest.raises(ValueError, match="estimate"):
        stats.ratio_interval(a, b, estimate=2.0)
    with pytest.raises(ValueError, match="method"):
        stats.ratio_interval(a, b, method="bca")


def test_bootstrap_is_reproducible() -> None:
    a, b = [3.0, 1.0, 2.0, 5.0], [2.0, 2.5, 1.5, 3.0]
    assert stats.ratio_interval(a, b) == stats.ratio_interval(a, b)
    assert stats.median_interval(a) == stats.median_interval(a)


def test_single_value_has_no_interval() -> None:
    iv = stats.ratio_interval([2.0], [1.0, 1.1, 0.9])
    assert iv.estimate == pytest.approx(2.0 / (1.0 * 1.1 * 0.9) ** (1 / 3))
    assert not iv.has_interval and iv.n == 1 and iv.label == ""
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
    iv = stats.ratio_interval([2.0, 2.0], [1.0, 1.0], method="percentile", estimate=1.9)
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
    iv = stats.ratio_interval(x, x + 1, method="percentile")
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


def test_performance_profile_default_taus_run_from_one_past_the_worst_ratio() -> None:
    """60 factors from 1 to 1.1 x the largest finite ratio (at least 2), in optimizer order of
    first appearance, and the empty profile keeps its columns."""
    times = {"w1": {"b": 10.0, "a": 40.0}, "w2": {"b": 30.0, "a": 15.0}}
    prof = stats.performance_profile(times)
    assert list(dict.fromkeys(prof["optimizer"])) == ["b", "a"]
    taus = prof.loc[prof["optimizer"] == "a", "tau"].to_numpy()
    assert len(taus) == 60 and taus[0] == 1.0 and taus[-1] == pytest.approx(4.4)
    assert np.allclose(np.diff(np.log(taus)), np.log(4.4) / 59)
    last = prof.groupby("optimizer")["fraction"].last()
    assert last["a"] == 1.0 and last["b"] == 1.0
    close = stats.performance_profile({"w": {"a": 1.0, "b": 1.2}})
    assert close["tau"].max() == pytest.approx(2.0)  # ratios below 2: the axis still reaches 2
    never = stats.performance_profile({"w": {"a": math.inf}})
    assert never["tau"].max() == pytest.approx(2.0) and (never["fraction"] == 0.0).all()
    empty = stats.performance_profile(pd.DataFrame(columns=["workload", "optimizer", "seconds"]))
    assert list(empty.columns) == ["optimizer", "tau", "fraction"]


def test_performance_profile_takes_the_fastest_run_and_refuses_non_positive_times() -> None:
    frame = pd.DataFrame(
        {
            "workload": ["w1", "w1", "w1", "w2", "w2", "w3", "w3"],
            "optimizer": ["a", "a", "b", "a", "b", "a", "b"],
            "seconds": [30.0, 10.0, 20.0, 0.0, 5.0, -1.0, math.nan],
        }
    )
    got = stats.performance_profile(frame, taus=[1.0, 2.0]).set_index(["optimizer", "tau"])
    fraction = got["fraction"]
    # w1: a's fastest of two runs (10 s) is the best; w2: a 0 s is not a time, b wins;
    # w3: neither has a time (negative, NaN), so nobody reaches it
    assert fraction[("a", 1.0)] == pytest.approx(1 / 3)
    assert fraction[("a", 2.0)] == pytest.approx(1 / 3)
    assert fraction[("b", 1.0)] == pytest.approx(1 / 3)
    assert fraction[("b", 2.0)] == pytest.approx(2 / 3)


def test_bootstrap_resamples_every_value_and_fills_every_resample() -> None:
    """Two values: a resample's median is 0, 5 or 10 with probabilities 1/4, 1/2, 1/4; a
    resample count across several chunks leaves no resample undrawn."""
    rng = np.random.default_rng(0)
    medians = stats.bootstrap_medians([0.0, 10.0], resamples=4000, rng=rng)
    shares = {v: float(np.mean(medians == v)) for v in (0.0, 5.0, 10.0)}
    assert shares == pytest.approx({0.0: 0.25, 5.0: 0.5, 10.0: 0.25}, abs=0.03)
    many = np.arange(1.0, 5001.0)  # 5000 values: 400 resamples per chunk
    medians = stats.bootstrap_medians(many, resamples=1001, rng=np.random.default_rng(1))
    assert medians.shape == (1001,)
    assert np.all((medians >= 1.0) & (medians <= 5000.0))
    assert abs(float(np.median(medians)) - 2500.5) < 100
    assert np.isnan(stats.bootstrap_medians([], resamples=3, rng=rng)).tolist() == [True] * 3


def test_bounds_are_the_two_tails_of_the_level() -> None:
    assert stats._bounds(np.arange(1001.0), 0.95) == pytest.approx((25.0, 975.0))
    assert stats._bounds(np.arange(1001.0), 0.5) == pytest.approx((250.0, 750.0))
    assert stats._bounds(np.array([np.nan, 3.0, np.inf, 3.0]), 0.95) == (3.0, 3.0)


def test_ratio_interval_keeps_its_unit_and_the_texts_say_why_there_is_none() -> None:
    for iv in (
        stats.ratio_interval([], [1.0], unit="seeds"),
        stats.ratio_interval([2.0], [1.0, 1.0], unit="seeds"),
        stats.ratio_interval([2.0, 3.0], [1.0, 1.5], unit="seeds"),
    ):
        assert iv.unit == "seeds"
    assert stats.ratio_interval([2.0, 3.0], [1.0, 1.5]).unit == ""
    assert stats.ratio_interval([], [1.0], method="percentile", estimate=1.5).estimate == 1.5
    assert stats.Interval(1.0, n=0).text() == "no interval"
    assert stats.Interval(1.0, n=3).text() == "no interval"
    assert stats.Interval(1.2, 1.05, 1.5, 3).text() == "[1.05, 1.50]"
    assert stats.Interval(1.2, 1.05, 1.5, 3).text("{:.1f}") == "[1.1, 1.5]"
    assert stats.difference(stats.Interval(math.nan, 1.0, 2.0, 3)) == "unknown"
    assert stats.difference(stats.Interval(0.5, 0.4, 0.9, 3)) == "lower"


def test_spread_of_one_value_is_one_and_of_no_positive_median_is_nan() -> None:
    assert stats.spread([5.0]) == 1.0
    assert math.isnan(stats.spread([0.0, 0.0, 1.0]))
