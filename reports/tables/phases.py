"""Each phase's time per step per (setting, optimizer, mode), inclusive and exclusive of
its nested phases: the table the phase section shows and the stacked bars start from."""

from __future__ import annotations

import pandas as pd

from bench.records import PHASE_COLUMN, split_phase_key
from reports.common import (
    OPT,
    OPT_COLUMNS,
    SETTING,
    SETTING_COLUMNS,
    TIMED_KINDS,
    col,
    cols,
    empty,
    join,
    phase_columns,
    sort_rows,
    stats,
)

PHASE_TIMES = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    col("mode", "mode"),
    col("phase", "phase"),
    col("parent", "parent"),
    col("n", "n", "int"),
    col("median_s", "inclusive median (ms)", "ms"),
    "q1_s",
    "q3_s",
    col("iqr_s", "IQR (ms)", "ms"),
    col("excl_median_s", "exclusive median (ms)", "ms"),
    "excl_q1_s",
    "excl_q3_s",
    col("excl_iqr_s", "IQR (ms)", "ms"),
)


def phase_times(df: pd.DataFrame) -> pd.DataFrame:
    """Per-step time of each phase per (setting, optimizer, mode), inclusive and exclusive.

    Within one step a phase's time is the sum of its entries (its ``phase:<phase_key>``
    columns, one per parent it ran in); its *exclusive* time is that minus the time of the
    phases whose ``parent`` it is (clipped at zero). Statistics run over the steps in which
    the phase ran; ``n`` counts them. Phases of optimizers without modes get
    ``mode == "all"``. Column by column over the step rows: no row per phase entry is made.
    """
    columns = phase_columns(df)
    if df.empty or not columns:
        return empty(PHASE_TIMES)
    ran = df[columns].notna().any(axis=1) & df["kind"].isin(TIMED_KINDS) & ~df["warmup"]
    rows = df.loc[ran, SETTING + OPT + ["mode", *columns]]
    if rows.empty:
        return empty(PHASE_TIMES)
    key = SETTING + OPT + ["mode"]
    frame = rows[SETTING + OPT].assign(mode=rows["mode"].fillna("all"))
    group = frame.groupby(key, dropna=False, sort=False).ngroup().to_numpy()
    keys = frame.assign(_g=group).drop_duplicates("_g")
    parsed = [(c, *split_phase_key(c[len(PHASE_COLUMN) :])) for c in columns]
    out = []
    for name in dict.fromkeys(n for _c, n, _p in parsed):
        own = [(c, parent) for c, n, parent in parsed if n == name]
        kids = [c for c, _n, parent in parsed if parent == name]
        inc = rows[[c for c, _p in own]].sum(axis=1, min_count=1)
        ran = inc.notna().to_numpy()
        if not ran.any():
            continue
        child = rows.loc[ran, kids].sum(axis=1) if kids else 0.0
        t = pd.DataFrame(
            {"_g": group[ran], "seconds": inc[ran], "exclusive": (inc[ran] - child).clip(lower=0.0)}
        )
        a = stats(t, ["_g"])
        b = stats(t, ["_g"], col="exclusive", prefix="excl_").drop(columns="excl_n")
        parents = {parent: set(group[rows[c].notna().to_numpy()]) for c, parent in own if parent}
        a["parent"] = [join(p for p, gs in parents.items() if g in gs) for g in a["_g"]]
        out.append(a.merge(b, on="_g").assign(phase=name))
    table = pd.concat(out, ignore_index=True).merge(keys[key + ["_g"]], on="_g", how="left")
    return sort_rows(table, extra=["mode", "phase"])[PHASE_TIMES.csv]
