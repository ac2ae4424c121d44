"""Speed-up: the speed-up and time-to-target tables (reports/tables/speedup.py: baseline time
÷ FNGD time per step, per epoch, for the measured run, for a projected schedule, and to a
metric target), what is missing for the comparison, and the paper's claims beside ours."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from reports import paper
from reports.common import (
    SETTING,
    epoch_records,
    setting_label,
    settings,
)
from reports.section import Section
from reports.tables.epochs import PROJECT_EPOCHS, cut_epochs
from reports.tables.speedup import SPEEDUP, TIME_TO_TARGET
from reports.vocabulary import FNGD, display_name, family_rank

if TYPE_CHECKING:
    from reports.context import Context

ID = "speedup"
TITLE = "Speedup"

#: Baselines whose absence the section reports (NGD is optional).
REQUIRED_BASELINES = ("kfac", "sgd", "adamw")


def speedup_gaps(df: pd.DataFrame) -> list[str]:
    """What is missing for the speedup table, one sentence per gap."""
    if df.empty:
        return ["No records: nothing to compare."]
    present = set(df["family"])
    if FNGD not in present:
        return [
            "No FNGD records: the speedup table compares FNGD with KFAC, SGD and AdamW "
            f"(optimizers present: {', '.join(sorted(present, key=family_rank))})."
        ]
    gaps = []
    if not present - {FNGD}:
        gaps.append(
            "Only FNGD records: no KFAC, SGD or AdamW records to compare against, "
            "so there are no speedups."
        )
        return gaps
    for _, s in settings(df).iterrows():
        mask = pd.Series(True, index=df.index)
        for c in SETTING:
            mask &= df[c] == s[c]
        opts = set(df.loc[mask, "family"])
        label = setting_label(s)
        if FNGD not in opts:
            gaps.append(f"{label}: no FNGD records, no speedup for this setting.")
            continue
        missing = [display_name(b) for b in REQUIRED_BASELINES if b not in opts]
        if missing:
            gaps.append(f"{label}: no {', '.join(missing)} records, so no speedup against them.")
        kinds = set(df.loc[mask, "kind"])
        if "epoch" not in kinds:
            gaps.append(f"{label}: no epoch records, so no per-epoch or projected speedup.")
        if "step" not in kinds:
            gaps.append(f"{label}: no step records, so no per-step speedup.")
    if "target" not in set(df["kind"]):
        gaps.append("No target records: time to target is not available.")
    e = epoch_records(df)
    f = e.loc[e["family"] == FNGD] if not e.empty else e
    if not f.empty and not (f["epoch"] > 0).any():
        gaps.append(
            "FNGD ran a single epoch only: its later-epoch time, and so the projected "
            f"{PROJECT_EPOCHS}-epoch schedule, cannot be computed."
        )
    return gaps


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "FNGD against each baseline in the same setting (workload, data, device, batch size). "
        "Every number is baseline time ÷ FNGD time: above 1× FNGD is faster. Per step: median "
        "of all non-warm-up steps. First epoch: epoch 0, where FNGD inverts. Later epochs: "
        "median epoch after the first, where FNGD reuses its coefficients (weighted sum). "
        f"Measured run: the epochs actually run (only when both ran as many). PROJECTED "
        f"{PROJECT_EPOCHS} epochs: first epoch + {PROJECT_EPOCHS - 1} × median "
        "later epoch, an extrapolation, not a measurement. Time to target: training wall time "
        "until the eval metric first reached the target, at the highest target both reached.",
    )
    sec.missing += speedup_gaps(ctx.records)
    sec.notes += cut_epochs(ctx.records)
    sp = ctx.speed
    sec.table(
        "speedup",
        "FNGD speedup (baseline time ÷ FNGD time)",
        sp,
        SPEEDUP.shown,
        note="n/a: the records needed for that column are missing (see above); the measured "
        "run needs both optimizers to have run the same number of epochs.",
        drop_constant=("fngd",),
    )
    if not ctx.empty:  # without records, the claims alone are no reason to show the section
        sec.table(
            "paper_claims",
            "The paper's claims beside our measurements",
            paper.compare(ctx.records, sp, ctx.final),
            paper.CLAIM_COLUMNS.shown,
            note=f"Source: {paper.PAPER}. Our numbers come from the records above and hold "
            "only under our conditions; a SYNTHETIC data source makes metric comparisons "
            "meaningless.",
        )
    if not ctx.targets.empty:
        sec.table(
            "time_to_target",
            "Time to target",
            ctx.targets,
            TIME_TO_TARGET.shown,
            note="Median over the runs that reached the target. The time to target is "
            "training time only; the evaluations until then took the time shown beside it.",
        )
    return sec
