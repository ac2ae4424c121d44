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
    setting_label,
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
    col("cpu_min_s", "CPU min", "ms?"),
    col("cpu_max_s", "CPU max", "ms?"),
    col("gpu_time_s", "GPU (ms)", "ms?"),
    col("gpu_min_s", "GPU min", "ms?"),
    col("gpu_max_s", "GPU max", "ms?"),
    col("spread", "max ÷ min", "ratio"),
    col("count", "calls / step", "g?"),
)
#: Repeated steps of one mode whose slowest is more than this many times the fastest are
#: flagged: their median is not a steady figure (a stall, a first call, another process).
SPREAD_WARNING = 3.0
#: The columns of each clock: median, min and max over the profiled steps.
CLOCKS = {"cpu_time": "cpu", "gpu_time": "gpu"}


def profile(df: pd.DataFrame) -> pd.DataFrame:
    """Per-step CPU and GPU time of each phase from profiler traces, warm-up steps excluded.

    Median, min and max over the profiled steps (of all runs) per (setting, optimizer, mode,
    phase); records without a phase describe the whole step. ``spread`` is max ÷ min of the
    GPU time where there is one, else of the CPU time. ``count`` is the median number of
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
    agg = per_step.groupby(key + ["name"], dropna=False, sort=False)["v"].agg(
        ["median", "min", "max"]
    )
    wide = agg["median"].unstack("name")
    for clock, short in CLOCKS.items():
        if clock in wide.columns:
            wide[f"{short}_min_s"] = agg["min"].unstack("name")[clock]
            wide[f"{short}_max_s"] = agg["max"].unstack("name")[clock]
    wide = wide.reset_index()
    wide.columns.name = None
    steps = per_step[key + ["run", "step"]].drop_duplicates()
    steps = steps.groupby(key, dropna=False, sort=False).size().rename("steps")
    wide = wide.merge(steps.reset_index(), on=key, how="left")
    wide = wide.rename(columns={"cpu_time": "cpu_time_s", "gpu_time": "gpu_time_s"})
    for c in PROFILE.csv:
        if c not in wide.columns:
            wide[c] = math.nan
    gpu = wide["gpu_min_s"].notna() & (wide["gpu_min_s"] > 0)
    lo = wide["gpu_min_s"].where(gpu, wide["cpu_min_s"])
    hi = wide["gpu_max_s"].where(gpu, wide["cpu_max_s"])
    wide["spread"] = (hi / lo.where(lo > 0)).astype(float)
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


def spread_warnings(prof: pd.DataFrame) -> list[str]:
    """One sentence per (setting, optimizer, mode) whose whole step varied more than
    ``SPREAD_WARNING`` times between its fastest and slowest profiled step."""
    wide = prof.loc[(prof["phase"] == WHOLE_STEP) & (prof["spread"] > SPREAD_WARNING)]
    out = []
    for _, r in wide.iterrows():
        clock = "gpu" if r["gpu_min_s"] > 0 else "cpu"
        out.append(
            f"{setting_label(r)}: {plot.mode_label(r['opt'], r['mode'])}: repeated steps "
            f"disagree widely, {r[clock + '_min_s'] * 1e3:.3g} to "
            f"{r[clock + '_max_s'] * 1e3:.3g} ms {clock.upper()} per step over "
            f"{int(r['steps'])} steps ({r['spread']:.1f}×): its median is no steady figure; "
            "profile again with more steps, or on a quiet machine."
        )
    return out


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Per-step CPU and GPU time of each phase read back from torch.profiler traces "
        "(fngd-bench profile): median, min and max over the profiled steps, warm-up steps "
        "excluded, per optimizer and mode; '(whole step)' is the step as a whole. Steps whose "
        f"slowest is over {SPREAD_WARNING:g}× their fastest are flagged above the table.",
    )
    sec.missing += ctx.kind_missing("profile", "no profiler summary")
    prof = profile(ctx.records) if not ctx.empty else pd.DataFrame()
    if not prof.empty:
        sec.warnings += spread_warnings(prof)
    sec.table("profile", "Profiler summary", prof, PROFILE.shown)
    for s in ctx.settings(prof) if not prof.empty else []:
        sec.figure(figure(prof, s), "Profile", s)
    return sec
