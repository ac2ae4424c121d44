"""What every topic of the report shares: the setting and optimizer keys, how a table's
columns are declared, and the pandas helpers the tables are built from.

Vocabulary: a *setting* is one (workload, size, data source, device, device name, number of
processes a cell trained on at once, batch size); numbers are only ever compared within a
setting (the "Distributed runs" topic compares settings that differ in their processes
alone). An optimizer is identified by its ``family`` (the factory: sgd, adamw, kfac, ngd,
fngd), its ``optimizer`` label (``kfac``, ``kfac-inv1``, ``fngd-iter``, ...) and ``impl``;
``opt`` is its display label (the label, plus the implementation when the records hold
several implementations of one label). A *run*
(column ``run``) is one training cell in one setting: ``run_id`` plus the setting, so that
results from several machines or batch sizes never merge; overhead measurements and profiles
are not runs (``count_runs``). Times are seconds. Records flagged
``warmup`` never enter a step or phase statistic.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.records import PHASE_COLUMN, TRAINING_KINDS
from reports.vocabulary import family_rank, phase_rank

# ----------------------------------------------------------------------------- columns

#: One column as the page shows it: (field, header, format). Formats: text, int, ms (seconds
#: shown in ms), s, x (speedup), ratio, mib, pct (fraction), g (general number); a trailing
#: "?" leaves missing values blank instead of "n/a".
Column = tuple[str, str, str]


@dataclass(frozen=True)
class Columns:
    """A table's columns, declared once: ``names`` in the order of the frame and its CSV,
    ``shown`` the columns of the HTML table (a subset, with headers and formats)."""

    names: tuple[str, ...]
    shown: tuple[Column, ...] = ()

    def __add__(self, other: Columns) -> Columns:
        return Columns(self.names + other.names, self.shown + other.shown)

    @property
    def csv(self) -> list[str]:
        """``names`` as a list (what pandas indexing takes)."""
        return list(self.names)


def col(name: str, header: str | None = None, fmt: str = "text") -> Columns:
    """One column; without a header it is in the CSV only."""
    return Columns((name,), () if header is None else ((name, header, fmt),))


def cols(*parts: Columns | str) -> Columns:
    """Columns in order; a bare name is a CSV-only column."""
    out = Columns(())
    for part in parts:
        out += col(part) if isinstance(part, str) else part
    return out


def group(names: Iterable[str], shown: Iterable[Column]) -> Columns:
    """Columns the CSV writes in one order and the page shows in another."""
    return Columns(tuple(names), tuple(shown))


_SETTING = (
    col("workload", "workload"),
    col("size", "size"),
    col("data_source", "data"),
    col("device"),
    col("device_name", "device"),
    col("world_size", "processes", "int"),
    col("batch_size", "batch", "int"),
)
#: The setting's columns (the page shows them as group rows, see reports/html.py).
SETTING_COLUMNS = cols(*_SETTING)
#: The setting without the batch size, for tables across batch sizes.
SETTING_COLUMNS_ALL_BATCHES = cols(*_SETTING[:-1])
#: The optimizer's columns: the page shows the display label, then the implementation.
OPT_COLUMNS = group(
    ("family", "optimizer", "impl", "opt"), (("opt", "optimizer", "text"), ("impl", "impl", "text"))
)
SETTING = SETTING_COLUMNS.csv
OPT = OPT_COLUMNS.csv

# ----------------------------------------------------------------------------- helpers


def sort_rows(frame: pd.DataFrame, extra: Iterable[str] = ()) -> pd.DataFrame:
    """Rows in display order: setting, family, label, implementation, then ``extra``."""
    if frame.empty:
        return frame.reset_index(drop=True)
    keys = [k for k in SETTING if k in frame.columns]
    tmp = frame.copy()
    sort_by = list(keys)
    if "family" in tmp.columns:
        tmp["_rank"] = tmp["family"].map(lambda o: family_rank(o)[0])
        sort_by += ["_rank", "family"]
    if "optimizer" in tmp.columns:
        sort_by.append("optimizer")
    if "impl" in tmp.columns:
        sort_by.append("impl")
    for c in extra:
        if c == "phase":
            tmp["_phase"] = tmp["phase"].map(lambda p: phase_rank(p)[0])
            sort_by.append("_phase")
        sort_by.append(c)
    tmp = tmp.sort_values(sort_by, kind="stable", na_position="last")
    return tmp.drop(columns=[c for c in ("_rank", "_phase") if c in tmp.columns]).reset_index(
        drop=True
    )


def quantile(p: float) -> Callable[[pd.Series], float]:
    def q(s: pd.Series) -> float:
        return float(s.quantile(p)) if len(s) else math.nan

    q.__name__ = f"q{int(p * 100)}"
    return q


def join(values: Iterable[object]) -> str:
    """The distinct values, as text, sorted and comma-separated (missing and empty left out)."""
    if isinstance(values, pd.Series):
        values = values.unique()
    out = sorted({str(v) for v in values if v is not None and not isnan(v) and str(v) != ""})
    return ", ".join(out)


def join_numbers(values: Iterable[object]) -> str:
    """The distinct numbers, as integers, sorted and comma-separated."""
    if isinstance(values, pd.Series):
        values = values.unique()
    return ", ".join(str(int(v)) for v in sorted({float(x) for x in values}))


def isnan(v: object) -> bool:
    return isinstance(v, float) and math.isnan(v)


def empty(columns: Columns | Iterable[str]) -> pd.DataFrame:
    names = columns.names if isinstance(columns, Columns) else columns
    return pd.DataFrame({c: pd.Series(dtype=object) for c in names})


def numeric_value(frame: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(frame["value"], errors="coerce")


def date(t: float) -> str:
    if t is None or isnan(t):
        return ""
    return pd.Timestamp(t, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")


def workload_label(row: pd.Series | dict) -> str:
    """The workload, with its size when the records give one: ``resnet18-cifar100 (paper)``."""
    size = str(row.get("size", "") or "")
    return f"{row['workload']} ({size})" if size else str(row["workload"])


def setting_label(row: pd.Series | dict) -> str:
    """``workload · device name · batch N`` (plus a SYNTHETIC DATA flag) for figure titles."""
    parts = [workload_label(row), str(row["device_name"])]
    if int(row.get("world_size", 1) or 1) > 1:
        parts.append(f"{int(row['world_size'])} processes")
    if int(row["batch_size"]):
        parts.append(f"batch {int(row['batch_size'])}")
    label = " · ".join(parts)
    if row["data_source"] == "synthetic":
        label += " · SYNTHETIC DATA"
    elif row["data_source"] != "real":
        label += f" · data: {row['data_source']}"
    return label


def per_key(df: pd.DataFrame, keys: list[str], label: Callable[..., object]) -> pd.Series:
    """``label(*values)`` of each row's ``keys``, computed once per distinct combination and
    shared by its rows (a cell's steps share one object, not one string each)."""
    codes = df.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    firsts = df[keys].assign(_code=codes).drop_duplicates("_code").sort_values("_code")
    labels = np.empty(len(firsts), dtype=object)
    for i, row in enumerate(firsts[keys].itertuples(index=False, name=None)):
        labels[i] = label(*row)
    return pd.Series(labels[codes], index=df.index, dtype=object)


def preconditioned_share(df: pd.DataFrame) -> pd.Series:
    """Per row, the preconditioned share of the trainable numbers its preconditioner had
    (records' ``hparams["preconditioned"]``); NaN where none was recorded (SGD, AdamW,
    kfac-pytorch, records that predate it)."""
    if "hparams_json" not in df.columns:
        return pd.Series(np.nan, index=df.index)
    shares = {}
    for text in df["hparams_json"].dropna().unique():
        try:
            value = json.loads(text).get("preconditioned")
        except (ValueError, AttributeError):
            value = None
        shares[text] = np.nan if value is None else float(value)
    return df["hparams_json"].map(shares).astype(float)


def share_note(share: float) -> str:
    """What a label says of a preconditioner that left parameters plain: the share it did
    precondition (nothing when it preconditioned all, or none was recorded)."""
    if share != share or share >= 1.0:  # NaN, or all
        return ""
    return f" ({share:.0%} preconditioned)"


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``opt`` (display label) and ``run``, normalise ``mode`` and ``world_size`` (1
    where records predate it), keep each run's latest attempt; returns a new frame (``df``
    is left as it was)."""
    df = df.copy(deep=False)
    world = df["world_size"] if "world_size" in df.columns else pd.Series(1, index=df.index)
    df["world_size"] = pd.to_numeric(world, errors="coerce").fillna(1).astype("int64")
    if df.empty:
        df["opt"] = pd.Series(dtype=object)
        df["run"] = pd.Series(dtype=object)
        return df
    impls = df.groupby("optimizer")["impl"].nunique()
    several = set(impls.index[impls > 1])
    keyed = df.assign(_share=preconditioned_share(df))
    df["opt"] = per_key(
        keyed,
        ["optimizer", "impl", "_share"],
        lambda o, i, s: (f"{o} ({i})" if o in several else o) + share_note(s),
    )
    mode = df["mode"].astype(object)
    df["mode"] = mode.where(mode.notna() & (mode != ""), None)
    df["run"] = per_key(
        df,
        ["run_id", "device_name", "size", "batch_size"],
        lambda r, d, s, b: f"{r} @ {d} / {s} / {b}",
    )
    if df["attempt"].notna().any():
        # a cell run again: keep its latest attempt only
        attempt = df["attempt"].fillna(1)
        latest = attempt.groupby(df["run"]).transform("max")
        if (attempt != latest).any():
            df = df.loc[attempt == latest].copy()
    return df


def training(df: pd.DataFrame) -> pd.DataFrame:
    """The records of training cells: overhead measurements and profiles are not runs."""
    return df.loc[df["kind"].isin(TRAINING_KINDS)] if not df.empty else df


#: The rows that hold phase times (``reports.load``): steps, and phase records of earlier
#: versions that had no step record to join.
TIMED_KINDS = ("step", "phase")


def phase_columns(df: pd.DataFrame) -> list[str]:
    """The ``phase:<phase_key>`` columns of a records frame (``reports.load``)."""
    return [c for c in df.columns if c.startswith(PHASE_COLUMN)]


def record_count(df: pd.DataFrame) -> int:
    """Records in ``df`` as they were measured: a step with its phase entries counts one
    record for the step and one per phase entry (``phase_count``), as earlier versions
    wrote them."""
    if df.empty:
        return 0
    return int((df["kind"] != "phase").sum() + df["phase_count"].sum())


def kinds_present(df: pd.DataFrame) -> set[str]:
    """The record kinds in ``df``; ``phase`` when any step holds a phase time."""
    kinds = set(df["kind"]) - {"phase"} if not df.empty else set()
    columns = phase_columns(df)
    if columns and df[columns].notna().any().any():
        kinds.add("phase")
    return kinds


def count_runs(df: pd.DataFrame) -> int:
    """Runs in ``df``, the one count every part of the page gives: training cells (``run``),
    never the overhead measurements or profiles."""
    trained = training(df)
    return int(trained["run"].nunique()) if not trained.empty else 0


def settings(df: pd.DataFrame) -> pd.DataFrame:
    """The distinct settings, in display order."""
    if df.empty:
        return empty(SETTING)
    return sort_rows(df[SETTING].drop_duplicates())


def select(frame: pd.DataFrame, setting: pd.Series | dict) -> pd.DataFrame:
    """The rows of ``frame`` in ``setting``."""
    if frame.empty:
        return frame
    mask = pd.Series(True, index=frame.index)
    for c in SETTING:
        mask &= frame[c] == setting[c]
    return frame.loc[mask]


def stats(frame: pd.DataFrame, keys: list[str], col: str = "seconds", prefix: str = ""):
    """count, median and quartiles of ``col`` per ``keys`` (vectorised, no Python per group)."""
    g = frame.groupby(keys, dropna=False, sort=False)[col]
    out = g.agg(["count", "median"]).rename(
        columns={"count": f"{prefix}n", "median": f"{prefix}median_s"}
    )
    out[f"{prefix}q1_s"] = g.quantile(0.25)
    out[f"{prefix}q3_s"] = g.quantile(0.75)
    out = out.reset_index()
    out[f"{prefix}iqr_s"] = out[f"{prefix}q3_s"] - out[f"{prefix}q1_s"]
    return out


def timed(df: pd.DataFrame, kind: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The non-warm-up records of ``kind`` that carry a time (only ``columns``, if given: a
    step table need not copy every field of half a million steps)."""
    mask = (df["kind"] == kind) & ~df["warmup"] & df["seconds"].notna()
    return df.loc[mask] if columns is None else df.loc[mask, columns]


def epoch_records(df: pd.DataFrame) -> pd.DataFrame:
    """One ``epoch`` record per (run, epoch), the last written."""
    e = df.loc[(df["kind"] == "epoch") & df["epoch"].notna()] if not df.empty else df
    if e.empty:
        return e
    return e.drop_duplicates(subset=SETTING + OPT + ["run", "epoch"], keep="last")


def metric_names(df: pd.DataFrame) -> dict[str, str]:
    """workload -> its evaluation metric: the ``metric`` of its target records, else the
    eval record name that is not ``eval_loss``."""
    if df.empty:
        return {}
    out: dict[str, str] = {}
    ev = df.loc[(df["kind"] == "eval") & df["name"].notna()]
    for w, g in ev.groupby("workload", sort=False):
        names = [n for n in g["name"].unique() if n != "eval_loss"]
        if names:
            out[w] = sorted(names)[0]
    t = df.loc[(df["kind"] == "target") & df["metric"].notna()]
    for w, g in t.groupby("workload", sort=False):
        out[w] = str(g["metric"].iloc[0])
    return out


#: Words of metric names that are better when lower (``mse``, ``eval_loss``, ``word_error``),
#: for a workload whose records do not show the direction (see ``higher_is_better``).
LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "err", "perplexity", "ppl", "wer", "cer")


def higher_is_better(df: pd.DataFrame) -> dict[str, bool]:
    """workload -> whether its metric (``metric_names``) is better when higher.

    The records say it where a run reached the target: a ``target`` record's metric value
    beyond its target shows the side it was met from; otherwise the metric's name decides
    (a word of ``LOWER_IS_BETTER``: lower is better; any other name: higher).
    """
    out: dict[str, bool] = {}
    for w, name in metric_names(df).items():
        words = {p for p in re.split(r"[^a-z0-9]+", name.lower()) if p}
        out[w] = not (words & set(LOWER_IS_BETTER))
    if df.empty or "metric_value" not in df.columns:
        return out
    t = df.loc[df["kind"] == "target"]
    gap = pd.to_numeric(t["metric_value"], errors="coerce") - numeric_value(t)
    for w, g in gap.groupby(t["workload"], sort=False):
        if (g > 0).any() != (g < 0).any():
            out[w] = bool((g > 0).any())
    return out


def target_hardness(target: float, higher: bool) -> float:
    """How hard ``target`` is to reach, as a number that grows with it: the target itself
    when higher is better, its negative when lower is."""
    return float(target) if higher else -float(target)


def strictest_target(targets: Iterable[float], higher: bool) -> float:
    """The hardest of ``targets`` to reach (``target_hardness``); NaN when there is none.
    Records of one setting name one target unless they come from runs of different
    versions; the tables compare at the strictest one."""
    values = [float(t) for t in targets if not isnan(t)]
    if not values:
        return math.nan
    return max(values, key=lambda t: target_hardness(t, higher))


def ratio(num: object, den: object) -> float:
    """``num / den``; NaN when either is missing or not a number, or ``den`` is not positive."""
    try:
        num_f, den_f = float(num), float(den)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    if math.isnan(num_f) or math.isnan(den_f) or den_f <= 0:
        return math.nan
    return num_f / den_f


def seed_of(df: pd.DataFrame) -> dict:
    """run -> its seed (what pairs two optimizers' runs: same seed, same initial weights and
    data order)."""
    if df.empty or "seed" not in df.columns:
        return {}
    runs = df[["run", "seed"]].dropna().drop_duplicates("run")
    return dict(zip(runs["run"], runs["seed"], strict=True))
