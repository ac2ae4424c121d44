"""Per-epoch time: the epoch-time table (reports/tables/epochs.py: the first epoch, FNGD's
inversion epoch, and the later epochs apart, and the projected schedule) with what it is
missing, and epoch time against epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    cols,
    empty,
    epoch_records,
    select,
    sort_rows,
)
from reports.section import Section
from reports.tables.epochs import EPOCH_TIMES, PROJECT_EPOCHS, cut_epochs

if TYPE_CHECKING:
    from reports.context import Context

ID = "epochs"
TITLE = "Per-epoch time"

EPOCH_CURVE = cols(SETTING_COLUMNS, OPT_COLUMNS, "epoch", "n", "median_s", "min_s", "max_s")


def epoch_curve(df: pd.DataFrame) -> pd.DataFrame:
    """Median epoch time per (setting, optimizer, epoch) over runs."""
    e = epoch_records(df)
    if e.empty:
        return empty(EPOCH_CURVE)
    out = e.groupby(SETTING + OPT + ["epoch"], sort=False)["seconds"].agg(
        n="count", median_s="median", min_s="min", max_s="max"
    )
    return sort_rows(out.reset_index(), extra=["epoch"])[EPOCH_CURVE.csv]


def curve_figure(curve: pd.DataFrame, setting: pd.Series) -> Figure | None:
    """Median epoch time against epoch; epoch 0 is FNGD's inversion epoch."""
    c = select(curve, setting)
    if c.empty:
        return None
    labels = plot.opt_labels(c)
    scale, unit = plot.time_unit(float(c["median_s"].max()))
    c = c.assign(t=c["median_s"] * scale, lo=c["min_s"] * scale, hi=c["max_s"] * scale)
    with plot.style(), plot.context():
        fig = Figure(figsize=(plot.WIDTH, 3.2), layout="constrained")
        ax = fig.subplots()
        sns.lineplot(
            data=c,
            x="epoch",
            y="t",
            hue="opt",
            hue_order=labels,
            palette=plot.palette(labels),
            marker="o",
            ax=ax,
        )
        for lab, g in c.groupby("opt"):
            if (g["hi"] > g["lo"]).any():
                ax.fill_between(
                    g["epoch"],
                    g["lo"],
                    g["hi"],
                    color=plot.palette(labels)[lab],
                    alpha=0.15,
                    linewidth=0,
                )
        ax.set_xlabel("epoch (0 = first)")
        ax.set_ylabel(f"epoch time ({unit})")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(title="", fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        plot.title(fig, "Epoch time (median over seeds; band: min–max)", setting)
    return fig


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Epoch wall time per optimizer. The first epoch (epoch 0) and the later epochs are "
        "apart: FNGD computes its coefficients by inversion in the first epoch and reuses "
        "them afterwards, so its steady state is the later epochs. The modes column lists the "
        "step modes seen. PROJECTED: first + "
        f"{PROJECT_EPOCHS - 1} × median later epoch, a projection of a "
        f"{PROJECT_EPOCHS}-epoch schedule.",
    )
    sec.missing += ctx.kind_missing("epoch", "no per-epoch times")
    sec.notes += cut_epochs(ctx.records)
    sec.notes += ctx.hygiene_flags
    ep = ctx.epochs
    if not ep.empty and (ep["later_n"] == 0).any():
        which = ", ".join(sorted(set(ep.loc[ep["later_n"] == 0, "opt"])))
        sec.missing.append(
            f"Only one epoch recorded for {which}: no later-epoch time and no projection."
        )
    sec.table("epoch_times", "Epoch time", ep, EPOCH_TIMES.shown)
    curve = epoch_curve(ctx.records) if not ctx.empty else pd.DataFrame()
    if not curve.empty:
        sec.table("epoch_curve", "Epoch time per epoch", curve, (), show=False)
        for s in ctx.settings(curve):
            sec.figure(curve_figure(curve, s), "Epoch time", s)
    return sec
