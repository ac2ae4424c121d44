"""Cost against batch size: median step time per batch size, where a workload and optimizer
ran at several batch sizes on one device."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from reports import plot
from reports.common import (
    OPT_COLUMNS,
    SETTING_COLUMNS_ALL_BATCHES,
    col,
    cols,
    empty,
    sort_rows,
)
from reports.section import Section

if TYPE_CHECKING:
    from reports.context import Context

ID = "batch"
TITLE = "Cost against batch size"

BATCH_SCALING = cols(
    SETTING_COLUMNS_ALL_BATCHES,
    OPT_COLUMNS,
    col("batch_size", "batch", "int"),
    col("n", "n", "int"),
    col("median_s", "median step (ms)", "ms"),
    col("per_sample_s", "per sample (ms)", "ms"),
    col("ratio_to_sgd", "×SGD", "ratio"),
)


def batch_scaling(steps: pd.DataFrame) -> pd.DataFrame:
    """Median step against batch size, for (workload, device, optimizer) with several sizes."""
    if steps.empty:
        return empty(BATCH_SCALING)
    s = steps.loc[(steps["mode"] == "all") & (steps["batch_size"] > 0)]
    key = SETTING_COLUMNS_ALL_BATCHES.csv + OPT_COLUMNS.csv
    sizes = s.groupby(key, sort=False)["batch_size"].transform("nunique")
    s = s.loc[sizes >= 2]
    if s.empty:
        return empty(BATCH_SCALING)
    s = s.assign(per_sample_s=s["median_s"] / s["batch_size"])
    return sort_rows(s, extra=["batch_size"])[BATCH_SCALING.csv]


def figure(batch: pd.DataFrame) -> Figure | None:
    """Median step time against batch size, one panel per (workload, data, device)."""
    if batch.empty:
        return None
    key = SETTING_COLUMNS_ALL_BATCHES.csv
    groups = list(batch.groupby(key, sort=False))
    ncols = 1 if len(groups) == 1 else 2
    nrows = math.ceil(len(groups) / ncols)
    scale, unit = plot.time_unit(float(batch["median_s"].max()))
    with plot.style(), plot.context():
        fig = Figure(figsize=(plot.WIDTH, 0.8 + 2.8 * nrows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
        for ax, (k, g) in zip(axes, groups, strict=False):
            labels = plot.opt_labels(g)
            sns.lineplot(
                data=g.assign(t=g["median_s"] * scale),
                x="batch_size",
                y="t",
                hue="opt",
                hue_order=labels,
                palette=plot.palette(labels),
                marker="o",
                ax=ax,
            )
            ax.set_xscale("log", base=2)
            sizes = sorted(set(g["batch_size"]))
            ax.set_xticks(sizes, [str(b) for b in sizes])
            ax.set_xlabel("batch size")
            ax.set_ylabel(f"median step ({unit})")
            plot.panel_title(ax, dict(zip(key, k, strict=True)), with_batch=False)
            ax.legend(fontsize=7, title="")
        for ax in axes[len(groups) :]:
            ax.set_visible(False)
        fig.suptitle("Step time against batch size (warm-up excluded)", fontsize=10)
    return fig


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Median step time (all modes, warm-up excluded) against batch size, for each "
        "workload and optimizer measured at several batch sizes on the same device.",
    )
    bs = batch_scaling(ctx.steps)
    if ctx.empty:
        sec.missing.append(ctx.no_records())
    elif ctx.steps.empty:
        sec.missing.append("No 'step' records, so no cost against batch size.")
    elif bs.empty:
        sec.missing.append(
            "Every workload and optimizer ran at a single batch size: no batch-size sweep."
        )
    sec.table(
        "batch_scaling",
        "Step time against batch size",
        bs,
        BATCH_SCALING.shown,
        group=("workload", "size", "data_source", "device_name", "world_size"),
    )
    if not bs.empty:
        sec.figure(figure(bs), "Step time against batch size")
    return sec
