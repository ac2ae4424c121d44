"""Convergence: train loss and the eval metric against epoch and wall time, and each run's
final values."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reports import plot
from reports.common import (
    OPT,
    OPT_COLUMNS,
    SETTING,
    SETTING_COLUMNS,
    col,
    cols,
    empty,
    epoch_records,
    metric_names,
    numeric_value,
    quantile,
    select,
    setting_label,
    sort_rows,
)
from reports.section import Section

if TYPE_CHECKING:
    from reports.context import Context

ID = "convergence"
TITLE = "Convergence"

CURVES = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    "quantity",
    "epoch",
    "n",
    "wall_median_s",
    "median",
    "min",
    "max",
    "q1",
    "q3",
)
FINAL_VALUES = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    col("runs", "runs", "int"),
    col("epochs", "epochs", "int"),
    col("train_loss_median", "train loss", "g"),
    col("train_loss_min", "min", "g"),
    col("train_loss_max", "max", "g"),
    col("metric", "metric"),
    col("metric_median", "metric", "g"),
    col("metric_min", "min", "g"),
    col("metric_max", "max", "g"),
    col("wall_median_s", "train time (s)", "s"),
)


def convergence_long(df: pd.DataFrame) -> pd.DataFrame:
    """Per run: train loss (epoch records) and eval values against epoch and wall time."""
    columns = SETTING + OPT + ["run", "quantity", "epoch", "wall_s", "value"]
    parts = []
    e = epoch_records(df)
    if not e.empty:
        e = e.loc[e["name"].isna() | (e["name"] == "train_loss")]
        e = e.sort_values("epoch").assign(value=numeric_value(e).reindex(e.index))
        e = e.assign(
            quantity="train_loss",
            wall_s=e.groupby(SETTING + OPT + ["run"], sort=False)["seconds"].cumsum(),
        )
        parts.append(e[columns])
    ev = df.loc[(df["kind"] == "eval") & df["name"].notna()] if not df.empty else df
    if not ev.empty:
        ev = ev.drop_duplicates(subset=SETTING + OPT + ["run", "epoch", "name"], keep="last")
        ev = ev.assign(quantity=ev["name"], wall_s=ev["seconds"], value=numeric_value(ev))
        parts.append(ev[columns])
    if not parts:
        return empty(columns)
    out = pd.concat(parts, ignore_index=True)
    return out.dropna(subset=["value", "epoch"])


def convergence(df: pd.DataFrame) -> pd.DataFrame:
    """Median, min, max and quartiles over runs per (setting, optimizer, quantity, epoch)."""
    long = convergence_long(df)
    if long.empty:
        return empty(CURVES)
    g = long.groupby(SETTING + OPT + ["quantity", "epoch"], sort=False)
    out = g["value"].agg(
        n="count", median="median", min="min", max="max", q1=quantile(0.25), q3=quantile(0.75)
    )
    out["wall_median_s"] = g["wall_s"].median()
    return sort_rows(out.reset_index(), extra=["quantity", "epoch"])[CURVES.csv]


def final_values(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's last train loss and last eval metric; median, min, max over runs."""
    long = convergence_long(df)
    if long.empty:
        return empty(FINAL_VALUES)
    metrics = metric_names(df)
    last = (
        long.sort_values("epoch").groupby(SETTING + OPT + ["run", "quantity"], sort=False).tail(1)
    )
    key = SETTING + OPT
    out = last[key].drop_duplicates()
    tl = last.loc[last["quantity"] == "train_loss"]
    if not tl.empty:
        a = tl.groupby(key, sort=False).agg(
            runs=("run", "nunique"),
            epochs=("epoch", "max"),
            train_loss_median=("value", "median"),
            train_loss_min=("value", "min"),
            train_loss_max=("value", "max"),
            wall_median_s=("wall_s", "median"),
        )
        a["epochs"] = a["epochs"] + 1
        out = out.merge(a.reset_index(), on=key, how="left")
    last = last.assign(metric=last["workload"].map(metrics))
    m = last.loc[last["quantity"] == last["metric"]]
    if not m.empty:
        b = m.groupby(key + ["metric"], sort=False)["value"].agg(
            metric_median="median", metric_min="min", metric_max="max"
        )
        out = out.merge(b.reset_index(), on=key, how="left")
    for c in FINAL_VALUES.names:
        if c not in out.columns:
            out[c] = math.nan
    return sort_rows(out)[FINAL_VALUES.csv]


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
    curves = convergence(df)
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
