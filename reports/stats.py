"""The statistics behind a verdict: bootstrap confidence intervals for a median and for a
ratio of medians, the rule that turns an interval into words, the spread of repeated
timings, and AlgoPerf's performance profile.

Pure numpy/pandas and seeded, so a report built twice from the same records says the same.
Percentile bootstrap: resample each group with replacement, take the statistic of every
resample, and read the interval off the 2.5th and 97.5th percentiles. The two groups of a
ratio are independent (different runs), so each is resampled on its own stream. With a
single value in a group there is nothing to resample: the interval is left out and the text
says "n=1, no interval" instead of inventing one. With a few values (3 seeds) the interval
is coarse (a resampled median is one of the values), which is the honest answer for 3 seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

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


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile-bootstrap interval (NaN bounds: none).

    ``n`` is the size of the smaller group resampled; ``unit`` what one value is (``seeds``:
    one per run; ``steps`` or ``epochs``: the measurements of a single run).
    """

    estimate: float
    low: float = math.nan
    high: float = math.nan
    n: int = 0
    unit: str = ""

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def contains_one(self) -> bool:
        """True when the interval includes 1: no measurable difference."""
        return self.has_interval and self.low <= 1.0 <= self.high

    def text(self, fmt: str = "{:.2f}") -> str:
        """``[low, high]``, or why there is no interval."""
        if not self.has_interval:
            return NO_INTERVAL if self.n == 1 else "no interval"
        return f"[{fmt.format(self.low)}, {fmt.format(self.high)}]"


def _values(values: Iterable[float]) -> np.ndarray:
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
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


def median_interval(
    values: Iterable[float],
    *,
    unit: str = "",
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> Interval:
    """The median of ``values`` and its bootstrap interval (none for fewer than 2 values)."""
    x = _values(values)
    if len(x) == 0:
        return Interval(math.nan, n=0, unit=unit)
    est = float(np.median(x))
    if len(x) < 2:
        return Interval(est, n=len(x), unit=unit)
    lo, hi = _bounds(_medians(x, resamples, seed, 0), level)
    return Interval(est, lo, hi, len(x), unit)


def ratio_interval(
    numerator: Iterable[float],
    denominator: Iterable[float],
    *,
    estimate: float | None = None,
    unit: str = "",
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> Interval:
    """median(numerator) / median(denominator) and its bootstrap interval.

    The groups are independent: each is resampled on its own stream and the interval is
    read off the ratios of the resampled medians. ``estimate`` replaces the point estimate
    when a table already computed it (the report's speed-up table), so that the two agree.
    No interval when either group has fewer than 2 values, or a median is not positive.
    A group of more than ``_BUDGET / RESAMPLES`` values gets fewer resamples (at least
    ``MIN_RESAMPLES``), so that the steps of one long run stay quick.
    """
    num, den = _values(numerator), _values(denominator)
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
    return Interval(est, lo, hi, n, unit)


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
