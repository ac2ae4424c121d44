"""Per-epoch time per (setting, optimizer): the first epoch and the later epochs apart, the
measured run and a projected full schedule (``PROJECT_EPOCHS``), shared by the epoch-time,
speed-up and design-space sections and the paper's claims; and what cut epochs mean."""

from __future__ import annotations

import pandas as pd

from reports.common import (
    OPT,
    OPT_COLUMNS,
    SETTING,
    SETTING_COLUMNS,
    col,
    cols,
    empty,
    epoch_records,
    group,
    join,
    setting_label,
    sort_rows,
    stats,
)

#: Length of the full schedule the projection is made for.
PROJECT_EPOCHS = 100

EPOCH_TIMES = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    "first_n",
    col("first_median_s", "first epoch (s)", "s"),
    col("first_modes", "first-epoch modes"),
    group(
        ("later_n", "later_median_s", "later_q1_s", "later_q3_s"),
        (
            ("later_median_s", "later epochs median (s)", "s"),
            ("later_q1_s", "q1 (s)", "s"),
            ("later_q3_s", "q3 (s)", "s"),
            ("later_n", "n later", "int"),
        ),
    ),
    col("later_modes", "later modes"),
    col("epochs", "epochs run", "int"),
    "runs",
    col("steps_per_epoch", "steps / epoch", "int?"),
    "max_steps_per_epoch",
    col("measured_median_s", "measured run (s)", "s"),
    col("projected_100_s", f"PROJECTED {PROJECT_EPOCHS} epochs (s)", "s"),
)


def _modes_by_epoch(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return empty(SETTING + OPT + ["first_modes", "later_modes"])
    s = df.loc[(df["kind"] == "step") & df["mode"].notna(), SETTING + OPT + ["epoch", "mode"]]
    if s.empty:
        return empty(SETTING + OPT + ["first_modes", "later_modes"])
    s = s.assign(first=s["epoch"] == 0)
    g = s.groupby(SETTING + OPT + ["first"], sort=False)["mode"].agg(join).reset_index()
    first = g.loc[g["first"]].drop(columns="first").rename(columns={"mode": "first_modes"})
    later = g.loc[~g["first"]].drop(columns="first").rename(columns={"mode": "later_modes"})
    return first.merge(later, on=SETTING + OPT, how="outer")


def epoch_times(df: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch time per (setting, optimizer): the first epoch (epoch 0) and later epochs apart.

    ``first_median_s``: median over runs of epoch 0. ``later_median_s`` (and quartiles):
    over every later epoch of every run. ``measured_median_s``: median over runs of the
    summed epoch times. ``projected_100_s`` = first + 99 × later median: a projection of a
    100-epoch schedule, not a measurement. ``*_modes``: the step modes seen in those epochs.
    """
    e = epoch_records(df)
    if e.empty:
        return empty(EPOCH_TIMES)
    key = SETTING + OPT
    base = e[key].drop_duplicates()
    first = e.loc[e["epoch"] == 0].groupby(key, sort=False)["seconds"]
    first = first.agg(first_n="count", first_median_s="median").reset_index()
    later = stats(e.loc[e["epoch"] > 0], key, prefix="later_").drop(columns="later_iqr_s")
    runs = e.groupby(key + ["run"], sort=False).agg(
        epochs=("epoch", "nunique"), total=("seconds", "sum")
    )
    runs = (
        runs.reset_index()
        .groupby(key, sort=False)
        .agg(
            epochs=("epochs", "median"),
            runs=("run", "nunique"),
            measured_median_s=("total", "median"),
        )
        .reset_index()
    )
    steps = e["steps"].where(e["steps"].notna(), e["steps_per_epoch"])
    length = (
        e.assign(_steps=steps)
        .groupby(key, sort=False)
        .agg(
            steps_per_epoch=("_steps", "median"), max_steps_per_epoch=("max_steps_per_epoch", "max")
        )
        .reset_index()
    )
    out = base.merge(first, on=key, how="left").merge(later, on=key, how="left")
    out = out.merge(runs, on=key, how="left").merge(_modes_by_epoch(df), on=key, how="left")
    out = out.merge(length, on=key, how="left")
    for c in ("first_n", "later_n"):
        out[c] = out[c].fillna(0).astype(int)
    out["projected_100_s"] = out["first_median_s"] + (PROJECT_EPOCHS - 1) * out["later_median_s"]
    return sort_rows(out)[EPOCH_TIMES.csv]


def cut_epochs(df: pd.DataFrame) -> list[str]:
    """One sentence per setting whose epochs were cut short (``max_steps_per_epoch``)."""
    if df.empty or df["max_steps_per_epoch"].isna().all():
        return []
    cut = df.loc[df["max_steps_per_epoch"].notna() & (df["kind"] == "epoch")]
    out = []
    for k, g in cut.groupby(SETTING, sort=False):
        st = dict(zip(SETTING, k, strict=True))
        n = int(g["max_steps_per_epoch"].max())
        replay = bool(g["replay_first_epoch"].map(lambda v: v is True).any())
        out.append(
            f"{setting_label(st)}: epochs were cut to at most {n} steps (max_steps_per_epoch)"
            + (", each replaying the first epoch's batches" if replay else "")
            + ": epoch times, measured runs and projections describe epochs of that length, "
            "not full passes over the data."
        )
    return out
