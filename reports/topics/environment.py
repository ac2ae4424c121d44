"""Where and with what the records were measured: devices, software, data, hyperparameters."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pandas as pd

from reports.common import (
    OPT_COLUMNS,
    col,
    cols,
    count_runs,
    date,
    empty,
    join,
    join_numbers,
    record_count,
    training,
)
from reports.section import Section
from reports.vocabulary import family_rank

if TYPE_CHECKING:
    from reports.context import Context

ID = "environment"
TITLE = "Environment"

ENVIRONMENT = cols(
    col("device", "device"),
    col("device_name", "device name"),
    col("torch_version", "torch"),
    col("cuda_version", "CUDA"),
    col("git_commit", "git commit"),
    col("first_record", "first record"),
    col("last_record", "last record"),
    col("workloads", "workloads"),
    col("data_source", "data"),
    col("runs", "runs", "int"),
    col("records", "records", "int"),
)
DATA_SOURCES = cols(
    col("workload", "workload"),
    col("data_source", "data"),
    col("batch_size", "batch sizes"),
    col("seeds", "seeds"),
    col("optimizers", "optimizers"),
    col("epochs", "epochs per run"),
    col("runs", "runs", "int"),
)
HPARAMS = cols(
    OPT_COLUMNS,
    col("hparams", "hyperparameters"),
    col("workloads", "workloads"),
    "hparams_json",
)
RECORD_COUNTS = cols(col("kind", "kind"), col("records", "records", "int"))


def environment(df: pd.DataFrame) -> pd.DataFrame:
    """One row per device: software versions, commits, dates, what ran there."""
    if df.empty:
        return empty(ENVIRONMENT)
    rows = []
    for (device, name), g in df.groupby(["device", "device_name"], sort=True):
        rows.append(
            {
                "device": device,
                "device_name": name,
                "torch_version": join(g["torch_version"]),
                "cuda_version": join(g["cuda_version"]) or "none",
                "git_commit": join(str(c)[:12] for c in g["git_commit"].unique() if c),
                "first_record": date(g["time"].min()),
                "last_record": date(g["time"].max()),
                "workloads": join(g["workload"]),
                "data_source": join(g["data_source"]),
                "runs": count_runs(g),
                "records": record_count(g),
            }
        )
    return pd.DataFrame(rows, columns=ENVIRONMENT.csv)


def data_sources(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (workload, data source): batch sizes, seeds, optimizers, epochs, runs."""
    if df.empty:
        return empty(DATA_SOURCES)
    rows = []
    for (w, src), g in df.groupby(["workload", "data_source"], sort=True):
        ep = g.loc[g["kind"] == "epoch"].groupby("run")["epoch"].nunique()
        pairs = g[["family", "opt"]].drop_duplicates()
        opts = [
            o for _, o in sorted(zip(pairs["family"].map(family_rank), pairs["opt"], strict=True))
        ]
        rows.append(
            {
                "workload": w,
                "data_source": src,
                "batch_size": join_numbers(b for b in g["batch_size"].unique() if b),
                "seeds": join_numbers(g["seed"].dropna()),
                "optimizers": ", ".join(opts),
                "epochs": join_numbers(ep),
                "runs": count_runs(g),
            }
        )
    return pd.DataFrame(rows, columns=DATA_SOURCES.csv)


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
    if df.empty:
        return empty(HPARAMS)
    trained = training(df)
    if not trained.empty:  # the profiler's and the overhead measurement's are not shown
        df = trained
    g = df.groupby(["family", "optimizer", "impl", "opt", "hparams_json"], sort=False)
    out = g["workload"].agg(join).reset_index().rename(columns={"workload": "workloads"})
    out["hparams"] = out["hparams_json"].map(_format_hparams)
    out = out[HPARAMS.csv]
    out["_rank"] = out["family"].map(lambda o: family_rank(o)[0])
    out = out.sort_values(["_rank", "optimizer", "impl", "workloads"])
    return out.drop(columns="_rank").reset_index(drop=True)


def record_counts(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return empty(RECORD_COUNTS)
    counts = df.loc[df["kind"] != "phase", "kind"].value_counts()
    phases = int(df["phase_count"].sum())
    if phases:  # one per phase entry, however the steps hold them (reports.load)
        counts["phase"] = phases
    out = counts.rename_axis("kind").reset_index(name="records")
    return out.sort_values("kind").reset_index(drop=True)


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Where and with what the records were measured: devices, software versions, commits, "
        "dates, data sources and each optimizer's hyperparameters.",
    )
    df = ctx.records
    if ctx.empty:
        sec.missing.append(ctx.no_records())
        return sec
    synth = sorted(set(df.loc[df["data_source"] == "synthetic", "workload"]))
    if synth:
        sec.notes.append(
            "SYNTHETIC data: " + ", ".join(synth) + " ran on generated stand-in data of the "
            "real data set's shapes. Their timings describe the same computation; their losses "
            "and metrics say nothing about the real task and are not comparable with the paper."
        )
    unknown = sorted(set(df.loc[df["data_source"] == "unknown", "workload"]))
    if unknown:
        sec.missing.append("Records without a data_source: " + ", ".join(unknown) + ".")
    sec.table("environment", "Devices and software", environment(df), ENVIRONMENT.shown)
    sec.table("data_sources", "Workloads and data sources", data_sources(df), DATA_SOURCES.shown)
    sec.table("hparams", "Hyperparameters per optimizer", hparams(df), HPARAMS.shown)
    sec.table("record_counts", "Records read", record_counts(df), RECORD_COUNTS.shown)
    return sec
