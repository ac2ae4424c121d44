"""Tables computed from the records (pandas in, pandas out; no formatting, no HTML).

Vocabulary: a *setting* is one (workload, size, data source, device, device name, batch
size); numbers are only ever compared within a setting. An optimizer is identified by its
``family`` (the factory: sgd, adamw, kfac, ngd, fngd), its ``optimizer`` label (``kfac``,
``kfac-inv1``, ``fngd-iter``, ...) and ``impl``; ``opt`` is its display label (the label, plus
the implementation when the records hold several implementations of one label). A *run*
(column ``run``) is one cell in one setting: ``run_id`` plus the setting, so that results
from several machines or batch sizes never merge. Times are seconds. Records flagged
``warmup`` never enter a step or phase statistic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable

import pandas as pd

SETTING = ["workload", "size", "data_source", "device", "device_name", "batch_size"]
OPT = ["family", "optimizer", "impl", "opt"]
#: Record kinds written by training runs (not by the overhead measurement or the profiler).
TRAINING_KINDS = ("phase", "step", "epoch", "eval", "memory", "target", "cell")
#: Display order of optimizers; others follow alphabetically.
ORDER = ("sgd", "adamw", "kfac", "ngd", "fngd")
#: The optimizers FNGD is compared against in the speedup table, in column order.
BASELINES = ("kfac", "ngd", "sgd", "adamw")
#: Baselines whose absence the speedup section reports (NGD is optional).
REQUIRED_BASELINES = ("kfac", "sgd", "adamw")
FNGD = "fngd"
#: Phase order of the stacked bars (docs/ARCHITECTURE.md, "Phases").
PHASE_ORDER = (
    "data",
    "forward",
    "backward",
    "fngd/gram",
    "fngd/solve",
    "fngd/weighted_sum",
    "kfac/factors",
    "kfac/inverse",
    "kfac/precondition",
    "update",
)
OTHER = "other (untimed)"
#: Length of the full schedule the projection is made for.
PROJECT_EPOCHS = 100
FAILED = ("diverged", "oom", "error")
TERMINAL = ("finished",) + FAILED


# --------------------------------------------------------------------------- helpers


#: How optimizer names are written in prose.
DISPLAY = {"sgd": "SGD", "adamw": "AdamW", "kfac": "KFAC", "ngd": "NGD", "fngd": "FNGD"}


def display_name(optimizer: str) -> str:
    return DISPLAY.get(optimizer, optimizer)


def optimizer_rank(name: str) -> tuple[int, str]:
    return (ORDER.index(name), "") if name in ORDER else (len(ORDER), str(name))


def phase_rank(name: str) -> tuple[int, str]:
    if name == OTHER:
        return (len(PHASE_ORDER) + 1, "")
    return (PHASE_ORDER.index(name), "") if name in PHASE_ORDER else (len(PHASE_ORDER), name)


def _sorted(frame: pd.DataFrame, extra: Iterable[str] = ()) -> pd.DataFrame:
    if frame.empty:
        return frame.reset_index(drop=True)
    keys = [k for k in SETTING if k in frame.columns]
    tmp = frame.copy()
    sort_by = list(keys)
    if "family" in tmp.columns:
        tmp["_rank"] = tmp["family"].map(lambda o: optimizer_rank(o)[0])
        sort_by += ["_rank", "family"]
    if "optimizer" in tmp.columns:
        sort_by.append("optimizer")
    if "impl" in tmp.columns:
        sort_by.append("impl")
    for col in extra:
        if col == "phase":
            tmp["_phase"] = tmp["phase"].map(lambda p: phase_rank(p)[0])
            sort_by.append("_phase")
        sort_by.append(col)
    tmp = tmp.sort_values(sort_by, kind="stable", na_position="last")
    return tmp.drop(columns=[c for c in ("_rank", "_phase") if c in tmp.columns]).reset_index(
        drop=True
    )


def _q(p: float) -> Callable[[pd.Series], float]:
    def quantile(s: pd.Series) -> float:
        return float(s.quantile(p)) if len(s) else math.nan

    quantile.__name__ = f"q{int(p * 100)}"
    return quantile


def _join(values: Iterable[object]) -> str:
    out = sorted({str(v) for v in values if v is not None and not _isnan(v) and str(v) != ""})
    return ", ".join(out)


def _join_numbers(values: Iterable[object]) -> str:
    return ", ".join(str(int(v)) for v in sorted({float(x) for x in values}))


def _isnan(v: object) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _empty(columns: Iterable[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _numeric_value(frame: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(frame["value"], errors="coerce")


def workload_label(row: pd.Series | dict) -> str:
    """The workload, with its size when the records give one: ``resnet18-cifar100 (paper)``."""
    size = str(row.get("size", "") or "")
    return f"{row['workload']} ({size})" if size else str(row["workload"])


def setting_label(row: pd.Series | dict) -> str:
    """``workload · device name · batch N`` (plus a SYNTHETIC DATA flag) for figure titles."""
    parts = [workload_label(row), str(row["device_name"])]
    if int(row["batch_size"]):
        parts.append(f"batch {int(row['batch_size'])}")
    label = " · ".join(parts)
    if row["data_source"] == "synthetic":
        label += " · SYNTHETIC DATA"
    elif row["data_source"] != "real":
        label += f" · data: {row['data_source']}"
    return label


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``opt`` (display label) and normalise ``mode``; returns a copy."""
    df = df.copy()
    if df.empty:
        df["opt"] = pd.Series(dtype=object)
        df["run"] = pd.Series(dtype=object)
        return df
    impls = df.groupby("optimizer")["impl"].nunique()
    multi = df["optimizer"].map(impls).fillna(1).gt(1).to_numpy()
    labels = (df["optimizer"] + " (" + df["impl"] + ")").astype(object)
    df["opt"] = df["optimizer"].astype(object).where(~multi, labels)
    mode = df["mode"].astype(object)
    df["mode"] = mode.where(mode.notna() & (mode != ""), None)
    df["run"] = (
        df["run_id"]
        + " @ "
        + df["device_name"]
        + " / "
        + df["size"]
        + " / "
        + df["batch_size"].astype(str)
    ).astype(object)
    if df["attempt"].notna().any():
        # a cell run again: keep its latest attempt only
        attempt = df["attempt"].fillna(1)
        latest = attempt.groupby(df["run"]).transform("max")
        df = df.loc[attempt == latest].copy()
    return df


def settings(df: pd.DataFrame) -> pd.DataFrame:
    """The distinct settings, in display order."""
    if df.empty:
        return _empty(SETTING)
    return _sorted(df[SETTING].drop_duplicates())


def _stats(frame: pd.DataFrame, keys: list[str], col: str = "seconds", prefix: str = ""):
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


# ------------------------------------------------------------------------ environment


def _date(t: float) -> str:
    if t is None or _isnan(t):
        return ""
    return pd.Timestamp(t, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")


def environment(df: pd.DataFrame) -> pd.DataFrame:
    """One row per device: software versions, commits, dates, what ran there."""
    cols = [
        "device",
        "device_name",
        "torch_version",
        "cuda_version",
        "git_commit",
        "first_record",
        "last_record",
        "workloads",
        "data_source",
        "runs",
        "records",
    ]
    if df.empty:
        return _empty(cols)
    rows = []
    for (device, name), g in df.groupby(["device", "device_name"], sort=True):
        rows.append(
            {
                "device": device,
                "device_name": name,
                "torch_version": _join(g["torch_version"]),
                "cuda_version": _join(g["cuda_version"]) or "none",
                "git_commit": _join(str(c)[:12] for c in g["git_commit"] if c),
                "first_record": _date(g["time"].min()),
                "last_record": _date(g["time"].max()),
                "workloads": _join(g["workload"]),
                "data_source": _join(g["data_source"]),
                "runs": _runs(g),
                "records": len(g),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def data_sources(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (workload, data source): batch sizes, seeds, optimizers, epochs, runs."""
    cols = ["workload", "data_source", "batch_size", "seeds", "optimizers", "epochs", "runs"]
    if df.empty:
        return _empty(cols)
    rows = []
    for (w, src), g in df.groupby(["workload", "data_source"], sort=True):
        ep = g.loc[g["kind"] == "epoch"].groupby("run")["epoch"].nunique()
        pairs = g[["family", "opt"]].drop_duplicates()
        opts = [
            o
            for _, o in sorted(zip(pairs["family"].map(optimizer_rank), pairs["opt"], strict=True))
        ]
        rows.append(
            {
                "workload": w,
                "data_source": src,
                "batch_size": _join_numbers(b for b in g["batch_size"] if b),
                "seeds": _join_numbers(g["seed"].dropna()),
                "optimizers": ", ".join(opts),
                "epochs": _join_numbers(ep),
                "runs": _runs(g),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def _runs(frame: pd.DataFrame) -> int:
    """Training runs in ``frame`` (overhead measurements and profiles are not runs)."""
    return int(frame.loc[frame["kind"].isin(TRAINING_KINDS), "run"].nunique())


def _format_hparams(text: str) -> str:
    try:
        hp = json.loads(text)
    except (TypeError, ValueError):
        return str(text)
    if not isinstance(hp, dict):
        return str(hp)
    return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in hp.items())


def hparams(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (optimizer, implementation, hyperparameter set) and the workloads using it."""
    cols = ["family", "optimizer", "impl", "opt", "hparams", "workloads", "hparams_json"]
    if df.empty:
        return _empty(cols)
    trained = df.loc[df["kind"].isin(TRAINING_KINDS)]
    if not trained.empty:  # the profiler's and the overhead measurement's are not shown
        df = trained
    g = df.groupby(["family", "optimizer", "impl", "opt", "hparams_json"], sort=False)
    out = g["workload"].agg(_join).reset_index().rename(columns={"workload": "workloads"})
    out["hparams"] = out["hparams_json"].map(_format_hparams)
    out = out[cols]
    out["_rank"] = out["family"].map(lambda o: optimizer_rank(o)[0])
    out = out.sort_values(["_rank", "optimizer", "impl", "workloads"])
    return out.drop(columns="_rank").reset_index(drop=True)


def record_counts(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return _empty(["kind", "records"])
    out = df["kind"].value_counts().rename_axis("kind").reset_index(name="records")
    return out.sort_values("kind").reset_index(drop=True)


# -------------------------------------------------------------------------- step time

STEP_COLUMNS = (
    SETTING
    + OPT
    + [
        "mode",
        "n",
        "median_s",
        "q1_s",
        "q3_s",
        "iqr_s",
        "sgd_median_s",
        "ratio_to_sgd",
    ]
)


def _timed(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    return df.loc[(df["kind"] == kind) & ~df["warmup"] & df["seconds"].notna()]


def step_times(df: pd.DataFrame) -> pd.DataFrame:
    """Per-step time per (setting, optimizer, mode), warm-up steps excluded.

    Every optimizer gets a row with ``mode == "all"`` (all its steps); optimizers whose steps
    carry a mode (FNGD: inversion / weighted_sum; KFAC: inverse / no_inverse) also get one row
    per mode. ``ratio_to_sgd`` divides by SGD's median step (all steps) in the same setting.
    """
    s = _timed(df, "step") if not df.empty else df
    if s.empty:
        return _empty(STEP_COLUMNS)
    out = [_stats(s, SETTING + OPT).assign(mode="all")]
    moded = s.loc[s["mode"].notna()]
    if not moded.empty:
        out.append(_stats(moded, SETTING + OPT + ["mode"]))
    res = pd.concat(out, ignore_index=True)
    sgd = (
        _sorted(res.loc[(res["family"] == "sgd") & (res["mode"] == "all")])
        .groupby(SETTING, sort=False)["median_s"]
        .first()
        .rename("sgd_median_s")
        .reset_index()
    )
    res = res.merge(sgd, on=SETTING, how="left")
    res["ratio_to_sgd"] = res["median_s"] / res["sgd_median_s"]
    res["_all"] = res["mode"] != "all"
    res = _sorted(res, extra=["_all", "mode"]).drop(columns="_all")
    return res[STEP_COLUMNS]


def overhead(df: pd.DataFrame) -> pd.DataFrame:
    cols = SETTING + OPT + ["n", "median_fraction"]
    o = df.loc[df["kind"] == "overhead"] if not df.empty else df
    if o.empty:
        return _empty(cols)
    o = o.assign(v=_numeric_value(o)).dropna(subset=["v"])
    if o.empty:
        return _empty(cols)
    out = o.groupby(SETTING + OPT, sort=False)["v"].agg(n="count", median_fraction="median")
    return _sorted(out.reset_index())[cols]


# ------------------------------------------------------------------------------ phases

PHASE_COLUMNS = (
    SETTING
    + OPT
    + [
        "mode",
        "phase",
        "parent",
        "n",
        "median_s",
        "q1_s",
        "q3_s",
        "iqr_s",
        "excl_median_s",
        "excl_q1_s",
        "excl_q3_s",
        "excl_iqr_s",
    ]
)


def phase_times(df: pd.DataFrame) -> pd.DataFrame:
    """Per-step time of each phase per (setting, optimizer, mode), inclusive and exclusive.

    Within one step a phase's time is the sum of its records; its *exclusive* time is that
    minus the time of the phases whose ``parent`` it is (clipped at zero). Statistics run
    over the steps in which the phase ran; ``n`` counts them. Phases of optimizers without
    modes get ``mode == "all"``.
    """
    p = _timed(df, "phase") if not df.empty else df
    if not p.empty:
        p = p.loc[p["phase"].notna()]
    if p.empty:
        return _empty(PHASE_COLUMNS)
    p = p.assign(mode=p["mode"].fillna("all"))
    step_key = SETTING + OPT + ["run", "epoch", "step"]
    inc = (
        p.groupby(step_key + ["mode", "phase"], dropna=False, sort=False)["seconds"]
        .sum()
        .reset_index()
    )
    kids = (
        p.loc[p["parent"].notna()]
        .groupby(step_key + ["parent"], dropna=False, sort=False)["seconds"]
        .sum()
        .rename("child_s")
        .reset_index()
        .rename(columns={"parent": "phase"})
    )
    inc = inc.merge(kids, on=step_key + ["phase"], how="left")
    inc["exclusive"] = (inc["seconds"] - inc["child_s"].fillna(0.0)).clip(lower=0.0)
    key = SETTING + OPT + ["mode", "phase"]
    a = _stats(inc, key)
    b = _stats(inc, key, col="exclusive", prefix="excl_").drop(columns="excl_n")
    parents = (
        p.loc[p["parent"].notna()]
        .groupby(key, dropna=False, sort=False)["parent"]
        .unique()
        .map(_join)
        .rename("parent")
    )
    out = a.merge(b, on=key).merge(parents.reset_index(), on=key, how="left")
    out["parent"] = out["parent"].fillna("")
    return _sorted(out, extra=["mode", "phase"])[PHASE_COLUMNS]


def phase_stack(phases: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Exclusive median per phase for stacked bars, plus the untimed rest of the step.

    ``other (untimed)`` is the median step time of that (setting, optimizer, mode) minus the
    sum of the exclusive medians, when positive.
    """
    cols = SETTING + OPT + ["mode", "phase", "seconds"]
    if phases.empty:
        return _empty(cols)
    stack = phases[SETTING + OPT + ["mode", "phase", "excl_median_s"]].rename(
        columns={"excl_median_s": "seconds"}
    )
    key = SETTING + OPT + ["mode"]
    total = stack.groupby(key, sort=False)["seconds"].sum().rename("timed").reset_index()
    if not steps.empty:
        total = total.merge(steps[key + ["median_s"]], on=key, how="left")
        total["seconds"] = (total["median_s"] - total["timed"]).clip(lower=0.0)
        rest = total.loc[total["seconds"] > 0, key + ["seconds"]].assign(phase=OTHER)
        stack = pd.concat([stack, rest], ignore_index=True)
    return _sorted(stack, extra=["mode", "phase"])[cols]


def phase_wide(stack: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """The stacked-bar numbers as one row per (setting, optimizer, mode): ``phase:<name>``
    columns in phase order, and ``step_median_s``, the median whole step of that mode."""
    if stack.empty:
        return _empty(SETTING + OPT + ["mode", "step_median_s"])
    key = SETTING + OPT + ["mode"]
    wide = stack.pivot_table(index=key, columns="phase", values="seconds", aggfunc="sum")
    phases = sorted(wide.columns, key=phase_rank)
    wide = wide[phases]
    wide.columns = [f"phase:{p}" for p in phases]
    wide = wide.reset_index()
    wide.columns.name = None
    if steps.empty:
        wide["step_median_s"] = math.nan
    else:
        med = steps[key + ["median_s"]].rename(columns={"median_s": "step_median_s"})
        wide = wide.merge(med, on=key, how="left")
    return _sorted(wide, extra=["mode"])


# ------------------------------------------------------------------------------ epochs

EPOCH_COLUMNS = (
    SETTING
    + OPT
    + [
        "first_n",
        "first_median_s",
        "first_modes",
        "later_n",
        "later_median_s",
        "later_q1_s",
        "later_q3_s",
        "later_modes",
        "epochs",
        "runs",
        "steps_per_epoch",
        "max_steps_per_epoch",
        "measured_median_s",
        "projected_100_s",
    ]
)


def _epoch_records(df: pd.DataFrame) -> pd.DataFrame:
    e = df.loc[(df["kind"] == "epoch") & df["epoch"].notna()] if not df.empty else df
    if e.empty:
        return e
    return e.drop_duplicates(subset=SETTING + OPT + ["run", "epoch"], keep="last")


def _modes_by_epoch(df: pd.DataFrame) -> pd.DataFrame:
    s = df.loc[(df["kind"] == "step") & df["mode"].notna()] if not df.empty else df
    cols = SETTING + OPT + ["first_modes", "later_modes"]
    if s.empty:
        return _empty(cols)
    s = s.assign(first=s["epoch"] == 0)
    g = s.groupby(SETTING + OPT + ["first"], sort=False)["mode"].agg(_join).reset_index()
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
    e = _epoch_records(df)
    if e.empty:
        return _empty(EPOCH_COLUMNS)
    key = SETTING + OPT
    base = e[key].drop_duplicates()
    first = e.loc[e["epoch"] == 0].groupby(key, sort=False)["seconds"]
    first = first.agg(first_n="count", first_median_s="median").reset_index()
    later = _stats(e.loc[e["epoch"] > 0], key, prefix="later_").drop(columns="later_iqr_s")
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
    for col in ("first_n", "later_n"):
        out[col] = out[col].fillna(0).astype(int)
    out["projected_100_s"] = out["first_median_s"] + (PROJECT_EPOCHS - 1) * out["later_median_s"]
    return _sorted(out)[EPOCH_COLUMNS]


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


def epoch_curve(df: pd.DataFrame) -> pd.DataFrame:
    """Median epoch time per (setting, optimizer, epoch) over runs."""
    cols = SETTING + OPT + ["epoch", "n", "median_s", "min_s", "max_s"]
    e = _epoch_records(df)
    if e.empty:
        return _empty(cols)
    out = e.groupby(SETTING + OPT + ["epoch"], sort=False)["seconds"].agg(
        n="count", median_s="median", min_s="min", max_s="max"
    )
    return _sorted(out.reset_index(), extra=["epoch"])[cols]


# ------------------------------------------------------------------------------ target


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


TARGET_COLUMNS = (
    SETTING
    + OPT
    + [
        "metric",
        "target",
        "runs",
        "reached",
        "median_s",
        "median_epoch",
    ]
)


def time_to_target(df: pd.DataFrame) -> pd.DataFrame:
    """Training wall time to reach each metric target, median over the runs that reached it."""
    t = df.loc[(df["kind"] == "target") & df["seconds"].notna()] if not df.empty else df
    if t.empty:
        return _empty(TARGET_COLUMNS)
    t = t.assign(target=_numeric_value(t))
    key = SETTING + OPT
    trained = df.loc[df["kind"].isin(TRAINING_KINDS)]
    runs = trained.groupby(key, sort=False)["run"].nunique().rename("runs").reset_index()
    out = (
        t.groupby(key + ["target"], dropna=False, sort=False)
        .agg(
            reached=("run", "nunique"),
            median_s=("seconds", "median"),
            median_epoch=("epoch", "median"),
        )
        .reset_index()
        .merge(runs, on=key, how="left")
    )
    metrics = metric_names(df)
    out["metric"] = out["workload"].map(lambda w: metrics.get(w, "metric"))
    return _sorted(out, extra=["target"])[TARGET_COLUMNS]


# ----------------------------------------------------------------------------- speedup

SPEEDUP_COLUMNS = SETTING + [
    "fngd",
    "baseline",
    "baseline_optimizer",
    "per_step",
    "first_epoch",
    "later_epochs",
    "measured_epochs",
    "measured_run",
    "projected_100",
    "fngd_projected_100_s",
    "baseline_projected_100_s",
    "target",
    "time_to_target",
]


def _lookup(frame: pd.DataFrame, cols: list[str]) -> dict[tuple, pd.Series]:
    if frame.empty:
        return {}
    return {tuple(r[c] for c in cols): r for _, r in frame.iterrows()}


def _ratio(num: object, den: object) -> float:
    try:
        num_f, den_f = float(num), float(den)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    if math.isnan(num_f) or math.isnan(den_f) or den_f <= 0:
        return math.nan
    return num_f / den_f


def speedup(steps: pd.DataFrame, epochs: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """FNGD against each baseline in the same setting; every number is baseline / FNGD time.

    Columns: ``per_step`` (median step, all modes), ``first_epoch``, ``later_epochs``
    (median epoch after the first), ``measured_run`` (median total of the measured epochs,
    only when both ran the same number of epochs), ``projected_100`` (first + 99 × later
    median epoch; a projection), ``time_to_target`` (at the highest target both reached).
    Above 1 means FNGD is faster.
    """
    all_steps = steps.loc[steps["mode"] == "all"] if not steps.empty else steps
    key = SETTING + OPT
    step_of = _lookup(all_steps, key)
    epoch_of = _lookup(epochs, key)
    members = (
        pd.concat([f[key] for f in (all_steps, epochs, targets) if not f.empty], ignore_index=True)
        if any(not f.empty for f in (all_steps, epochs, targets))
        else _empty(key)
    )
    members = _sorted(members.drop_duplicates())
    rows = []
    for setting, g in members.groupby(SETTING, sort=False):
        fngds = g.loc[g["family"] == FNGD]
        bases = g.loc[g["family"].isin(BASELINES)].copy()
        bases["_r"] = bases["family"].map(BASELINES.index)
        bases = bases.sort_values(["_r", "optimizer", "impl"])
        for _, f in fngds.iterrows():
            fk = tuple(f[c] for c in key)
            for _, b in bases.iterrows():
                bk = tuple(b[c] for c in key)
                fs, bs = step_of.get(fk), step_of.get(bk)
                fe, be = epoch_of.get(fk), epoch_of.get(bk)
                row = dict(zip(SETTING, setting, strict=True))
                row.update(fngd=f["opt"], baseline=b["opt"], baseline_optimizer=b["family"])
                row["per_step"] = _ratio(
                    None if bs is None else bs["median_s"], None if fs is None else fs["median_s"]
                )
                for col, src in (
                    ("first_epoch", "first_median_s"),
                    ("later_epochs", "later_median_s"),
                    ("projected_100", "projected_100_s"),
                ):
                    row[col] = _ratio(
                        None if be is None else be[src], None if fe is None else fe[src]
                    )
                row["fngd_projected_100_s"] = math.nan if fe is None else fe["projected_100_s"]
                row["baseline_projected_100_s"] = math.nan if be is None else be["projected_100_s"]
                same = (
                    fe is not None
                    and be is not None
                    and fe["epochs"] == be["epochs"]
                    and not _isnan(fe["epochs"])
                )
                row["measured_epochs"] = fe["epochs"] if same else math.nan
                row["measured_run"] = (
                    _ratio(be["measured_median_s"], fe["measured_median_s"]) if same else math.nan
                )
                row["target"], row["time_to_target"] = _target_ratio(targets, fk, bk)
                rows.append(row)
    if not rows:
        return _empty(SPEEDUP_COLUMNS)
    return pd.DataFrame(rows, columns=SPEEDUP_COLUMNS)


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
    common = sorted(set(ft["target"].dropna()) & set(bt["target"].dropna()))
    if not common:
        return math.nan, math.nan
    best = common[-1]
    f_s = ft.loc[ft["target"] == best, "median_s"].iloc[0]
    b_s = bt.loc[bt["target"] == best, "median_s"].iloc[0]
    return best, _ratio(b_s, f_s)


def speedup_gaps(df: pd.DataFrame) -> list[str]:
    """What is missing for the speedup table, one sentence per gap."""
    if df.empty:
        return ["No records: nothing to compare."]
    present = set(df["family"])
    if FNGD not in present:
        return [
            "No FNGD records: the speedup table compares FNGD with KFAC, SGD and AdamW "
            f"(optimizers present: {', '.join(sorted(present, key=optimizer_rank))})."
        ]
    gaps = []
    if not present & set(BASELINES):
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
    e = _epoch_records(df)
    f = e.loc[e["family"] == FNGD] if not e.empty else e
    if not f.empty and not (f["epoch"] > 0).any():
        gaps.append(
            "FNGD ran a single epoch only: its later-epoch time, and so the projected "
            f"{PROJECT_EPOCHS}-epoch schedule, cannot be computed."
        )
    return gaps


# ------------------------------------------------------------------------- convergence

CURVE_COLUMNS = (
    SETTING
    + OPT
    + [
        "quantity",
        "epoch",
        "n",
        "wall_median_s",
        "median",
        "min",
        "max",
        "q1",
        "q3",
    ]
)


def convergence_long(df: pd.DataFrame) -> pd.DataFrame:
    """Per run: train loss (epoch records) and eval values against epoch and wall time."""
    cols = SETTING + OPT + ["run", "quantity", "epoch", "wall_s", "value"]
    parts = []
    e = _epoch_records(df)
    if not e.empty:
        e = e.loc[e["name"].isna() | (e["name"] == "train_loss")]
        e = e.sort_values("epoch").assign(value=_numeric_value(e).reindex(e.index))
        e = e.assign(
            quantity="train_loss",
            wall_s=e.groupby(SETTING + OPT + ["run"], sort=False)["seconds"].cumsum(),
        )
        parts.append(e[cols])
    ev = df.loc[(df["kind"] == "eval") & df["name"].notna()] if not df.empty else df
    if not ev.empty:
        ev = ev.drop_duplicates(subset=SETTING + OPT + ["run", "epoch", "name"], keep="last")
        ev = ev.assign(quantity=ev["name"], wall_s=ev["seconds"], value=_numeric_value(ev))
        parts.append(ev[cols])
    if not parts:
        return _empty(cols)
    out = pd.concat(parts, ignore_index=True)
    return out.dropna(subset=["value", "epoch"])


def convergence(df: pd.DataFrame) -> pd.DataFrame:
    """Median, min, max and quartiles over runs per (setting, optimizer, quantity, epoch)."""
    long = convergence_long(df)
    if long.empty:
        return _empty(CURVE_COLUMNS)
    g = long.groupby(SETTING + OPT + ["quantity", "epoch"], sort=False)
    out = g["value"].agg(n="count", median="median", min="min", max="max", q1=_q(0.25), q3=_q(0.75))
    out["wall_median_s"] = g["wall_s"].median()
    return _sorted(out.reset_index(), extra=["quantity", "epoch"])[CURVE_COLUMNS]


FINAL_COLUMNS = (
    SETTING
    + OPT
    + [
        "runs",
        "epochs",
        "train_loss_median",
        "train_loss_min",
        "train_loss_max",
        "metric",
        "metric_median",
        "metric_min",
        "metric_max",
        "wall_median_s",
    ]
)


def final_values(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's last train loss and last eval metric; median, min, max over runs."""
    long = convergence_long(df)
    if long.empty:
        return _empty(FINAL_COLUMNS)
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
    for c in FINAL_COLUMNS:
        if c not in out.columns:
            out[c] = math.nan
    return _sorted(out)[FINAL_COLUMNS]


# ------------------------------------------------------------------------------ memory

MEMORY_COLUMNS = (
    SETTING
    + OPT
    + [
        "runs",
        "peak_kind",
        "peak_bytes",
        "optimizer_state_bytes",
        "components",
    ]
)


def memory_long(df: pd.DataFrame) -> pd.DataFrame:
    """Median over runs of each run's largest value per memory record name."""
    cols = SETTING + OPT + ["name", "runs", "bytes"]
    m = df.loc[(df["kind"] == "memory") & df["name"].notna()] if not df.empty else df
    if m.empty:
        return _empty(cols)
    m = m.assign(v=_numeric_value(m)).dropna(subset=["v"])
    if m.empty:
        return _empty(cols)
    per_run = m.groupby(SETTING + OPT + ["name", "run"], sort=False)["v"].max().reset_index()
    out = per_run.groupby(SETTING + OPT + ["name"], sort=False).agg(
        runs=("run", "nunique"), bytes=("v", "median")
    )
    return _sorted(out.reset_index(), extra=["name"])[cols]


def _mib(b: float) -> str:
    return f"{b / 2**20:.3g} MiB"


def memory(df: pd.DataFrame) -> pd.DataFrame:
    """Peak memory (GPU ``peak_allocated`` or else CPU ``peak_rss``) and optimizer state."""
    long = memory_long(df)
    if long.empty:
        return _empty(MEMORY_COLUMNS)
    rows = []
    for k, g in long.groupby(SETTING + OPT, sort=False):
        by = dict(zip(g["name"], g["bytes"], strict=True))
        peak_kind = next((n for n in ("peak_allocated", "peak_rss") if n in by), "")
        comps = {n.split("/", 1)[1]: v for n, v in by.items() if n.startswith("optimizer_state/")}
        row = dict(zip(SETTING + OPT, k, strict=True))
        row.update(
            runs=int(g["runs"].max()),
            peak_kind=peak_kind,
            peak_bytes=by.get(peak_kind, math.nan),
            optimizer_state_bytes=by.get("optimizer_state", math.nan),
            components="; ".join(f"{n}: {_mib(v)}" for n, v in sorted(comps.items())),
        )
        rows.append(row)
    return _sorted(pd.DataFrame(rows))[MEMORY_COLUMNS]


# -------------------------------------------------------------------------- batch size

BATCH_COLUMNS = (
    [c for c in SETTING if c != "batch_size"]
    + OPT
    + [
        "batch_size",
        "n",
        "median_s",
        "per_sample_s",
        "ratio_to_sgd",
    ]
)


def batch_scaling(steps: pd.DataFrame) -> pd.DataFrame:
    """Median step against batch size, for (workload, device, optimizer) with several sizes."""
    if steps.empty:
        return _empty(BATCH_COLUMNS)
    s = steps.loc[(steps["mode"] == "all") & (steps["batch_size"] > 0)]
    key = [c for c in SETTING if c != "batch_size"] + OPT
    sizes = s.groupby(key, sort=False)["batch_size"].transform("nunique")
    s = s.loc[sizes >= 2]
    if s.empty:
        return _empty(BATCH_COLUMNS)
    s = s.assign(per_sample_s=s["median_s"] / s["batch_size"])
    return _sorted(s, extra=["batch_size"])[BATCH_COLUMNS]


# ----------------------------------------------------------------------------- profile

WHOLE_STEP = "(whole step)"
PROFILE_COLUMNS = (
    SETTING
    + OPT
    + [
        "mode",
        "phase",
        "steps",
        "cpu_time_s",
        "gpu_time_s",
        "count",
    ]
)


def profile(df: pd.DataFrame) -> pd.DataFrame:
    """Per-step CPU and GPU time of each phase from profiler traces, warm-up steps excluded.

    Median over the profiled steps (of all runs) per (setting, optimizer, mode, phase);
    records without a phase describe the whole step. ``count`` is the median number of
    calls per step.
    """
    p = (
        df.loc[(df["kind"] == "profile") & df["name"].notna() & ~df["warmup"]]
        if not (df.empty)
        else df
    )
    if p.empty:
        return _empty(PROFILE_COLUMNS)
    p = p.assign(
        v=_numeric_value(p),
        phase=p["phase"].fillna(WHOLE_STEP),
        mode=p["mode"].fillna("all"),
    ).dropna(subset=["v"])
    if p.empty:
        return _empty(PROFILE_COLUMNS)
    key = SETTING + OPT + ["mode", "phase"]
    per_step = p.groupby(key + ["name", "run", "step"], dropna=False, sort=False)["v"].sum()
    per_step = per_step.reset_index()
    med = per_step.groupby(key + ["name"], dropna=False, sort=False)["v"].median()
    wide = med.unstack("name").reset_index()
    wide.columns.name = None
    steps = per_step[key + ["run", "step"]].drop_duplicates()
    steps = steps.groupby(key, dropna=False, sort=False).size().rename("steps")
    wide = wide.merge(steps.reset_index(), on=key, how="left")
    wide = wide.rename(columns={"cpu_time": "cpu_time_s", "gpu_time": "gpu_time_s"})
    for c in ("cpu_time_s", "gpu_time_s", "count"):
        if c not in wide.columns:
            wide[c] = math.nan
    wide["_whole"] = wide["phase"] != WHOLE_STEP
    out = _sorted(wide, extra=["mode", "_whole", "phase"]).drop(columns="_whole")
    return out[PROFILE_COLUMNS]


# ------------------------------------------------------------------------------- cells

CELL_COLUMNS = ["run_id"] + SETTING + OPT + ["seed", "status", "epoch", "message", "when"]


def failed_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Cells that ended ``diverged``, ``oom`` or ``error``."""
    c = df.loc[(df["kind"] == "cell") & df["name"].isin(FAILED)] if not df.empty else df
    if c.empty:
        return _empty(CELL_COLUMNS)
    c = c.assign(
        status=c["name"],
        message=c["value"].map(lambda v: "" if v is None or _isnan(v) else str(v)),
        when=c["time"].map(_date),
    )
    return _sorted(c)[CELL_COLUMNS]


def unfinished_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Cells with a ``started`` record and no ``finished``/``diverged``/``oom``/``error``."""
    cols = ["run_id"] + SETTING + OPT + ["seed", "last_epoch", "started"]
    c = df.loc[df["kind"] == "cell"] if not df.empty else df
    if c.empty:
        return _empty(cols)
    ended = set(c.loc[c["name"].isin(TERMINAL), "run"])
    started = c.loc[(c["name"] == "started") & ~c["run"].isin(ended)]
    if started.empty:
        return _empty(cols)
    started = started.drop_duplicates(subset=["run"], keep="first")
    last_epoch = df.groupby("run")["epoch"].max()
    started = started.assign(
        last_epoch=started["run"].map(last_epoch), started=started["time"].map(_date)
    )
    return _sorted(started)[cols]
