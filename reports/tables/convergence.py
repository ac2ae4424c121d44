"""Train loss and eval values per run against epoch and wall time, their medians over runs
(the convergence curves) and each run's final values: shared by the convergence, speed-up,
design-space and summary sections and the paper's claims."""

from __future__ import annotations

import math

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
    metric_names,
    numeric_value,
    quantile,
    sort_rows,
)

CURVES = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    "quantity",
    "epoch",
    "n",
    "wall_median_s",
    "median",
    "min",
    "max",
    "q1",
    "q3",
)
FINAL_VALUES = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    col("runs", "runs", "int"),
    col("epochs", "epochs", "int"),
    col("train_loss_median", "train loss", "g"),
    col("train_loss_min", "min", "g"),
    col("train_loss_max", "max", "g"),
    col("metric", "metric"),
    col("metric_median", "metric", "g"),
    col("metric_min", "min", "g"),
    col("metric_max", "max", "g"),
    col("wall_median_s", "train time (s)", "s"),
)


def convergence_long(df: pd.DataFrame) -> pd.DataFrame:
    """Per run: train loss (epoch records) and eval values against epoch and wall time."""
    columns = SETTING + OPT + ["run", "quantity", "epoch", "wall_s", "value"]
    parts = []
    e = epoch_records(df)
    if not e.empty:
        e = e.loc[e["name"].isna() | (e["name"] == "train_loss")]
        e = e.sort_values("epoch").assign(value=numeric_value(e).reindex(e.index))
        e = e.assign(
            quantity="train_loss",
            wall_s=e.groupby(SETTING + OPT + ["run"], sort=False)["seconds"].cumsum(),
        )
        parts.append(e[columns])
    ev = df.loc[(df["kind"] == "eval") & df["name"].notna()] if not df.empty else df
    if not ev.empty:
        ev = ev.drop_duplicates(subset=SETTING + OPT + ["run", "epoch", "name"], keep="last")
        ev = ev.assign(quantity=ev["name"], wall_s=ev["seconds"], value=numeric_value(ev))
        parts.append(ev[columns])
    if not parts:
        return empty(columns)
    out = pd.concat(parts, ignore_index=True)
    return out.dropna(subset=["value", "epoch"])


def convergence(df: pd.DataFrame) -> pd.DataFrame:
    """Median, min, max and quartiles over runs per (setting, optimizer, quantity, epoch)."""
    long = convergence_long(df)
    if long.empty:
        return empty(CURVES)
    g = long.groupby(SETTING + OPT + ["quantity", "epoch"], sort=False)
    out = g["value"].agg(
        n="count", median="median", min="min", max="max", q1=quantile(0.25), q3=quantile(0.75)
    )
    out["wall_median_s"] = g["wall_s"].median()
    return sort_rows(out.reset_index(), extra=["quantity", "epoch"])[CURVES.csv]


def final_values(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's last train loss and last eval metric; median, min, max over runs."""
    long = convergence_long(df)
    if long.empty:
        return empty(FINAL_VALUES)
    metrics = metric_names(df)
    last = (
        long.sort_values("epoch").groupby(SETTING + OPT + ["run", "quantity"], sort=False).tail(1)
    )
    key = SETTING + OPT
    out = last[key].drop_duplicates()
    tl = last.loc[last["quantity"] == "train_loss"]
    if not tl.empty:
        a = tl.groupby(key, sort=False).agg(
            runs=("run", "nunique"),
            epochs=("epoch", "max"),
            train_loss_median=("value", "median"),
            train_loss_min=("value", "min"),
            train_loss_max=("value", "max"),
            wall_median_s=("wall_s", "median"),
        )
        a["epochs"] = a["epochs"] + 1
        out = out.merge(a.reset_index(), on=key, how="left")
    last = last.assign(metric=last["workload"].map(metrics))
    m = last.loc[last["quantity"] == last["metric"]]
    if not m.empty:
        b = m.groupby(key + ["metric"], sort=False)["value"].agg(
            metric_median="median", metric_min="min", metric_max="max"
        )
        out = out.merge(b.reset_index(), on=key, how="left")
    for c in FINAL_VALUES.names:
        if c not in out.columns:
            out[c] = math.nan
    return sort_rows(out)[FINAL_VALUES.csv]
