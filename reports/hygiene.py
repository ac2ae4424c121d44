"""Measurement hygiene: timings the report should not be trusted on without a second look.

Two flags, read from the epoch records alone:

- *wide spread*: a run (cell) whose later epochs of one kind (the same step modes: FNGD's
  inversion epoch is never compared with its weighted-sum epochs) spread widely, the
  slowest more than ``SPREAD_LIMIT`` times their median;
- *cold start*: the first cell a process ran (the records carry no process id: a cell that
  started more than ``GAP_S`` after the previous cell on that device ended, or the first
  there) whose later epochs ran slower than the other seeds' of the same optimizer, or, as
  the only seed, whose first later epochs ran slower than its own remaining ones.
"""

from __future__ import annotations

import math

import pandas as pd

from reports.common import OPT, SETTING, empty, epoch_records, join, setting_label, sort_rows
from reports.stats import spread

#: Later epochs whose slowest exceeds this many times their median are flagged.
SPREAD_LIMIT = 1.5
#: A first cell whose later epochs are this much slower than its peers' is a cold start.
COLD_LIMIT = 1.25
#: A pause longer than this between two cells on one device starts a new process.
GAP_S = 60.0

SPREAD = SETTING + OPT + ["run", "seed", "modes", "n", "median_s", "max_s", "spread", "flagged"]
COLD = SETTING + OPT + ["run", "seed", "median_s", "reference_s", "ratio", "against", "flagged"]


def _later_epochs(df: pd.DataFrame) -> pd.DataFrame:
    """Epochs after the first, with the step modes they ran (``modes``, "" without steps)."""
    e = epoch_records(df)
    if e.empty:
        return e
    e = e.loc[(e["epoch"] > 0) & e["seconds"].notna()]
    s = df.loc[(df["kind"] == "step") & df["mode"].notna(), ["run", "epoch", "mode"]]
    if s.empty:
        return e.assign(modes="")
    modes = s.groupby(["run", "epoch"], sort=False)["mode"].agg(join).rename("modes")
    e = e.merge(modes.reset_index(), on=["run", "epoch"], how="left")
    return e.assign(modes=e["modes"].fillna(""))


def epoch_spread(df: pd.DataFrame) -> pd.DataFrame:
    """Per run and kind of later epoch: how far the slowest epoch is above the median."""
    e = _later_epochs(df)
    if e.empty:
        return empty(SPREAD)
    g = e.groupby(SETTING + OPT + ["run", "seed", "modes"], sort=False, dropna=False)["seconds"]
    out = g.agg(n="count", median_s="median", max_s="max").reset_index()
    out["spread"] = g.agg(spread).to_numpy()
    out["flagged"] = (out["n"] >= 2) & (out["spread"] > SPREAD_LIMIT)
    return sort_rows(out, extra=["seed"])[SPREAD]


def spread_flags(frame: pd.DataFrame) -> list[str]:
    """One sentence per flagged run."""
    if frame.empty:
        return []
    out = []
    for _, r in frame.loc[frame["flagged"]].iterrows():
        modes = f" ({r['modes']})" if r["modes"] else ""
        out.append(
            f"Wide spread: {setting_label(r)} · {r['opt']} seed {int(r['seed'])}: its "
            f"{int(r['n'])} later epochs{modes} took up to {r['max_s']:.3g} s, "
            f"{r['spread']:.1f}× their median {r['median_s']:.3g} s; its epoch times "
            "are not steady, so ratios that use them are uncertain."
        )
    return out


def _first_cells(df: pd.DataFrame) -> list[str]:
    """The runs that were the first a process ran (see the module docstring)."""
    t = df.loc[df["time"].notna(), ["run", "device_name", "time"]]
    if t.empty:
        return []
    span = t.groupby(["device_name", "run"], sort=False)["time"].agg(["min", "max"]).reset_index()
    first = []
    for _, g in span.groupby("device_name", sort=False):
        g = g.sort_values("min")
        prev_end = g["max"].shift()
        new = prev_end.isna() | (g["min"] - prev_end > GAP_S)
        first += list(g.loc[new, "run"])
    return first


def cold_start(df: pd.DataFrame) -> pd.DataFrame:
    """The first cell of each process, its later-epoch median and what it is compared with."""
    e = _later_epochs(df)
    if e.empty:
        return empty(COLD)
    per_run = (
        e.groupby(SETTING + OPT + ["run", "seed"], sort=False)["seconds"]
        .median()
        .rename("median_s")
        .reset_index()
    )
    rows = []
    for run in _first_cells(df):
        mine = per_run.loc[per_run["run"] == run]
        if mine.empty:
            continue
        r = mine.iloc[0].to_dict()
        peers = per_run
        for c in SETTING + OPT:
            peers = peers.loc[peers[c] == r[c]]
        peers = peers.loc[peers["run"] != run]
        if len(peers):
            r["reference_s"] = float(peers["median_s"].median())
            r["against"] = f"the other {len(peers)} seed(s)"
        else:
            own = e.loc[e["run"] == run].sort_values("epoch")["seconds"]
            if len(own) < 4:
                continue
            r["median_s"] = float(own.iloc[:2].median())
            r["reference_s"] = float(own.iloc[2:].median())
            r["against"] = "its own later epochs"
        ref = r["reference_s"]
        r["ratio"] = r["median_s"] / ref if ref > 0 else math.nan
        r["flagged"] = bool(r["ratio"] > COLD_LIMIT)
        rows.append(r)
    if not rows:
        return empty(COLD)
    return sort_rows(pd.DataFrame(rows))[COLD]


def cold_start_flags(frame: pd.DataFrame) -> list[str]:
    """One sentence per flagged first cell."""
    if frame.empty:
        return []
    out = []
    for _, r in frame.loc[frame["flagged"].astype(bool)].iterrows():
        what = (
            "its first two later epochs took"
            if r["against"] == "its own later epochs"
            else "its later epochs took"
        )
        out.append(
            f"Cold start: {setting_label(r)} · {r['opt']} seed {int(r['seed'])} was the first "
            f"cell its process ran, and {what} {r['ratio']:.2f}× as long as {r['against']} "
            f"(median {r['median_s']:.3g} s against {r['reference_s']:.3g} s); its times "
            "carry a start-up cost the other cells do not."
        )
    return out
