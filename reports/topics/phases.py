"""Phase breakdown: the phase-time table (reports/tables/phases.py), the stacked bars of
exclusive medians, and the untimed rest of the step."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from reports import plot
from reports.common import (
    OPT,
    OPT_COLUMNS,
    SETTING,
    SETTING_COLUMNS,
    Columns,
    col,
    cols,
    empty,
    select,
    setting_label,
    sort_rows,
)
from reports.section import Section
from reports.tables.phases import PHASE_TIMES
from reports.vocabulary import OTHER, PHASE_COLORS, phase_rank

if TYPE_CHECKING:
    from reports.context import Context

ID = "phases"
TITLE = "Phase breakdown"

PHASE_STACK = cols(SETTING_COLUMNS, OPT_COLUMNS, "mode", "phase", "seconds")
#: ``phase_wide``: these, with one ``phase:<name>`` column per phase before the last.
PHASE_WIDE = cols(
    SETTING_COLUMNS, OPT_COLUMNS, col("mode", "mode"), col("step_median_s", "median step", "ms")
)


def phase_wide_columns(wide: pd.DataFrame) -> Columns:
    """``PHASE_WIDE`` with the ``phase:<name>`` columns of ``wide`` in place."""
    phases = [c for c in wide.columns if c.startswith("phase:")]
    head = Columns(PHASE_WIDE.names[:-1], PHASE_WIDE.shown[:-1])
    tail = Columns(PHASE_WIDE.names[-1:], PHASE_WIDE.shown[-1:])
    return cols(head, *(col(c, c.split(":", 1)[1], "ms?") for c in phases), tail)


def phase_stack(phases: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Exclusive median per phase for stacked bars, plus the untimed rest of the step.

    ``other (untimed)`` is the median step time of that (setting, optimizer, mode) minus the
    sum of the exclusive medians, when positive.
    """
    if phases.empty:
        return empty(PHASE_STACK)
    stack = phases[SETTING + OPT + ["mode", "phase", "excl_median_s"]].rename(
        columns={"excl_median_s": "seconds"}
    )
    key = SETTING + OPT + ["mode"]
    total = stack.groupby(key, sort=False)["seconds"].sum().rename("timed").reset_index()
    if not steps.empty:
        total = total.merge(steps[key + ["median_s"]], on=key, how="left")
        total["seconds"] = (total["median_s"] - total["timed"]).clip(lower=0.0)
        rest = total.loc[total["seconds"] > 0, key + ["seconds"]].assign(phase=OTHER)
        stack = pd.concat([stack, rest], ignore_index=True)
    return sort_rows(stack, extra=["mode", "phase"])[PHASE_STACK.csv]


def phase_wide(stack: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """The stacked-bar numbers as one row per (setting, optimizer, mode): ``phase:<name>``
    columns in phase order, and ``step_median_s``, the median whole step of that mode."""
    if stack.empty:
        return empty(PHASE_WIDE)
    key = SETTING + OPT + ["mode"]
    wide = stack.pivot_table(index=key, columns="phase", values="seconds", aggfunc="sum")
    phases = sorted(wide.columns, key=phase_rank)
    wide = wide[phases]
    wide.columns = [f"phase:{p}" for p in phases]
    wide = wide.reset_index()
    wide.columns.name = None
    if steps.empty:
        wide["step_median_s"] = math.nan
    else:
        med = steps[key + ["median_s"]].rename(columns={"median_s": "step_median_s"})
        wide = wide.merge(med, on=key, how="left")
    return sort_rows(wide, extra=["mode"])


def stack_figure(stack: pd.DataFrame, setting: pd.Series) -> Figure | None:
    """Stacked horizontal bars of exclusive median phase time per optimizer and mode."""
    s = select(stack, setting)
    if s.empty:
        return None
    s = s.assign(label=[plot.mode_label(o, m) for o, m in zip(s["opt"], s["mode"], strict=True)])
    labels = []
    for lab in plot.opt_labels(s):
        labels += list(dict.fromkeys(s.loc[s["opt"] == lab, "label"]))
    phases = sorted(set(s["phase"]), key=phase_rank)
    wide = s.pivot_table(index="label", columns="phase", values="seconds", aggfunc="sum")
    wide = wide.reindex(index=labels, columns=phases).fillna(0.0)
    scale, unit = plot.time_unit(float(wide.sum(axis=1).max()))
    wide = wide * scale
    extra = sns.color_palette("pastel", 10)
    with plot.style(), plot.context():
        fig = Figure(figsize=(plot.WIDTH, 1.3 + 0.38 * len(labels)), layout="constrained")
        ax = fig.subplots()
        left = np.zeros(len(labels))
        y = np.arange(len(labels))
        for i, ph in enumerate(phases):
            vals = wide[ph].to_numpy()
            color = PHASE_COLORS.get(ph, extra[i % len(extra)])
            ax.barh(
                y,
                vals,
                left=left,
                color=color,
                label=ph,
                height=0.6,
                edgecolor="#555555" if ph == OTHER else "white",
                linewidth=0.5,
            )
            left += vals
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_xlabel(f"median exclusive time per step ({unit})")
        fig.legend(
            *ax.get_legend_handles_labels(),
            fontsize=7,
            ncol=min(6, len(phases)),
            loc="outside lower center",
            frameon=False,
        )
        plot.title(fig, "Phase breakdown per step (exclusive time; warm-up excluded)", setting)
    return fig


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Time per phase per step, warm-up excluded, per optimizer and mode. Phases nest "
        "(e.g. FNGD's weighted sum inside backward): 'inclusive' is a phase's own time, "
        "'exclusive' subtracts its child phases; the stacked bars use the median exclusive "
        "time, so nested work is not counted twice. 'other (untimed)' is the rest of the "
        "median step. Statistics run over the steps in which the phase ran (n).",
    )
    sec.missing += ctx.kind_missing("phase", "no phase breakdown")
    ph = ctx.phases
    if not ph.empty and not ctx.steps.empty:
        have = set(map(tuple, ph[SETTING + ["opt"]].drop_duplicates().to_numpy()))
        for _, r in ctx.steps[SETTING + ["opt"]].drop_duplicates().iterrows():
            if tuple(r) not in have:
                sec.missing.append(
                    f"{setting_label(r)}: {r['opt']} has step records but no phase records."
                )
    stack = phase_stack(ph, ctx.steps)
    wide = phase_wide(stack, ctx.steps)
    if not wide.empty:
        sec.table(
            "phase_exclusive",
            "Median exclusive time per step (ms)",
            wide,
            phase_wide_columns(wide).shown,
            note="Each phase's time minus its nested phases; the stacked bars below draw "
            "these numbers.",
        )
    sec.table(
        "phase_times",
        "Per-phase statistics (inclusive and exclusive: median, IQR, n)",
        ph,
        PHASE_TIMES.shown,
        collapsed=True,
    )
    if not stack.empty:
        sec.table("phase_stack", "Stacked-bar data", stack, (), show=False)
        for s in ctx.settings(stack):
            sec.figure(stack_figure(stack, s), "Phase breakdown", s)
    return sec
