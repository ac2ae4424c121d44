"""Failed cells: cells that diverged, ran out of memory or failed, and cells that started but
never recorded a final status."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from bench.records import CELL_STATUSES, FAILED_STATUSES
from reports.common import (
    OPT_COLUMNS,
    SETTING_COLUMNS,
    col,
    cols,
    date,
    empty,
    isnan,
    sort_rows,
)
from reports.section import Section

if TYPE_CHECKING:
    from reports.context import Context

ID = "cells"
TITLE = "Failed cells"

#: The statuses a cell ends with (every one but ``started``).
TERMINAL = tuple(s for s in CELL_STATUSES if s != "started")

FAILED_CELLS = cols(
    col("run_id", "run"),
    SETTING_COLUMNS,
    OPT_COLUMNS,
    col("seed", "seed", "int"),
    col("status", "status"),
    col("epoch", "epoch", "int?"),
    col("message", "message"),
    col("when", "when"),
)
UNFINISHED_CELLS = cols(
    col("run_id", "run"),
    SETTING_COLUMNS,
    OPT_COLUMNS,
    col("seed", "seed", "int"),
    col("last_epoch", "last epoch", "int?"),
    col("started", "started"),
)


def failed_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Cells that ended ``diverged``, ``oom`` or ``error``."""
    c = df.loc[(df["kind"] == "cell") & df["name"].isin(FAILED_STATUSES)] if not df.empty else df
    if c.empty:
        return empty(FAILED_CELLS)
    c = c.assign(
        status=c["name"],
        message=c["value"].map(lambda v: "" if v is None or isnan(v) else str(v)),
        when=c["time"].map(date),
    )
    return sort_rows(c)[FAILED_CELLS.csv]


def unfinished_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Cells with a ``started`` record and no ``finished``/``diverged``/``oom``/``error``."""
    c = df.loc[df["kind"] == "cell"] if not df.empty else df
    if c.empty:
        return empty(UNFINISHED_CELLS)
    ended = set(c.loc[c["name"].isin(TERMINAL), "run"])
    started = c.loc[(c["name"] == "started") & ~c["run"].isin(ended)]
    if started.empty:
        return empty(UNFINISHED_CELLS)
    started = started.drop_duplicates(subset=["run"], keep="first")
    last_epoch = df.groupby("run")["epoch"].max()
    started = started.assign(
        last_epoch=started["run"].map(last_epoch), started=started["time"].map(date)
    )
    return sort_rows(started)[UNFINISHED_CELLS.csv]


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Cells (one workload × optimizer × seed run) that diverged, ran out of memory or "
        "failed, and cells that started but have no final status (still running or killed).",
    )
    if ctx.empty:
        sec.missing.append(ctx.no_records())
        return sec
    failed = failed_cells(ctx.records)
    unfinished = unfinished_cells(ctx.records)
    if "cell" not in set(ctx.records["kind"]):
        sec.missing.append("No 'cell' records, so cell status is unknown.")
    elif failed.empty and unfinished.empty:
        sec.notes.append("No cell diverged, ran out of memory, failed or stopped unfinished.")
    if not failed.empty:
        sec.table(
            "failed_cells",
            "Diverged, out-of-memory and failed cells",
            failed,
            FAILED_CELLS.shown,
        )
    if not unfinished.empty:
        sec.table(
            "unfinished_cells", "Started, no final status", unfinished, UNFINISHED_CELLS.shown
        )
    return sec
