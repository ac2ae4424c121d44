"""Memory: the optimizer's own state (with its components) and the peak above what the process
held before training, per optimizer.

The process's own footprint (interpreter, torch, model, data: ~500 MiB of RSS on the CPU) is
the same for every optimizer and says nothing about it, so the page shows the peak minus
the baseline each cell recorded once built (``baseline_rss`` / ``baseline_allocated``).
Records from before the baseline was recorded show the whole peak, labelled so."""

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
    col("optimizer_state_bytes", "optimizer state (MiB)", "mib"),
    col("above_baseline_bytes", "peak above baseline (MiB)", "mib"),
    col("peak_kind", "peak of"),
    col("peak_bytes", "peak, whole process (MiB)", "mib"),
    col("baseline_bytes", "baseline before training (MiB)", "mib"),
    col("components", "state components"),
)
#: (peak, baseline) record names: CUDA's allocator, else the process's resident set.
PEAKS = (("peak_allocated", "baseline_allocated"), ("peak_rss", "baseline_rss"))


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
    """Optimizer state, and the peak (GPU ``peak_allocated``, else CPU ``peak_rss``) with the
    baseline before training and the peak above it (NaN without a baseline record)."""
    long = memory_long(df)
    if long.empty:
        return empty(MEMORY)
    rows = []
    for k, g in long.groupby(SETTING + OPT, sort=False):
        by = dict(zip(g["name"], g["bytes"], strict=True))
        peak_kind, base_kind = next(((p, b) for p, b in PEAKS if p in by), ("", ""))
        comps = {n.split("/", 1)[1]: v for n, v in by.items() if n.startswith("optimizer_state/")}
        peak, base = by.get(peak_kind, math.nan), by.get(base_kind, math.nan)
        row = dict(zip(SETTING + OPT, k, strict=True))
        row.update(
            runs=int(g["runs"].max()),
            optimizer_state_bytes=by.get("optimizer_state", math.nan),
            above_baseline_bytes=math.nan if math.isnan(peak - base) else max(peak - base, 0.0),
            peak_kind=peak_kind,
            peak_bytes=peak,
            baseline_bytes=base,
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
    above = mem["above_baseline_bytes"].notna().all()
    peak = (
        ("above_baseline_bytes", "peak above the baseline before training (MiB)")
        if above
        else ("peak_bytes", "peak, whole process: no baseline recorded (MiB)")
    )
    what = (("optimizer_state_bytes", "optimizer state (MiB)"), peak)
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
        fig.suptitle("Memory: optimizer state and peak (median over seeds)", fontsize=10)
    return fig


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "The optimizer's own state (with its components), and the peak memory above what the "
        "process held once the cell was built, before training (GPU: allocated bytes; CPU: "
        "resident set): what training added, where the whole process's peak is mostly the "
        "interpreter, torch and the data, the same for every optimizer. On the CPU the cells "
        "of one sweep share a process, and memory freed by earlier cells is reused, so a "
        "small peak above the baseline can read as nearly 0. Each run's largest value, "
        "median over runs.",
    )
    sec.missing += ctx.kind_missing("memory", "no memory figures")
    mem = memory(ctx.records) if not ctx.empty else pd.DataFrame()
    if not mem.empty and mem["peak_bytes"].notna().any() and mem["baseline_bytes"].isna().any():
        sec.notes.append(
            "Some records have no baseline before training (written before it was recorded): "
            "their 'peak above baseline' is n/a and the figure shows the whole process's peak."
        )
    sec.table("memory", "Memory", mem, MEMORY.shown)
    if not mem.empty:
        sec.figure(figure(mem), "Memory")
    return sec
