"""How often each candidate 95 % interval for a ratio of run times covers the true ratio, at
the group sizes the suite runs (3, 5 and 10 seeds): the measurement behind the method
``reports/stats.py`` uses.

Synthetic runs with a known answer. Each trial draws ``n`` seeds; a seed's run time for group
``g`` is ``exp(mu_g + s + sigma_g z)``, times a slow-down ``U ~ Uniform(1.5, 3)`` with
probability ``SLOW_P`` in the ``slow runs`` distribution (a shared machine: another job ran
beside it). ``s ~ N(0, SEED_SD)`` is the seed's own effect (its initialisation and data order),
shared by both groups of a seed, which is what a paired interval removes. The two groups differ
in scale (``RATIO``) and in spread (``SIGMA``), so that with slow runs the ratio of population
medians and the ratio of geometric means (``exp(E log)``) are different numbers; each method is
scored against the quantity its point estimate estimates:

- ``percentile``, ``bca``: the ratio of sample medians (groups resampled independently), scored
  against the ratio of the population medians (computed from the mixture's CDF);
- ``welch-t``, ``paired-t``: ``exp`` of the mean log ratio (of the groups' means of logs, or of
  the per-seed log ratios: the same point estimate for complete pairs), scored against
  ``exp(E log a - E log b)``.

``python -m reports.coverage`` prints the table (docs/STATISTICS.md). Seeded and vectorised
over trials; numpy and scipy.special only (no torch).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from reports import stats

#: The study's seed: the table in docs/STATISTICS.md is for this seed.
SEED = 20_250_101
#: Trials per cell: the t methods are cheap, the bootstrap ones resample every trial.
TRIALS = {"percentile": 4000, "bca": 4000, "welch-t": 40_000, "paired-t": 40_000}
#: Resamples per bootstrap interval in the study (the report draws ``stats.RESAMPLES``).
RESAMPLES = 1000
SIZES = (3, 5, 10)
METHODS = ("percentile", "bca", "welch-t", "paired-t")
DISTRIBUTIONS = ("log-normal", "log-normal + slow runs")
#: True ratio of scales, baseline over FNGD; the log-sd of each group's run-to-run noise.
RATIO = 1.8
SIGMA = (0.10, 0.15)
#: The log-sd of a seed's own effect, shared by both groups of a seed.
SEED_SD = 0.05
#: Probability that a run is slowed down, and the slow-down's range (uniform).
SLOW_P = 0.18
SLOW = (1.5, 3.0)
_CHUNK = 4_000_000  # resampled values drawn at once


def _slow_p(distribution: str) -> float:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    return SLOW_P if distribution != "log-normal" else 0.0


def _mu() -> tuple[float, float]:
    return math.log(RATIO), 0.0


def _population_median(mu: float, sd: float, p: float) -> float:
    """The median of ``exp(mu + N(0, sd)) * (U with probability p, else 1)``: bisection on the
    mixture's CDF, the slow-down integrated on a fine grid."""
    lo_u, hi_u = SLOW
    logs_u = np.log(lo_u + (hi_u - lo_u) * (np.arange(4000) + 0.5) / 4000)

    def cdf(x: float) -> float:
        fast = float(ndtr((x - mu) / sd))
        return (1 - p) * fast + p * float(ndtr((x - mu - logs_u) / sd).mean())

    lo, hi = mu - 10 * sd, mu + 10 * sd + math.log(hi_u)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < 0.5 else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def _mean_log_slow() -> float:
    """E log U for U ~ Uniform(SLOW)."""
    a, b = SLOW
    return ((b * math.log(b) - b) - (a * math.log(a) - a)) / (b - a)


def true_ratios(distribution: str) -> dict[str, float]:
    """The two true ratios (baseline over FNGD): of population medians, and of ``exp(E log)``."""
    p = _slow_p(distribution)
    (mu_a, mu_b), (sa, sb) = _mu(), SIGMA
    ta, tb = math.hypot(SEED_SD, sa), math.hypot(SEED_SD, sb)
    medians = _population_median(mu_a, ta, p) / _population_median(mu_b, tb, p)
    # the slow-down's mean log is the same in both groups: it cancels
    return {"median": medians, "geometric": math.exp(mu_a - mu_b)}


def draw(distribution: str, n: int, trials: int, seed: int = SEED) -> tuple[np.ndarray, ...]:
    """``trials`` x ``n`` run times of the baseline and of FNGD, seed by seed (same row and
    column: same seed). The same ``(distribution, n, seed)`` draws the same runs."""
    p = _slow_p(distribution)
    rng = np.random.default_rng([seed, DISTRIBUTIONS.index(distribution), n])
    shared = SEED_SD * rng.standard_normal((trials, n))
    out = []
    for mu, sd in zip(_mu(), SIGMA, strict=True):
        log_t = mu + shared + sd * rng.standard_normal((trials, n))
        slow = rng.random((trials, n)) < p
        log_t += np.where(slow, np.log(rng.uniform(*SLOW, size=(trials, n))), 0.0)
        out.append(np.exp(log_t))
    return tuple(out)


def _bootstrap_log_ratios(
    a: np.ndarray, b: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """trials x resamples: log(median of a resample of a / median of a resample of b), each
    group resampled on its own."""
    trials, n = a.shape
    out = np.empty((trials, resamples))
    step = max(1, _CHUNK // (resamples * n))
    rows = np.arange(trials)[:, None, None]
    for start in range(0, trials, step):
        r = rows[start : start + step]
        ia = rng.integers(0, n, size=(len(r), resamples, n))
        ib = rng.integers(0, n, size=(len(r), resamples, n))
        ma = np.median(a[r, ia], axis=2)
        mb = np.median(b[r, ib], axis=2)
        out[start : start + step] = np.log(ma) - np.log(mb)
    return out


def _percentile(est: np.ndarray, boot: np.ndarray, level: float) -> tuple[np.ndarray, ...]:
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail], axis=1)
    return lo, hi


def _jackknife_acceleration(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """BCa's acceleration for log(median a / median b), from each group's leave-one-out
    estimates (the k-sample formula: each group's influence values scaled by its size)."""
    num = np.zeros(len(a))
    den = np.zeros(len(a))
    for x, sign in ((a, 1.0), (b, -1.0)):
        n = x.shape[1]
        keep = ~np.eye(n, dtype=bool)
        loo = np.log(np.median(x[:, None, :].repeat(n, 1)[:, keep].reshape(-1, n, n - 1), axis=2))
        u = (n - 1) * (loo.mean(axis=1, keepdims=True) - loo) * sign
        num += (u**3).sum(axis=1) / n**3
        den += (u**2).sum(axis=1) / n**2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / (6 * den**1.5), 0.0)


def _bca(
    est: np.ndarray, boot: np.ndarray, accel: np.ndarray, level: float
) -> tuple[np.ndarray, ...]:
    """Bias-corrected and accelerated bounds; ties with the estimate count half (a median of a
    few values is one of them, so many resamples equal it)."""
    below = (boot < est[:, None]).mean(axis=1) + 0.5 * (boot == est[:, None]).mean(axis=1)
    z0 = ndtri(np.clip(below, 1e-6, 1 - 1e-6))
    tail = (1 - level) / 2
    srt = np.sort(boot, axis=1)
    bounds = []
    for q in (tail, 1 - tail):
        z = z0 + ndtri(q)
        alpha = ndtr(z0 + z / (1 - accel * z))
        idx = np.clip(np.round(alpha * (boot.shape[1] - 1)).astype(int), 0, boot.shape[1] - 1)
        bounds.append(np.take_along_axis(srt, idx[:, None], axis=1)[:, 0])
    return tuple(bounds)


def intervals(
    method: str, a: np.ndarray, b: np.ndarray, *, level: float = stats.LEVEL, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per trial (row): the log of the point estimate and of the bounds of ``method``'s interval
    for the ratio a / b. The t methods are ``reports.stats``'s own (the report's code path)."""
    if method == "welch-t":
        return stats.log_t_interval(np.log(a), np.log(b), paired=False, level=level)
    if method == "paired-t":
        return stats.log_t_interval(np.log(a), np.log(b), paired=True, level=level)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    rng = np.random.default_rng([seed, a.shape[1], 1])
    est = np.log(np.median(a, axis=1)) - np.log(np.median(b, axis=1))
    boot = _bootstrap_log_ratios(a, b, RESAMPLES, rng)
    if method == "percentile":
        lo, hi = _percentile(est, boot, level)
    else:
        lo, hi = _bca(est, boot, _jackknife_acceleration(a, b), level)
    return est, lo, hi


def coverage(
    method: str, distribution: str, n: int, *, trials: int | None = None, seed: int = SEED
) -> float:
    """The fraction of ``trials`` whose ``method`` interval contains the true ratio of the
    quantity that method estimates."""
    trials = TRIALS[method] if trials is None else trials
    a, b = draw(distribution, n, trials, seed)
    _, lo, hi = intervals(method, a, b, seed=seed)
    estimand = "geometric" if method.endswith("-t") else "median"
    true = math.log(true_ratios(distribution)[estimand])
    return float(((lo <= true) & (true <= hi)).mean())


def table(
    methods: Iterable[str] = METHODS,
    sizes: Iterable[int] = SIZES,
    *,
    trials: dict[str, int] | None = None,
    seed: int = SEED,
) -> pd.DataFrame:
    """method, distribution, n, trials, coverage: one row per cell."""
    rows = []
    for method in methods:
        t = (trials or TRIALS)[method]
        for dist in DISTRIBUTIONS:
            for n in sizes:
                rows.append((method, dist, n, t, coverage(method, dist, n, trials=t, seed=seed)))
    return pd.DataFrame(rows, columns=["method", "distribution", "n", "trials", "coverage"])


def markdown(frame: pd.DataFrame) -> str:
    """The table as docs/STATISTICS.md shows it: a row per method and distribution."""
    wide = frame.pivot_table(
        index=["method", "distribution"], columns="n", values="coverage", sort=False
    )
    sizes = list(wide.columns)
    lines = [
        "| method | distribution | " + " | ".join(f"n = {n}" for n in sizes) + " |",
        "|---|---|" + "---:|" * len(sizes),
    ]
    for (method, dist), row in wide.iterrows():
        cells = " | ".join(f"{row[n]:.3f}" for n in sizes)
        lines.append(f"| {method} | {dist} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m reports.coverage", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    frame = table(seed=args.seed)
    true = {d: true_ratios(d) for d in DISTRIBUTIONS}
    print(markdown(frame))
    print()
    trials = ", ".join(f"{m} {t}" for m, t in TRIALS.items())
    print(f"seed {args.seed}; trials per cell: {trials}; {RESAMPLES} resamples per bootstrap")
    for d, r in true.items():
        print(f"true ratio, {d}: medians {r['median']:.4f}, geometric means {r['geometric']:.4f}")


if __name__ == "__main__":
    main()
