"""The statistics behind a verdict: confidence intervals for a median and for a ratio, the rule
that turns an interval into words, the spread of repeated timings, and AlgoPerf's performance
profile.

Pure numpy/pandas (and scipy's t quantiles) and seeded, so a report built twice from the same
records says the same. Which interval was measured (reports/coverage.py, docs/STATISTICS.md):
on run times with a known ratio, the percentile bootstrap of a ratio of medians covers about
90 % at 3 values a group (a resampled median of 3 is one of the 3 values) for a nominal 95 %;
a paired t on the per-seed log ratios covers 95 % on log-normal runs at 3, 5 and 10 seeds (97 %
with slow outlier runs: on the wide side). So a ratio over seeds is a ratio of geometric means
with a t-interval on the logs: paired where both groups ran the same seeds, Welch's otherwise.
A ratio a table already computed as a ratio of medians (over the steps of one run: thousands
of values) keeps its percentile bootstrap, each group resampled on its own stream; from fewer
than ``MIN_N`` values that interval is labelled approximate. With a single value in a group
there is no spread to estimate: the interval is left out and the text says "n=1, no interval"
instead of inventing one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.special import stdtrit

#: Resamples per interval: enough for stable 2.5 % / 97.5 % percentiles, fast on a laptop.
RESAMPLES = 4000
#: The fixed seed of every bootstrap, so that the report is reproducible.
SEED = 20_240_917
#: Confidence level of every interval.
LEVEL = 0.95
#: Largest resample matrix (values) built at once; bigger ones are drawn in chunks.
_CHUNK = 2_000_000
#: Values drawn per interval at most: a group of many values (the steps of one long run) gets
#: fewer resamples, never fewer than ``MIN_RESAMPLES``.
_BUDGET = 20_000_000
MIN_RESAMPLES = 1000
#: Said where a group has a single value.
NO_INTERVAL = "n=1, no interval"
#: The methods, as the report names them beside each interval.
PERCENTILE = "percentile bootstrap"
WELCH = "t on log values, Welch"
PAIRED = "t on log ratios, paired"
#: Fewest values a group for a percentile-bootstrap interval that covers what it says
#: (docs/STATISTICS.md); below it the interval is labelled approximate.
MIN_N = 5


@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval (NaN bounds: none).

    ``n`` is the size of the smaller group (for a paired interval: the pairs); ``unit`` what
    one value is (``seeds``: one per run; ``steps`` or ``epochs``: the measurements of a single
    run); ``method`` how the interval was computed (``PERCENTILE``, ``WELCH``, ``PAIRED``).
    """

    estimate: float
    low: float = math.nan
    high: float = math.nan
    n: int = 0
    unit: str = ""
    method: str = ""

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def contains_one(self) -> bool:
        """True when the interval includes 1: no measurable difference."""
        return self.has_interval and self.low <= 1.0 <= self.high

    @property
    def approximate(self) -> bool:
        """True for a percentile-bootstrap interval from fewer than ``MIN_N`` values a group:
        it covers less than it says (about 90 % at 3 values for a nominal 95 %)."""
        return self.has_interval and self.method == PERCENTILE and self.n < MIN_N

    @property
    def label(self) -> str:
        """How the interval was computed and from how many values: ``t on log ratios, paired,
        n=5`` (``, approximate`` where it is); empty without an interval."""
        if not self.has_interval:
            return ""
        parts = [self.method or "interval", f"n={self.n}"]
        return ", ".join(parts + (["approximate"] if self.approximate else []))

    def text(self, fmt: str = "{:.2f}") -> str:
        """``[low, high]``, or why there is no interval."""
        if not self.has_interval:
            return NO_INTERVAL if self.n == 1 else "no interval"
        return f"[{fmt.format(self.low)}, {fmt.format(self.high)}]"

    def described(self, fmt: str = "{:.2f}") -> str:
        """``[low, high] (method, n=...)``: the interval with how it was computed."""
        return f"{self.text(fmt)} ({self.label})" if self.has_interval else self.text(fmt)


def _array(values: Iterable[float]) -> np.ndarray:
    return np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)


def _values(values: Iterable[float]) -> np.ndarray:
    x = _array(values)
    return x[np.isfinite(x)]


def bootstrap_medians(
    values: Iterable[float], *, resamples: int = RESAMPLES, rng: np.random.Generator
) -> np.ndarray:
    """The median of each of ``resamples`` resamples (with replacement) of ``values``."""
    x = _values(values)
    n = len(x)
    if n == 0:
        return np.full(resamples, math.nan)
    out = np.empty(resamples)
    chunk = max(1, _CHUNK // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = np.median(x[idx], axis=1)
    return out


def resamples_for(n: int, resamples: int = RESAMPLES) -> int:
    """The resamples drawn for a group of ``n`` values (fewer for very large groups)."""
    return max(min(resamples, MIN_RESAMPLES), min(resamples, _BUDGET // max(n, 1)))


@lru_cache(maxsize=64)
def _cached_medians(data: bytes, resamples: int, seed: int, stream: int) -> np.ndarray:
    """Resampled medians of one group, kept: a group compared with several others (FNGD
    against each baseline) is resampled once, on the same stream."""
    x = np.frombuffer(data, dtype=float)
    rng = np.random.default_rng([seed, stream])
    out = bootstrap_medians(x, resamples=resamples_for(len(x), resamples), rng=rng)
    out.setflags(write=False)
    return out


def _medians(x: np.ndarray, resamples: int, seed: int, stream: int) -> np.ndarray:
    return _cached_medians(np.ascontiguousarray(x, dtype=float).tobytes(), resamples, seed, stream)


def _bounds(samples: np.ndarray, level: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if len(samples) == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [tail, 1.0 - tail])
    return float(lo), float(hi)


def log_t_interval(
    log_a: np.ndarray, log_b: np.ndarray, *, paired: bool, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A t-interval for ``mean(log a) - mean(log b)`` along the last axis: the log of a ratio of
    geometric means and its bounds. Welch's (unequal variances, Welch-Satterthwaite degrees of
    freedom) for independent groups; ``paired``: a one-sample t on the per-seed differences
    (same length, same seed in the same place). Vectorised: reports/coverage.py scores this
    very function on many trials at once."""
    log_a, log_b = np.asarray(log_a, dtype=float), np.asarray(log_b, dtype=float)
    q = 1.0 - (1.0 - level) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        if paired:
            d = log_a - log_b
            n = d.shape[-1]
            est = d.mean(axis=-1)
            se = d.std(axis=-1, ddof=1) / math.sqrt(n)
            df = np.full_like(est, n - 1.0)
        else:
            na, nb = log_a.shape[-1], log_b.shape[-1]
            est = log_a.mean(axis=-1) - log_b.mean(axis=-1)
            va = log_a.var(axis=-1, ddof=1) / na
            vb = log_b.var(axis=-1, ddof=1) / nb
            se = np.sqrt(va + vb)
            df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
        # identical values in every group: no spread, a zero-width interval at the estimate
        half = np.where(se > 0, stdtrit(np.where(se > 0, df, 1.0), q) * se, 0.0)
    return est, est - half, est + half


def median_interval(
    values: Iterable[float],
    *,
    unit: str = "",
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> Interval:
    """The median of ``values`` and its percentile-bootstrap interval (none for fewer than 2
    values; approximate for fewer than ``MIN_N``)."""
    x = _values(values)
    if len(x) == 0:
        return Interval(math.nan, n=0, unit=unit)
    est = float(np.median(x))
    if len(x) < 2:
        return Interval(est, n=len(x), unit=unit)
    lo, hi = _bounds(_medians(x, resamples, seed, 0), level)
    return Interval(est, lo, hi, len(x), unit, PERCENTILE)


#: What ``ratio_interval``'s ``method`` takes.
METHODS = ("t", "percentile")


def ratio_interval(
    numerator: Iterable[float],
    denominator: Iterable[float],
    *,
    method: str = "t",
    paired: bool = False,
    estimate: float | None = None,
    unit: str = "",
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> Interval:
    """A ratio numerator : denominator and its interval.

    ``method="t"`` (the default, for values a run each): the ratio of geometric means, with a
    t-interval on the logs: Welch's for independent groups, or with ``paired`` (the groups
    ran the same seeds, in the same order) a t on the per-seed log ratios. Values that are
    not all positive have no logs: they get the percentile bootstrap instead (``method`` of
    the result says which). ``method="percentile"``: median(numerator) / median(denominator)
    and its percentile bootstrap, each group resampled on its own stream (a group of more
    than ``_BUDGET / RESAMPLES`` values, the steps of one long run, gets fewer resamples, at
    least ``MIN_RESAMPLES``); ``estimate`` replaces its point estimate when a table already
    computed that ratio of medians, so that the two agree. No interval when a group has
    fewer than 2 values, or a median is not positive.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if estimate is not None and method != "percentile":
        raise ValueError(
            "estimate: a table's ratio of medians goes with method='percentile' (the t "
            f"interval is of the ratio of geometric means), got method={method!r}"
        )
    if paired:
        a, b = _array(numerator), _array(denominator)
        if a.shape != b.shape:
            raise ValueError(
                f"paired: the groups need a value per seed each, got {len(a)} and {len(b)} values"
            )
        both = np.isfinite(a) & np.isfinite(b)  # a seed missing on one side leaves the pair
        num, den = a[both], b[both]
    else:
        num, den = _values(numerator), _values(denominator)
    positive = len(num) > 0 and len(den) > 0 and bool((num > 0).all() and (den > 0).all())
    if method == "t" and positive:
        return _t_ratio(num, den, paired=paired, unit=unit, level=level)
    return _percentile_ratio(num, den, estimate, unit, resamples, seed, level)


def _t_ratio(
    num: np.ndarray, den: np.ndarray, *, paired: bool, unit: str, level: float
) -> Interval:
    n = min(len(num), len(den))
    name = PAIRED if paired else WELCH
    if n < 2:  # no spread to estimate: the ratio alone
        est = float(np.exp(np.log(num).mean() - np.log(den).mean()))
        return Interval(est, n=n, unit=unit, method=name)
    est, lo, hi = log_t_interval(np.log(num), np.log(den), paired=paired, level=level)
    return Interval(float(np.exp(est)), float(np.exp(lo)), float(np.exp(hi)), n, unit, name)


def _percentile_ratio(
    num: np.ndarray,
    den: np.ndarray,
    estimate: float | None,
    unit: str,
    resamples: int,
    seed: int,
    level: float,
) -> Interval:
    n = min(len(num), len(den))
    if n == 0:
        return Interval(math.nan if estimate is None else estimate, n=0, unit=unit)
    est = estimate
    if est is None:
        med_den = float(np.median(den))
        est = float(np.median(num)) / med_den if med_den > 0 else math.nan
    if n < 2:
        return Interval(est, n=n, unit=unit)
    num_m = _medians(num, resamples, seed, 1)
    den_m = _medians(den, resamples, seed, 2)
    k = min(len(num_m), len(den_m))
    num_m, den_m = num_m[:k], den_m[:k]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(den_m > 0, num_m / den_m, np.nan)
    lo, hi = _bounds(ratios, level)
    return Interval(est, lo, hi, n, unit, PERCENTILE)


def seeded_ratio_interval(
    numerator: Sequence[float],
    numerator_seeds: Sequence[object],
    denominator: Sequence[float],
    denominator_seeds: Sequence[object],
    *,
    unit: str = "seeds",
) -> Interval:
    """``ratio_interval`` of one value per run, paired by seed where both groups ran the same
    seeds once each (same seed: same initial weights and data order), Welch's otherwise."""
    seeds = sorted(set(numerator_seeds), key=str)
    same = len(seeds) == len(numerator_seeds) == len(denominator_seeds) and seeds == sorted(
        set(denominator_seeds), key=str
    )
    if same:
        num = dict(zip(numerator_seeds, numerator, strict=True))
        den = dict(zip(denominator_seeds, denominator, strict=True))
        return ratio_interval(
            [num[k] for k in seeds], [den[k] for k in seeds], paired=True, unit=unit
        )
    return ratio_interval(numerator, denominator, unit=unit)


def difference(iv: Interval) -> str:
    """Which way a ratio (above 1: the first group's quantity is larger) falls: ``higher``,
    ``lower``, ``none`` (the interval contains 1: no measurable difference) or ``unknown``
    (no interval)."""
    if math.isnan(iv.estimate):
        return "unknown"
    if not iv.has_interval:
        return "unknown"
    if iv.contains_one:
        return "none"
    return "higher" if iv.low > 1.0 else "lower"


def spread(values: Iterable[float]) -> float:
    """max / median of repeated timings (1: all equal); NaN without a positive median."""
    x = _values(values)
    if len(x) == 0:
        return math.nan
    med = float(np.median(x))
    return float(x.max()) / med if med > 0 else math.nan


def performance_profile(
    times: pd.DataFrame | Mapping[str, Mapping[str, float]],
    taus: Iterable[float] | None = None,
) -> pd.DataFrame:
    """AlgoPerf's performance profile: for each optimizer and factor ``tau``, the fraction of
    workloads on which its time to target is within ``tau`` times the best optimizer's.

    ``times``: a frame with ``workload``, ``optimizer``, ``seconds`` (NaN or inf: the target
    was not reached; an optimizer absent from a workload also counts as not reaching it), or
    ``{workload: {optimizer: seconds}}``. Returns ``optimizer, tau, fraction`` rows.
    """
    if isinstance(times, Mapping):
        rows = [(w, o, s) for w, per in times.items() for o, s in per.items()]
        times = pd.DataFrame(rows, columns=["workload", "optimizer", "seconds"])
    cols = ["optimizer", "tau", "fraction"]
    if times.empty:
        return pd.DataFrame(columns=cols)
    t = times.pivot_table(index="workload", columns="optimizer", values="seconds", aggfunc="min")
    t = t.reindex(columns=list(dict.fromkeys(times["optimizer"])))
    t = t.astype(float).where(np.isfinite(t.astype(float)) & (t > 0), np.inf)
    best = t.min(axis=1)
    ratios = t.div(best.where(np.isfinite(best)), axis=0).fillna(np.inf)
    if taus is None:
        finite = ratios.to_numpy()[np.isfinite(ratios.to_numpy())]
        top = max(2.0, float(finite.max()) * 1.1) if finite.size else 2.0
        taus = np.geomspace(1.0, top, 60)
    taus = np.asarray(list(taus), dtype=float)
    out = [
        (o, float(tau), float((ratios[o] <= tau).mean())) for o in ratios.columns for tau in taus
    ]
    return pd.DataFrame(out, columns=cols)
