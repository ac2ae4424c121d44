"""Per-step time: the step-time table (reports/tables/steps.py) with what it is missing, the
runner's timing overhead, and the distribution of step times."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import pandas as pd
import seaborn as sns
from matplotlib import MatplotlibDeprecationWarning
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
    per_key,
    select,
    setting_label,
    sort_rows,
    timed,
)
from reports.section import Section
from reports.tables.steps import STEP_TIMES

if TYPE_CHECKING:
    from reports.context import Context

ID = "steps"
TITLE = "Per-step time"

OVERHEAD = cols(
    SETTING_COLUMNS, OPT_COLUMNS, col("n", "n", "int"), col("median_fraction", "median", "pct")
)


def overhead(df: pd.DataFrame) -> pd.DataFrame:
    """The runner's timing overhead (``overhead`` records) as a fraction of a step."""
    o = df.loc[df["kind"] == "overhead"] if not df.empty else df
    if o.empty:
        return empty(OVERHEAD)
    o = o.assign(v=numeric_value(o)).dropna(subset=["v"])
    if o.empty:
        return empty(OVERHEAD)
    out = o.groupby(SETTING + OPT, sort=False)["v"].agg(n="count", median_fraction="median")
    return sort_rows(out.reset_index())[OVERHEAD.csv]


def step_distribution(records: pd.DataFrame, setting: pd.Series) -> Figure | None:
    """Box plot of the non-warm-up step times per optimizer and mode."""
    s = select(timed(records, "step", SETTING + OPT + ["mode", "seconds"]), setting)
    if s.empty:
        return None
    labels = plot.opt_labels(s)
    pal = plot.palette(labels)
    parts = [s.assign(label=s["opt"], color_key=s["opt"])]
    moded = s.loc[s["mode"].notna()]
    if not moded.empty:
        parts.append(
            moded.assign(
                label=per_key(moded, ["opt", "mode"], plot.mode_label), color_key=moded["opt"]
            )
        )
    data = pd.concat(parts, ignore_index=True)
    order = []
    for lab in labels:
        order.append(lab)
        order += sorted(set(data.loc[(data["opt"] == lab) & (data["label"] != lab), "label"]))
    colors = {lab: pal[data.loc[data["label"] == lab, "color_key"].iloc[0]] for lab in order}
    scale, unit = plot.time_unit(float(data["seconds"].max()))
    data = data.assign(t=data["seconds"] * scale)
    with plot.style(), plot.context():
        fig = Figure(figsize=(plot.WIDTH, 0.9 + 0.32 * len(order)), layout="constrained")
        ax = fig.subplots()
        with warnings.catch_warnings():
            # seaborn 0.13 passes boxplot's deprecated ``vert`` to newer matplotlib
            warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
            sns.boxplot(
                data=data,
                x="t",
                y="label",
                hue="label",
                order=order,
                hue_order=order,
                palette=colors,
                showfliers=False,
                legend=False,
                ax=ax,
                width=0.6,
            )
        if data["t"].max() / max(data["t"].min(), 1e-12) > 30:
            ax.set_xscale("log")
        ax.set_xlabel(f"step time ({unit}), warm-up excluded")
        ax.set_ylabel("")
        plot.title(fig, "Per-step time", setting)
    return fig


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Whole-step time (data to update) per optimizer and mode, warm-up steps excluded. "
        "Mode 'all' pools every step; FNGD's 'inversion' steps (first epoch) and "
        "'weighted_sum' steps (later epochs), and KFAC's 'inverse'/'no_inverse' steps, are "
        "also shown apart. ×SGD: median step ÷ SGD's median step in the same setting.",
    )
    sec.missing += ctx.kind_missing("step", "no per-step times")
    st = ctx.steps
    if not st.empty:
        for s in ctx.settings(st):
            sub = select(st, s)
            if not (sub["family"] == "sgd").any():
                sec.missing.append(f"{setting_label(s)}: no SGD records, so no ratio to SGD.")
    sec.table("step_times", "Step time", st, STEP_TIMES.shown)
    ov = overhead(ctx.records) if not ctx.empty else pd.DataFrame()
    if not ov.empty:
        sec.table("overhead", "Runner overhead (fraction of a step)", ov, OVERHEAD.shown)
    if not ctx.empty:
        for s in ctx.settings(st):
            sec.figure(step_distribution(ctx.records, s), "Per-step time", s)
    return sec
