"""Memory: peak memory and the optimizer's own state (with its components) per optimizer."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from reports import plot
from reports.common import (
    OPT,
    OPT_COLUMNS,
    SETTING,
    SETTING_COLUMNS,
    col,
    cols,
    empty,
    numeric_value,
    select,
    settings,
    sort_rows,
)
from reports.section import Section

if TYPE_CHECKING:
    from reports.context import Context

ID = "memory"
TITLE = "Memory"

MEMORY = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    col("runs", "runs", "int"),
    col("peak_kind", "peak of"),
    col("peak_bytes", "peak (MiB)", "mib"),
    col("optimizer_state_bytes", "optimizer state (MiB)", "mib"),
    col("components", "state components"),
)


def memory_long(df: pd.DataFrame) -> pd.DataFrame:
    """Median over runs of each run's largest value per memory record name."""
    columns = SETTING + OPT + ["name", "runs", "bytes"]
    m = df.loc[(df["kind"] == "memory") & df["name"].notna()] if not df.empty else df
    if m.empty:
        return empty(columns)
    m = m.assign(v=numeric_value(m)).dropna(subset=["v"])
    if m.empty:
        return empty(columns)
    per_run = m.groupby(SETTING + OPT + ["name", "run"], sort=False)["v"].max().reset_index()
    out = per_run.groupby(SETTING + OPT + ["name"], sort=False).agg(
        runs=("run", "nunique"), bytes=("v", "median")
    )
    return sort_rows(out.reset_index(), extra=["name"])[columns]


def _mib(b: float) -> str:
    return f"{b / 2**20:.3g} MiB"


def memory(df: pd.DataFrame) -> pd.DataFrame:
    """Peak memory (GPU ``peak_allocated`` or else CPU ``peak_rss``) and optimizer state."""
    long = memory_long(df)
    if long.empty:
        return empty(MEMORY)
    rows = []
    for k, g in long.groupby(SETTING + OPT, sort=False):
        by = dict(zip(g["name"], g["bytes"], strict=True))
        peak_kind = next((n for n in ("peak_allocated", "peak_rss") if n in by), "")
        comps = {n.split("/", 1)[1]: v for n, v in by.items() if n.startswith("optimizer_state/")}
        row = dict(zip(SETTING + OPT, k, strict=True))
        row.update(
            runs=int(g["runs"].max()),
            peak_kind=peak_kind,
            peak_bytes=by.get(peak_kind, math.nan),
            optimizer_state_bytes=by.get("optimizer_state", math.nan),
            components="; ".join(f"{n}: {_mib(v)}" for n, v in sorted(comps.items())),
        )
        rows.append(row)
    return sort_rows(pd.DataFrame(rows))[MEMORY.csv]


def figure(mem: pd.DataFrame) -> Figure | None:
    """Peak memory and optimizer state per optimizer: one row of two panels per setting."""
    if mem.empty:
        return None
    sets = [st for _, st in settings(mem).iterrows()]
    labels = plot.opt_labels(mem)
    pal = plot.palette(labels)
    what = (("peak_bytes", "peak memory (MiB)"), ("optimizer_state_bytes", "optimizer state (MiB)"))
    heights = [0.9 + 0.22 * len(select(mem, st)) for st in sets]
    with plot.style(), plot.context():
        fig = Figure(figsize=(plot.WIDTH, 0.5 + sum(heights)), layout="constrained")
        axes = fig.subplots(len(sets), 2, squeeze=False, gridspec_kw={"height_ratios": heights})
        for row, st in enumerate(sets):
            d = select(mem, st)
            order = [lab for lab in labels if lab in set(d["opt"])]
            for ci, (field, xlabel) in enumerate(what):
                ax = axes[row, ci]
                dd = d.assign(mib=d[field] / 2**20).dropna(subset=["mib"])
                if dd.empty:
                    ax.set_visible(False)
                    continue
                sns.barplot(
                    data=dd,
                    x="mib",
                    y="opt",
                    hue="opt",
                    order=order,
                    hue_order=order,
                    palette=pal,
                    legend=False,
                    ax=ax,
                )
                ax.set_xlabel(xlabel if row == len(sets) - 1 else "")
                ax.set_ylabel("")
                ax.tick_params(axis="y", labelsize=7)
                plot.panel_title(ax, st)
        fig.suptitle("Memory: peak and optimizer state (median over seeds)", fontsize=10)
    return fig


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Peak memory (GPU: peak_allocated; CPU: peak_rss) and the optimizer's own state "
        "(with its components), each run's largest value, median over runs.",
    )
    sec.missing += ctx.kind_missing("memory", "no memory figures")
    mem = memory(ctx.records) if not ctx.empty else pd.DataFrame()
    sec.table("memory", "Memory", mem, MEMORY.shown)
    if not mem.empty:
        sec.figure(figure(mem), "Memory")
    return sec
