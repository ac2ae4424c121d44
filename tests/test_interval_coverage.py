"""The report's intervals cover what they say: the coverage study (reports/coverage.py) on
synthetic runs with a known ratio, at the seed counts the suite runs.

Monte-Carlo error: 40,000 trials give a coverage near 0.95 to +-0.0011 (one standard error),
4,000 trials to +-0.0045; every bound below is several standard errors from the measured value
(docs/STATISTICS.md), so the test fails only when a method changes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from reports import coverage, stats

BOTH = coverage.DISTRIBUTIONS


@pytest.mark.parametrize("distribution", BOTH)
def test_the_reports_interval_covers_95_percent_at_five_seeds(distribution: str) -> None:
    """The verdict's interval over seeds (a paired t on log ratios) at the quick preset's 5
    seeds. With slow runs it is a little conservative (the slow runs widen the spread the t
    reads more than they move the mean): at most 0.975."""
    c = coverage.coverage("paired-t", distribution, 5)
    assert 0.93 <= c <= (0.97 if distribution == "log-normal" else 0.975)


def test_the_paired_t_holds_at_three_seeds_and_welchs_errs_on_the_wide_side() -> None:
    """The ablation preset's 3 seeds: the paired t still covers 95 % on log-normal runs; the
    Welch t (groups not paired by seed) never covers less than it says."""
    assert 0.94 <= coverage.coverage("paired-t", "log-normal", 3) <= 0.96
    for n in (3, 5):
        assert coverage.coverage("welch-t", "log-normal + slow runs", n, trials=10_000) >= 0.95


@pytest.mark.parametrize("distribution", BOTH)
def test_the_percentile_bootstrap_under_covers_at_three_seeds(distribution: str) -> None:
    """A resampled median of 3 is one of the 3 values: about 90 % for a nominal 95 %, which is
    why a percentile interval from fewer than 5 values is labelled approximate."""
    c = coverage.coverage("percentile", distribution, 3, trials=2000)
    assert 0.87 <= c <= 0.93
    assert stats.Interval(1.0, 0.9, 1.1, 3, method=stats.PERCENTILE).approximate


def test_the_true_ratios_are_of_the_quantity_each_method_estimates() -> None:
    """Log-normal: the ratio of medians is the ratio of geometric means (exp(E log)). With
    slow runs in groups of different spread, the medians' ratio moves and the geometric means'
    does not (the slow-down's mean log is the same in both groups)."""
    plain, slow = (coverage.true_ratios(d) for d in BOTH)
    assert plain["median"] == pytest.approx(coverage.RATIO, rel=1e-6)
    assert plain["geometric"] == pytest.approx(coverage.RATIO)
    assert slow["geometric"] == pytest.approx(coverage.RATIO)
    assert abs(slow["median"] - coverage.RATIO) > 0.01
    # the mixture's population median against a large sample of it
    a, b = coverage.draw("log-normal + slow runs", 200, 2000, seed=7)
    assert float(np.median(a) / np.median(b)) == pytest.approx(slow["median"], rel=0.005)
    assert math.exp(np.log(a).mean() - np.log(b).mean()) == pytest.approx(
        slow["geometric"], rel=0.005
    )


def test_the_study_is_seeded_and_says_what_it_was_given() -> None:
    assert coverage.coverage("bca", "log-normal", 5, trials=300) == coverage.coverage(
        "bca", "log-normal", 5, trials=300
    )
    with pytest.raises(ValueError, match="method"):
        coverage.coverage("wald", "log-normal", 5, trials=10)
    with pytest.raises(ValueError, match="distribution"):
        coverage.coverage("paired-t", "normal", 5, trials=10)
