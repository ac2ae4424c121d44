"""Input problems: lines and paths that could not be used, and tables that failed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from reports.common import col
from reports.section import Section

if TYPE_CHECKING:
    from reports.context import Context

ID = "problems"
TITLE = "Input problems"

#: Problems shown in the page; the CSV lists them all.
MAX_PROBLEMS = 200
PROBLEMS = col("problem", "problem")


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Lines and paths that could not be used; each was skipped and the rest of the "
        "report is built without it.",
    )
    found = ctx.problems + ctx.errors
    if not found:
        sec.notes.append("None: every line read was a usable record.")
        return sec
    sec.table(
        "problems",
        f"{len(found)} problem(s)",
        pd.DataFrame({"problem": found}, columns=PROBLEMS.csv),
        PROBLEMS.shown,
        max_rows=MAX_PROBLEMS,
        note=f"Only the first {MAX_PROBLEMS} are shown; the CSV lists them all."
        if len(found) > MAX_PROBLEMS
        else "",
    )
    return sec
