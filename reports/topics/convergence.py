"""Convergence: train loss and the eval metric against epoch and wall time (the curves of
reports/tables/convergence.py), and each run's final values."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reports import plot
from reports.common import (
    metric_names,
    select,
    setting_label,
)
from reports.section import Section
from reports.tables.convergence import FINAL_VALUES

if TYPE_CHECKING:
    from reports.context import Context

ID = "convergence"
TITLE = "Convergence"


def figure(curves: pd.DataFrame, setting: pd.Series, metric: str | None) -> Figure | None:
    """Train loss and eval metric against epoch and wall time; median and min–max band."""
    c = select(curves, setting)
    if c.empty:
        return None
    quantities = [q for q in ("train_loss", metric) if q and q in set(c["quantity"])]
    if not quantities:
        return None
    labels = plot.opt_labels(c)
    pal = plot.palette(labels)
    scale, unit = plot.time_unit(float(c["wall_median_s"].max()))
    with plot.style(), plot.context():
        fig = Figure(figsize=(plot.WIDTH, 0.6 + 2.6 * len(quantities)), layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(quantities), 2, squeeze=False))
        for r, q in enumerate(quantities):
            d = c.loc[c["quantity"] == q].assign(wall=lambda x: x["wall_median_s"] * scale)
            for ci, (x, xlabel) in enumerate(
                (("epoch", "epoch"), ("wall", f"training wall time ({unit})"))
            ):
                ax = axes[r, ci]
                sns.lineplot(
                    data=d,
                    x=x,
                    y="median",
                    hue="opt",
                    hue_order=labels,
                    palette=pal,
                    marker="o",
                    markersize=4,
                    ax=ax,
                    legend=(r == 0 and ci == 1),
                )
                for lab, g in d.groupby("opt"):
                    g = g.sort_values("epoch")
                    ax.fill_between(
                        g[x], g["min"], g["max"], color=pal[lab], alpha=0.18, linewidth=0
                    )
                ax.set_xlabel(xlabel)
                ax.set_ylabel(q.replace("_", " "))
                if (
                    q.endswith("loss")
                    and (d["min"] > 0).all()
                    and (d["max"].max() / d["min"].min() > 20)
                ):
                    ax.set_yscale("log")
                if x == "epoch":
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axes[0, 1].get_legend() is not None:
            axes[0, 1].legend(fontsize=7, title="")
        plot.title(fig, "Convergence (median over seeds; band: min–max)", setting)
    return fig


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Train loss and the evaluation metric against epoch and against training wall time "
        "(cumulative epoch time for the loss, the eval record's time for the metric): the "
        "line is the median over seeds, the band spans min to max.",
    )
    if ctx.empty:
        sec.missing.append(ctx.no_records())
        return sec
    df = ctx.records
    kinds = set(df["kind"])
    if "epoch" not in kinds:
        sec.missing.append("No 'epoch' records, so no train-loss curves.")
    if "eval" not in kinds:
        sec.missing.append("No 'eval' records, so no eval-metric curves.")
    curves = ctx.curves
    metrics = metric_names(df)
    sec.table(
        "final_values",
        "Final values (last epoch of each run; median [min–max] over runs)",
        ctx.final,
        FINAL_VALUES.shown,
    )
    sec.table("convergence", "Curves", curves, (), show=False)
    for st in ctx.settings(curves):
        if st["workload"] not in metrics and "eval" in kinds:
            sec.missing.append(f"{setting_label(st)}: no eval metric records.")
        sec.figure(figure(curves, st, metrics.get(st["workload"])), "Convergence", st)
    return sec
