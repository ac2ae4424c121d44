"""Distributed runs: how many processes trained each cell, how far the ranks' step times
spread, and what a step costs on K processes against one (the same global batch).

A cell run under torchrun (``bench/host/distributed.py``) records each step's time as the slowest
rank's (``seconds``) and every rank's (``rank_seconds``). The spread of a step is
``(slowest - fastest) / slowest``. The scaling table pairs each setting run on K > 1
processes with the same setting on one process: speed-up = one process's median ÷ K
processes' median (above 1: faster on K), efficiency = speed-up ÷ K.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from reports import plot
from reports.common import (
    OPT,
    OPT_COLUMNS,
    SETTING,
    SETTING_COLUMNS,
    Columns,
    col,
    cols,
    empty,
    sort_rows,
)
from reports.section import Section

if TYPE_CHECKING:
    from reports.context import Context

ID = "distributed"
TITLE = "Distributed runs"

#: The setting without its number of processes: what the scaling table pairs on.
PAIRED_COLUMNS = Columns(
    tuple(n for n in SETTING_COLUMNS.names if n != "world_size"),
    tuple(c for c in SETTING_COLUMNS.shown if c[0] != "world_size"),
)
PAIRED = PAIRED_COLUMNS.csv

RANK_SPREAD = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    col("n", "steps", "int"),
    col("median_s", "median step (ms)", "ms"),
    col("fastest_median_s", "fastest rank (ms)", "ms"),
    col("slowest_median_s", "slowest rank (ms)", "ms"),
    col("spread_median", "median spread", "pct"),
    col("spread_q3", "q3 spread", "pct"),
)
SCALING = cols(
    PAIRED_COLUMNS,
    OPT_COLUMNS,
    col("mode", "mode"),
    col("world_size", "processes", "int"),
    col("one_median_s", "1 process (ms)", "ms"),
    col("median_s", "K processes (ms)", "ms"),
    col("speedup", "speed-up", "x"),
    col("efficiency", "efficiency", "pct"),
)


def _ranks(value: object) -> list[float] | None:
    if isinstance(value, str):  # a list kept as JSON text
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, (list, tuple)) and value:
        try:
            times = [float(v) for v in value]
        except (TypeError, ValueError):
            return None
        return times if all(math.isfinite(t) for t in times) else None
    return None


def rank_spread(df: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, optimizer) of a distributed cell: the ranks' step times and their spread,
    warm-up steps excluded."""
    if df.empty or "rank_seconds" not in df.columns:
        return empty(RANK_SPREAD)
    s = df.loc[(df["kind"] == "step") & ~df["warmup"] & (df["world_size"] > 1)]
    if s.empty:
        return empty(RANK_SPREAD)
    times = s["rank_seconds"].map(_ranks)
    s = s.loc[times.notna()].assign(_t=times[times.notna()])
    if s.empty:
        return empty(RANK_SPREAD)
    fastest = s["_t"].map(min)
    slowest = s["_t"].map(max)
    s = s.assign(
        _fast=fastest, _slow=slowest, _spread=(slowest - fastest) / slowest.where(slowest > 0)
    )
    g = s.groupby(SETTING + OPT, sort=False)
    out = g.agg(
        n=("seconds", "count"),
        median_s=("seconds", "median"),
        fastest_median_s=("_fast", "median"),
        slowest_median_s=("_slow", "median"),
        spread_median=("_spread", "median"),
        spread_q3=("_spread", lambda v: v.quantile(0.75)),
    ).reset_index()
    return sort_rows(out)[RANK_SPREAD.csv]


def scaling(steps: pd.DataFrame) -> pd.DataFrame:
    """Each (setting, optimizer, mode) on K > 1 processes against the same on one process."""
    if steps.empty or "world_size" not in steps.columns:
        return empty(SCALING)
    many = steps.loc[steps["world_size"] > 1]
    one = steps.loc[steps["world_size"] == 1, PAIRED + OPT + ["mode", "median_s"]]
    if many.empty or one.empty:
        return empty(SCALING)
    one = one.rename(columns={"median_s": "one_median_s"})
    out = many.merge(one, on=PAIRED + OPT + ["mode"], how="inner")
    if out.empty:
        return empty(SCALING)
    out["speedup"] = out["one_median_s"] / out["median_s"]
    out["efficiency"] = out["speedup"] / out["world_size"]
    out["_all"] = out["mode"] != "all"
    out = sort_rows(out, extra=["_all", "mode", "world_size"]).drop(columns="_all")
    return out[SCALING.csv]


def figure(scale: pd.DataFrame) -> Figure | None:
    """Median step time per optimizer on 1 and on K processes, one panel per workload."""
    rows = scale.loc[scale["mode"] == "all"] if not scale.empty else scale
    if rows.empty:
        return None
    groups = list(rows.groupby(PAIRED, sort=False))
    ncols = 1 if len(groups) == 1 else 2
    nrows = math.ceil(len(groups) / ncols)
    top = float(max(rows["median_s"].max(), rows["one_median_s"].max()))
    scale_t, unit = plot.time_unit(top)
    with plot.style(), plot.context():
        fig = Figure(figsize=(plot.WIDTH, 1.0 + 3.0 * nrows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
        for ax, (key, g) in zip(axes, groups, strict=False):
            labels = plot.opt_labels(g)
            long = pd.concat(
                [
                    g.assign(t=g["one_median_s"] * scale_t, processes="1"),
                    g.assign(t=g["median_s"] * scale_t, processes=g["world_size"].astype(str)),
                ],
                ignore_index=True,
            )
            sns.barplot(
                data=long, x="opt", y="t", hue="processes", order=labels, ax=ax, errorbar=None
            )
            for bars, (_, row) in zip(
                ax.containers[-1], g.set_index("opt").loc[labels].iterrows(), strict=False
            ):
                ax.annotate(
                    f"{row['speedup']:.2f}×",
                    (bars.get_x() + bars.get_width() / 2, bars.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
            ax.set_xlabel("")
            ax.set_ylabel(f"median step ({unit})")
            ax.tick_params(axis="x", rotation=30)
            plot.panel_title(ax, dict(zip(PAIRED, key, strict=True)))
            ax.legend(fontsize=7, title="processes")
        for ax in axes[len(groups) :]:
            ax.set_visible(False)
        fig.suptitle(
            "Step time on 1 and on K processes, same global batch (warm-up excluded; "
            "labels: speed-up)",
            fontsize=10,
        )
    return fig


def findings(scale: pd.DataFrame, spread: pd.DataFrame) -> list[str]:
    out = []
    rows = scale.loc[scale["mode"] == "all"] if not scale.empty else scale
    for (workload, k), g in rows.groupby(["workload", "world_size"], sort=False):
        best, worst = g.loc[g["speedup"].idxmax()], g.loc[g["speedup"].idxmin()]
        out.append(
            f"{workload}, {int(k)} processes against one: median step speed-up "
            f"{worst['speedup']:.2f}× ({worst['opt']}) to {best['speedup']:.2f}× ({best['opt']})."
        )
    if not spread.empty:
        out.append(
            "Median spread of a step across ranks: "
            f"{100 * spread['spread_median'].min():.0f}-"
            f"{100 * spread['spread_median'].max():.0f} % of the slowest rank's time."
        )
    return out


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Cells trained on several processes at once (torchrun, DistributedDataParallel; each "
        "global batch split across the ranks, so the optimisation is the one-process one). "
        "A distributed step's time is its slowest rank's; the spread is (slowest − fastest) ÷ "
        "slowest, per step. Scaling pairs a setting on K processes with the same setting on "
        "one: speed-up = one process's median step ÷ K processes' (above 1: faster), "
        "efficiency = speed-up ÷ K. FNGD's inversion steps gather the Gram operands of every "
        "rank; its weighted-sum steps cost one gradient all-reduce, as SGD's.",
    )
    spread = rank_spread(ctx.records) if not ctx.empty else empty(RANK_SPREAD)
    scale = scaling(ctx.steps)
    if ctx.empty:
        sec.missing.append(ctx.no_records())
        return sec
    if spread.empty:
        sec.missing.append("No cell ran on several processes (world_size 1 everywhere).")
        return sec
    if scale.empty:
        sec.missing.append(
            "No setting ran on one process as well as on several: no scaling to show."
        )
    sec.findings += findings(scale, spread)
    sec.table("rank_spread", "Step time across ranks", spread, RANK_SPREAD.shown)
    if not scale.empty:
        sec.table(
            "scaling",
            "One process against K (median step, warm-up excluded)",
            scale,
            SCALING.shown,
            group=("workload", "size", "data_source", "device_name", "batch_size"),
        )
        sec.figure(figure(scale), "Step time on 1 and on K processes")
    return sec
