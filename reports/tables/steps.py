"""Per-step time per (setting, optimizer, mode), and its ratio to SGD's step: the table of
the step-time section that the phase, speed-up, design-space, batch-size and distributed
sections compare against."""

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
    sort_rows,
    stats,
    timed,
)

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
