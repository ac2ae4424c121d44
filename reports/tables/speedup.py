"""FNGD against each baseline in the same setting, and the time to reach each metric target:
the tables the speed-up, summary and design-space sections and the paper's claims share.

Every speed-up is baseline time ÷ FNGD time (``ratio``), above 1 FNGD is faster; all of
them are computed here, so that one module holds every speed-up the report states.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.labels import RIVALS
from reports.common import (
    OPT,
    OPT_COLUMNS,
    SETTING,
    SETTING_COLUMNS,
    col,
    cols,
    empty,
    group,
    higher_is_better,
    isnan,
    metric_names,
    numeric_value,
    ratio,
    sort_rows,
    strictest_target,
    training,
)
from reports.tables.epochs import PROJECT_EPOCHS
from reports.vocabulary import FNGD

#: The families FNGD is compared against, in column order (the rivals' labels are their
#: families); every other family in the records but FNGD (a plugin's, a reference) follows
#: them, by name (``baseline_rank``).
BASELINES = ("kfac", "ngd", "sgd", "adamw", *RIVALS)


def baseline_rank(family: str) -> int:
    """A baseline's place: the suite's in ``BASELINES`` order, then every other family."""
    return BASELINES.index(family) if family in BASELINES else len(BASELINES)


TIME_TO_TARGET = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    col("metric", "metric"),
    "higher_is_better",
    col("target", "target", "g"),
    group(("runs", "reached"), (("reached", "runs reached", "int"), ("runs", "runs", "int"))),
    col("median_s", "median time (s)", "s"),
    col("eval_median_s", "evaluation until then (s)", "s?"),
    col("median_epoch", "median epoch", "g"),
)
SPEEDUP = cols(
    SETTING_COLUMNS,
    col("fngd", "FNGD"),
    col("baseline", "against"),
    "baseline_optimizer",
    col("per_step", "per step", "x"),
    col("first_epoch", "first epoch", "x"),
    col("later_epochs", "later epochs", "x"),
    col("measured_epochs", "epochs run", "int"),
    col("measured_run", "measured run", "x"),
    col("projected_100", f"PROJECTED {PROJECT_EPOCHS} epochs", "x"),
    "fngd_projected_100_s",
    "baseline_projected_100_s",
    col("target", "target", "g"),
    col("time_to_target", "time to target", "x"),
)


def _eval_until(df: pd.DataFrame, t: pd.DataFrame) -> pd.Series:
    """Per target record: the evaluation time its run spent up to and including the target's
    epoch (kept out of the time to target, which is training time only)."""
    ev = df.loc[(df["kind"] == "eval") & df["eval_seconds"].notna() & df["epoch"].notna()]
    if ev.empty:
        return pd.Series(math.nan, index=t.index)
    per_epoch = ev.drop_duplicates(subset=["run", "epoch"], keep="last")[
        ["run", "epoch", "eval_seconds"]
    ]
    merged = t[["run", "epoch"]].reset_index().merge(per_epoch, on="run", suffixes=("", "_e"))
    merged = merged.loc[merged["epoch_e"] <= merged["epoch"]]
    return merged.groupby("index")["eval_seconds"].sum().reindex(t.index)


def time_to_target(df: pd.DataFrame) -> pd.DataFrame:
    """Training wall time to reach each metric target, median over the runs that reached it,
    and beside it the evaluation time spent until then (not part of the time to target)."""
    t = df.loc[(df["kind"] == "target") & df["seconds"].notna()] if not df.empty else df
    if t.empty:
        return empty(TIME_TO_TARGET)
    t = t.assign(target=numeric_value(t), eval_s=_eval_until(df, t))
    key = SETTING + OPT
    trained = training(df)
    runs = trained.groupby(key, sort=False)["run"].nunique().rename("runs").reset_index()
    out = (
        t.groupby(key + ["target"], dropna=False, sort=False)
        .agg(
            reached=("run", "nunique"),
            median_s=("seconds", "median"),
            eval_median_s=("eval_s", "median"),
            median_epoch=("epoch", "median"),
        )
        .reset_index()
        .merge(runs, on=key, how="left")
    )
    metrics, higher = metric_names(df), higher_is_better(df)
    out["metric"] = out["workload"].map(lambda w: metrics.get(w, "metric"))
    out["higher_is_better"] = out["workload"].map(lambda w: higher.get(w, True))
    return sort_rows(out, extra=["target"])[TIME_TO_TARGET.csv]


def _lookup(frame: pd.DataFrame, columns: list[str]) -> dict[tuple, pd.Series]:
    if frame.empty:
        return {}
    return {tuple(r[c] for c in columns): r for _, r in frame.iterrows()}


def speedup(steps: pd.DataFrame, epochs: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """FNGD against each baseline in the same setting; every number is baseline / FNGD time.

    Columns: ``per_step`` (median step, all modes), ``first_epoch``, ``later_epochs``
    (median epoch after the first), ``measured_run`` (median total of the measured epochs,
    only when both ran the same number of epochs), ``projected_100`` (first + 99 × later
    median epoch; a projection), ``time_to_target`` (at the strictest target both reached,
    ``strictest_target``). Above 1 means FNGD is faster.
    """
    all_steps = steps.loc[steps["mode"] == "all"] if not steps.empty else steps
    key = SETTING + OPT
    step_of = _lookup(all_steps, key)
    epoch_of = _lookup(epochs, key)
    members = (
        pd.concat([f[key] for f in (all_steps, epochs, targets) if not f.empty], ignore_index=True)
        if any(not f.empty for f in (all_steps, epochs, targets))
        else empty(key)
    )
    members = sort_rows(members.drop_duplicates())
    rows = []
    for setting, g in members.groupby(SETTING, sort=False):
        fngds = g.loc[g["family"] == FNGD]
        bases = g.loc[g["family"] != FNGD].copy()
        bases["_r"] = bases["family"].map(baseline_rank)
        bases = bases.sort_values(["_r", "family", "optimizer", "impl"])
        for _, f in fngds.iterrows():
            fk = tuple(f[c] for c in key)
            for _, b in bases.iterrows():
                bk = tuple(b[c] for c in key)
                fs, bs = step_of.get(fk), step_of.get(bk)
                fe, be = epoch_of.get(fk), epoch_of.get(bk)
                row = dict(zip(SETTING, setting, strict=True))
                row.update(fngd=f["opt"], baseline=b["opt"], baseline_optimizer=b["family"])
                row["per_step"] = ratio(
                    None if bs is None else bs["median_s"], None if fs is None else fs["median_s"]
                )
                for name, src in (
                    ("first_epoch", "first_median_s"),
                    ("later_epochs", "later_median_s"),
                    ("projected_100", "projected_100_s"),
                ):
                    row[name] = ratio(
                        None if be is None else be[src], None if fe is None else fe[src]
                    )
                row["fngd_projected_100_s"] = math.nan if fe is None else fe["projected_100_s"]
                row["baseline_projected_100_s"] = math.nan if be is None else be["projected_100_s"]
                same = (
                    fe is not None
                    and be is not None
                    and fe["epochs"] == be["epochs"]
                    and not isnan(fe["epochs"])
                )
                row["measured_epochs"] = fe["epochs"] if same else math.nan
                row["measured_run"] = (
                    ratio(be["measured_median_s"], fe["measured_median_s"]) if same else math.nan
                )
                row["target"], row["time_to_target"] = _target_ratio(targets, fk, bk)
                rows.append(row)
    if not rows:
        return empty(SPEEDUP)
    return pd.DataFrame(rows, columns=SPEEDUP.csv)


def _target_ratio(targets: pd.DataFrame, fk: tuple, bk: tuple) -> tuple[float, float]:
    if targets.empty:
        return math.nan, math.nan
    key = SETTING + OPT
    idx = targets.set_index(key)
    try:
        ft = idx.loc[[fk]]
        bt = idx.loc[[bk]]
    except KeyError:
        return math.nan, math.nan
    higher = bool(ft["higher_is_better"].iloc[0]) if "higher_is_better" in ft else True
    best = strictest_target(set(ft["target"].dropna()) & set(bt["target"].dropna()), higher)
    if isnan(best):
        return math.nan, math.nan
    f_s = ft.loc[ft["target"] == best, "median_s"].iloc[0]
    b_s = bt.loc[bt["target"] == best, "median_s"].iloc[0]
    return best, ratio(b_s, f_s)
