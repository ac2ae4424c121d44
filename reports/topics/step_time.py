"""Per-step time: whole-step statistics per optimizer and mode, the ratio to SGD, the runner's
timing overhead, and the distribution of step times."""

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
    stats,
    timed,
)
from reports.section import Section

if TYPE_CHECKING:
    from reports.context import Context

ID = "steps"
TITLE = "Per-step time"

STEP_TIMES = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    col("mode", "mode"),
    col("n", "n", "int"),
    col("median_s", "median (ms)", "ms"),
    col("q1_s", "q1 (ms)", "ms"),
    col("q3_s", "q3 (ms)", "ms"),
    col("iqr_s", "IQR (ms)", "ms"),
    "sgd_median_s",
    col("ratio_to_sgd", "×SGD", "ratio"),
)
OVERHEAD = cols(
    SETTING_COLUMNS, OPT_COLUMNS, col("n", "n", "int"), col("median_fraction", "median", "pct")
)


def step_times(df: pd.DataFrame) -> pd.DataFrame:
    """Per-step time per (setting, optimizer, mode), warm-up steps excluded.

    Every optimizer gets a row with ``mode == "all"`` (all its steps); optimizers whose steps
    carry a mode (FNGD: inversion / weighted_sum; KFAC: inverse / no_inverse) also get one row
    per mode. ``ratio_to_sgd`` divides by SGD's median step (all steps) in the same setting.
    """
    s = timed(df, "step", SETTING + OPT + ["mode", "seconds"]) if not df.empty else df
    if s.empty:
        return empty(STEP_TIMES)
    out = [stats(s, SETTING + OPT).assign(mode="all")]
    moded = s.loc[s["mode"].notna()]
    if not moded.empty:
        out.append(stats(moded, SETTING + OPT + ["mode"]))
    res = pd.concat(out, ignore_index=True)
    sgd = (
        sort_rows(res.loc[(res["family"] == "sgd") & (res["mode"] == "all")])
        .groupby(SETTING, sort=False)["median_s"]
        .first()
        .rename("sgd_median_s")
        .reset_index()
    )
    res = res.merge(sgd, on=SETTING, how="left")
    res["ratio_to_sgd"] = res["median_s"] / res["sgd_median_s"]
    res["_all"] = res["mode"] != "all"
    res = sort_rows(res, extra=["_all", "mode"]).drop(columns="_all")
    return res[STEP_TIMES.csv]


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
