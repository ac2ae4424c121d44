"""Profile: per-step CPU and GPU time of each phase, read back from torch.profiler traces
(``profile`` records of ``fngd-bench profile``)."""

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
    sort_rows,
)
from reports.section import Section
from reports.vocabulary import phase_rank

if TYPE_CHECKING:
    from reports.context import Context

ID = "profile"
TITLE = "Profile"

#: The ``phase`` of the rows that describe a whole step.
WHOLE_STEP = "(whole step)"
PROFILE = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    col("mode", "mode"),
    col("phase", "phase"),
    col("steps", "steps", "int"),
    col("cpu_time_s", "CPU (ms)", "ms?"),
    col("gpu_time_s", "GPU (ms)", "ms?"),
    col("count", "calls / step", "g?"),
)


def profile(df: pd.DataFrame) -> pd.DataFrame:
    """Per-step CPU and GPU time of each phase from profiler traces, warm-up steps excluded.

    Median over the profiled steps (of all runs) per (setting, optimizer, mode, phase);
    records without a phase describe the whole step. ``count`` is the median number of
    calls per step.
    """
    p = (
        df.loc[(df["kind"] == "profile") & df["name"].notna() & ~df["warmup"]]
        if not (df.empty)
        else df
    )
    if p.empty:
        return empty(PROFILE)
    p = p.assign(
        v=numeric_value(p),
        phase=p["phase"].fillna(WHOLE_STEP),
        mode=p["mode"].fillna("all"),
    ).dropna(subset=["v"])
    if p.empty:
        return empty(PROFILE)
    key = SETTING + OPT + ["mode", "phase"]
    per_step = p.groupby(key + ["name", "run", "step"], dropna=False, sort=False)["v"].sum()
    per_step = per_step.reset_index()
    med = per_step.groupby(key + ["name"], dropna=False, sort=False)["v"].median()
    wide = med.unstack("name").reset_index()
    wide.columns.name = None
    steps = per_step[key + ["run", "step"]].drop_duplicates()
    steps = steps.groupby(key, dropna=False, sort=False).size().rename("steps")
    wide = wide.merge(steps.reset_index(), on=key, how="left")
    wide = wide.rename(columns={"cpu_time": "cpu_time_s", "gpu_time": "gpu_time_s"})
    for c in ("cpu_time_s", "gpu_time_s", "count"):
        if c not in wide.columns:
            wide[c] = math.nan
    wide["_whole"] = wide["phase"] != WHOLE_STEP
    out = sort_rows(wide, extra=["mode", "_whole", "phase"]).drop(columns="_whole")
    return out[PROFILE.csv]


def figure(prof: pd.DataFrame, setting: pd.Series) -> Figure | None:
    """Per-step CPU and GPU time of each phase per optimizer and mode (profiler summary)."""
    p = select(prof, setting)
    if p.empty:
        return None
    p = p.loc[p["phase"] != WHOLE_STEP]
    long = p.melt(
        id_vars=OPT + ["mode", "phase"],
        value_vars=["cpu_time_s", "gpu_time_s"],
        var_name="clock",
        value_name="seconds",
    ).dropna(subset=["seconds"])
    if long.empty:
        return None
    long = long.assign(
        clock=long["clock"].map({"cpu_time_s": "CPU", "gpu_time_s": "GPU"}),
        who=[plot.mode_label(o, m) for o, m in zip(long["opt"], long["mode"], strict=True)],
    )
    long = long.assign(
        label=[f"{w} · {ph}" for w, ph in zip(long["who"], long["phase"], strict=True)]
    )
    order = []
    for lab in plot.opt_labels(long):
        for who in dict.fromkeys(long.loc[long["opt"] == lab, "who"]):
            phs = sorted(set(long.loc[long["who"] == who, "phase"]), key=phase_rank)
            order += [f"{who} · {ph}" for ph in phs]
    scale, unit = plot.time_unit(float(long["seconds"].max()))
    long = long.assign(t=long["seconds"] * scale)
    with plot.style(), plot.context():
        fig = Figure(figsize=(plot.WIDTH, 1.0 + 0.28 * len(order)), layout="constrained")
        ax = fig.subplots()
        sns.barplot(
            data=long,
            x="t",
            y="label",
            hue="clock",
            order=order,
            hue_order=[h for h in ("CPU", "GPU") if h in set(long["clock"])],
            palette="Set1",
            ax=ax,
        )
        positive = long.loc[long["t"] > 0, "t"]
        if len(positive) and positive.max() / positive.min() > 30:
            ax.set_xscale("log")
        ax.set_xlabel(f"median time per profiled step ({unit})")
        ax.set_ylabel("")
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7, title="")
        plot.title(fig, "Profiler: time per phase per step (warm-up excluded)", setting)
    return fig


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Per-step CPU and GPU time of each phase read back from torch.profiler traces "
        "(fngd-bench profile): median over the profiled steps, warm-up steps excluded, per "
        "optimizer and mode; '(whole step)' is the step as a whole.",
    )
    sec.missing += ctx.kind_missing("profile", "no profiler summary")
    prof = profile(ctx.records) if not ctx.empty else pd.DataFrame()
    sec.table("profile", "Profiler summary", prof, PROFILE.shown)
    for s in ctx.settings(prof) if not prof.empty else []:
        sec.figure(figure(prof, s), "Profile", s)
    return sec
