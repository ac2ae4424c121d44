"""The report's sections: which tables and figures each holds, and what each is missing.

A section never raises: when its input is absent it says what is missing, and an unexpected
error inside one section is shown in that section while the others still render.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure

from reports import figures, paper, tables

log = logging.getLogger(__name__)

# column display formats: text, int, ms (seconds shown in ms), s, x (speedup), ratio, mib,
# pct (fraction), g (general number); a trailing "?" leaves missing values blank, not "n/a"
Column = tuple[str, str, str]

SETTING_COLS: list[Column] = [
    ("workload", "workload", "text"),
    ("size", "size", "text"),
    ("data_source", "data", "text"),
    ("device_name", "device", "text"),
    ("batch_size", "batch", "int"),
]
OPT_COLS: list[Column] = [("opt", "optimizer", "text"), ("impl", "impl", "text")]


@dataclass
class TableBlock:
    name: str
    title: str
    frame: pd.DataFrame
    columns: list[Column]
    note: str = ""
    show: bool = True  # False: written as CSV and linked, not shown as an HTML table
    max_rows: int = 0  # rows shown in the HTML (0: all); the CSV has every row
    collapsed: bool = False  # shown folded (an HTML <details> element)
    #: columns shown as one group row per distinct value instead of as columns
    group: tuple[str, ...] = ("workload", "size", "data_source", "device_name", "batch_size")
    drop_constant: tuple[str, ...] = ()  # columns left out of the HTML when all rows agree


@dataclass
class FigureBlock:
    title: str
    uri: str
    alt: str
    synthetic: bool = False


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocks: list[TableBlock | FigureBlock] = field(default_factory=list)
    error: str = ""

    def table(self, *args, **kwargs) -> None:
        self.blocks.append(TableBlock(*args, **kwargs))

    def figure(self, fig: Figure | None, title: str, setting: pd.Series | None = None) -> None:
        if fig is None:
            return
        synthetic = setting is not None and setting["data_source"] == "synthetic"
        label = title if setting is None else f"{title}: {tables.setting_label(setting)}"
        self.blocks.append(FigureBlock(label, figures.to_png_data_uri(fig), label, synthetic))

    @property
    def tables(self) -> list[TableBlock]:
        return [b for b in self.blocks if isinstance(b, TableBlock)]


@dataclass
class Context:
    """Everything the sections share, computed once."""

    records: pd.DataFrame
    problems: list[str]
    inputs: list[str]
    steps: pd.DataFrame = field(init=False)
    phases: pd.DataFrame = field(init=False)
    epochs: pd.DataFrame = field(init=False)
    targets: pd.DataFrame = field(init=False)
    final: pd.DataFrame = field(init=False)
    speed: pd.DataFrame = field(init=False)

    errors: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        df = self.records
        self.steps = self._safe(tables.step_times, df)
        self.phases = self._safe(tables.phase_times, df)
        self.epochs = self._safe(tables.epoch_times, df)
        self.targets = self._safe(tables.time_to_target, df)
        self.final = self._safe(tables.final_values, df)
        self.speed = self._safe(tables.speedup, self.steps, self.epochs, self.targets)

    def _safe(self, fn: Callable[..., pd.DataFrame], *args: pd.DataFrame) -> pd.DataFrame:
        try:
            return fn(*args)
        except Exception as exc:  # reported in "Input problems", the report still renders
            log.exception("table %s failed", fn.__name__)
            self.errors.append(f"table {fn.__name__} could not be computed: {exc!r}")
            return pd.DataFrame()

    @property
    def empty(self) -> bool:
        return self.records.empty

    def settings(self, frame: pd.DataFrame | None = None) -> list[pd.Series]:
        src = self.records if frame is None else frame
        return [row for _, row in tables.settings(src).iterrows()]

    def no_records(self) -> str:
        where = ", ".join(self.inputs) or "(no directories given)"
        return f"No records: no usable *.jsonl records were found under {where}."


def _kind_missing(ctx: Context, kind: str, what: str) -> list[str]:
    if ctx.empty:
        return [ctx.no_records()]
    if kind not in set(ctx.records["kind"]):
        return [f"No {kind!r} records, so {what}."]
    return []


# ------------------------------------------------------------------------ environment


def environment(ctx: Context) -> Section:
    sec = Section(
        "environment",
        "Environment",
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
    sec.table(
        "environment",
        "Devices and software",
        tables.environment(df),
        [
            ("device", "device", "text"),
            ("device_name", "device name", "text"),
            ("torch_version", "torch", "text"),
            ("cuda_version", "CUDA", "text"),
            ("git_commit", "git commit", "text"),
            ("first_record", "first record", "text"),
            ("last_record", "last record", "text"),
            ("workloads", "workloads", "text"),
            ("data_source", "data", "text"),
            ("runs", "runs", "int"),
            ("records", "records", "int"),
        ],
    )
    sec.table(
        "data_sources",
        "Workloads and data sources",
        tables.data_sources(df),
        [
            ("workload", "workload", "text"),
            ("data_source", "data", "text"),
            ("batch_size", "batch sizes", "text"),
            ("seeds", "seeds", "text"),
            ("optimizers", "optimizers", "text"),
            ("epochs", "epochs per run", "text"),
            ("runs", "runs", "int"),
        ],
    )
    sec.table(
        "hparams",
        "Hyperparameters per optimizer",
        tables.hparams(df),
        [
            ("opt", "optimizer", "text"),
            ("impl", "impl", "text"),
            ("hparams", "hyperparameters", "text"),
            ("workloads", "workloads", "text"),
        ],
    )
    sec.table(
        "record_counts",
        "Records read",
        tables.record_counts(df),
        [("kind", "kind", "text"), ("records", "records", "int")],
    )
    return sec


# ----------------------------------------------------------------------------- speedup


def speedup(ctx: Context) -> Section:
    sec = Section(
        "speedup",
        "Speedup",
        "FNGD against each baseline in the same setting (workload, data, device, batch size). "
        "Every number is baseline time ÷ FNGD time: above 1× FNGD is faster. Per step: median "
        "of all non-warm-up steps. First epoch: epoch 0, where FNGD inverts. Later epochs: "
        "median epoch after the first, where FNGD reuses its coefficients (weighted sum). "
        f"Measured run: the epochs actually run (only when both ran as many). PROJECTED "
        f"{tables.PROJECT_EPOCHS} epochs: first epoch + {tables.PROJECT_EPOCHS - 1} × median "
        "later epoch, an extrapolation, not a measurement. Time to target: training wall time "
        "until the eval metric first reached the target, at the highest target both reached.",
    )
    sec.missing += tables.speedup_gaps(ctx.records)
    sec.notes += tables.cut_epochs(ctx.records)
    sp = ctx.speed
    sec.table(
        "speedup",
        "FNGD speedup (baseline time ÷ FNGD time)",
        sp,
        SETTING_COLS
        + [
            ("fngd", "FNGD", "text"),
            ("baseline", "against", "text"),
            ("per_step", "per step", "x"),
            ("first_epoch", "first epoch", "x"),
            ("later_epochs", "later epochs", "x"),
            ("measured_epochs", "epochs run", "int"),
            ("measured_run", "measured run", "x"),
            ("projected_100", f"PROJECTED {tables.PROJECT_EPOCHS} epochs", "x"),
            ("target", "target", "g"),
            ("time_to_target", "time to target", "x"),
        ],
        note="n/a: the records needed for that column are missing (see above); the measured "
        "run needs both optimizers to have run the same number of epochs.",
        drop_constant=("fngd",),
    )
    claims = paper.compare(ctx.records, sp, ctx.final)
    sec.table(
        "paper_claims",
        "The paper's claims beside our measurements",
        claims,
        [
            ("claim", "claim", "text"),
            ("paper", "paper", "text"),
            ("paper_conditions", "paper's conditions", "text"),
            ("workload", "our workload", "text"),
            ("compared", "compared", "text"),
            ("ours", "ours", "text"),
            ("our_conditions", "our conditions", "text"),
        ],
        note=f"Source: {paper.PAPER}. Our numbers come from the records above and hold only "
        "under our conditions; a SYNTHETIC data source makes metric comparisons meaningless.",
    )
    if not ctx.targets.empty:
        sec.table(
            "time_to_target",
            "Time to target",
            ctx.targets,
            SETTING_COLS
            + OPT_COLS
            + [
                ("metric", "metric", "text"),
                ("target", "target", "g"),
                ("reached", "runs reached", "int"),
                ("runs", "runs", "int"),
                ("median_s", "median time (s)", "s"),
                ("median_epoch", "median epoch", "g"),
            ],
            note="Median over the runs that reached the target.",
        )
    return sec


# ------------------------------------------------------------------------- convergence


def convergence(ctx: Context) -> Section:
    sec = Section(
        "convergence",
        "Convergence",
        "Train loss and the evaluation metric against epoch and against training wall time "
        "(cumulative epoch time for the loss, the eval record's time for the metric): the "
        "line is the median over seeds, the band spans min to max.",
    )
    if ctx.empty:
        sec.missing.append(ctx.no_records())
        return sec
    df = ctx.records
    kinds = set(df["kind"])
    if "epoch" not in kinds:
        sec.missing.append("No 'epoch' records, so no train-loss curves.")
    if "eval" not in kinds:
        sec.missing.append("No 'eval' records, so no eval-metric curves.")
    curves = tables.convergence(df)
    metrics = tables.metric_names(df)
    sec.table(
        "final_values",
        "Final values (last epoch of each run; median [min–max] over runs)",
        ctx.final,
        SETTING_COLS
        + OPT_COLS
        + [
            ("runs", "runs", "int"),
            ("epochs", "epochs", "int"),
            ("train_loss_median", "train loss", "g"),
            ("train_loss_min", "min", "g"),
            ("train_loss_max", "max", "g"),
            ("metric", "metric", "text"),
            ("metric_median", "metric", "g"),
            ("metric_min", "min", "g"),
            ("metric_max", "max", "g"),
            ("wall_median_s", "train time (s)", "s"),
        ],
    )
    sec.table("convergence", "Curves", curves, [], show=False)
    for st in ctx.settings(curves):
        if st["workload"] not in metrics and "eval" in kinds:
            sec.missing.append(f"{tables.setting_label(st)}: no eval metric records.")
        sec.figure(figures.convergence(curves, st, metrics.get(st["workload"])), "Convergence", st)
    return sec


# -------------------------------------------------------------------------- step time


def step_time(ctx: Context) -> Section:
    sec = Section(
        "steps",
        "Per-step time",
        "Whole-step time (data to update) per optimizer and mode, warm-up steps excluded. "
        "Mode 'all' pools every step; FNGD's 'inversion' steps (first epoch) and "
        "'weighted_sum' steps (later epochs), and KFAC's 'inverse'/'no_inverse' steps, are "
        "also shown apart. ×SGD: median step ÷ SGD's median step in the same setting.",
    )
    sec.missing += _kind_missing(ctx, "step", "no per-step times")
    st = ctx.steps
    if not st.empty:
        for s in ctx.settings(st):
            sub = figures._select(st, s)
            if not (sub["family"] == "sgd").any():
                sec.missing.append(
                    f"{tables.setting_label(s)}: no SGD records, so no ratio to SGD."
                )
    sec.table(
        "step_times",
        "Step time",
        st,
        SETTING_COLS
        + OPT_COLS
        + [
            ("mode", "mode", "text"),
            ("n", "n", "int"),
            ("median_s", "median (ms)", "ms"),
            ("q1_s", "q1 (ms)", "ms"),
            ("q3_s", "q3 (ms)", "ms"),
            ("iqr_s", "IQR (ms)", "ms"),
            ("ratio_to_sgd", "×SGD", "ratio"),
        ],
    )
    ov = tables.overhead(ctx.records) if not ctx.empty else pd.DataFrame()
    if not ov.empty:
        sec.table(
            "overhead",
            "Runner overhead (fraction of a step)",
            ov,
            SETTING_COLS + OPT_COLS + [("n", "n", "int"), ("median_fraction", "median", "pct")],
        )
    if not ctx.empty:
        for s in ctx.settings(st):
            sec.figure(figures.step_distribution(ctx.records, s), "Per-step time", s)
    return sec


# ------------------------------------------------------------------------- epoch time


def epoch_time(ctx: Context) -> Section:
    sec = Section(
        "epochs",
        "Per-epoch time",
        "Epoch wall time per optimizer. The first epoch (epoch 0) and the later epochs are "
        "apart: FNGD computes its coefficients by inversion in the first epoch and reuses "
        "them afterwards, so its steady state is the later epochs. The modes column lists the "
        "step modes seen. PROJECTED: first + "
        f"{tables.PROJECT_EPOCHS - 1} × median later epoch, a projection of a "
        f"{tables.PROJECT_EPOCHS}-epoch schedule.",
    )
    sec.missing += _kind_missing(ctx, "epoch", "no per-epoch times")
    sec.notes += tables.cut_epochs(ctx.records)
    ep = ctx.epochs
    if not ep.empty and (ep["later_n"] == 0).any():
        which = ", ".join(sorted(set(ep.loc[ep["later_n"] == 0, "opt"])))
        sec.missing.append(
            f"Only one epoch recorded for {which}: no later-epoch time and no projection."
        )
    sec.table(
        "epoch_times",
        "Epoch time",
        ep,
        SETTING_COLS
        + OPT_COLS
        + [
            ("first_median_s", "first epoch (s)", "s"),
            ("first_modes", "first-epoch modes", "text"),
            ("later_median_s", "later epochs median (s)", "s"),
            ("later_q1_s", "q1 (s)", "s"),
            ("later_q3_s", "q3 (s)", "s"),
            ("later_n", "n later", "int"),
            ("later_modes", "later modes", "text"),
            ("epochs", "epochs run", "int"),
            ("steps_per_epoch", "steps / epoch", "int?"),
            ("measured_median_s", "measured run (s)", "s"),
            ("projected_100_s", f"PROJECTED {tables.PROJECT_EPOCHS} epochs (s)", "s"),
        ],
    )
    curve = tables.epoch_curve(ctx.records) if not ctx.empty else pd.DataFrame()
    if not curve.empty:
        sec.table("epoch_curve", "Epoch time per epoch", curve, [], show=False)
        for s in ctx.settings(curve):
            sec.figure(figures.epoch_curve(curve, s), "Epoch time", s)
    return sec


# ------------------------------------------------------------------------------ phases


def phase_breakdown(ctx: Context) -> Section:
    sec = Section(
        "phases",
        "Phase breakdown",
        "Time per phase per step, warm-up excluded, per optimizer and mode. Phases nest "
        "(e.g. FNGD's weighted sum inside backward): 'inclusive' is a phase's own time, "
        "'exclusive' subtracts its child phases; the stacked bars use the median exclusive "
        "time, so nested work is not counted twice. 'other (untimed)' is the rest of the "
        "median step. Statistics run over the steps in which the phase ran (n).",
    )
    sec.missing += _kind_missing(ctx, "phase", "no phase breakdown")
    ph = ctx.phases
    if not ph.empty and not ctx.steps.empty:
        have = set(map(tuple, ph[tables.SETTING + ["opt"]].drop_duplicates().to_numpy()))
        for _, r in ctx.steps[tables.SETTING + ["opt"]].drop_duplicates().iterrows():
            if tuple(r) not in have:
                sec.missing.append(
                    f"{tables.setting_label(r)}: {r['opt']} has step records but no phase records."
                )
    stack = tables.phase_stack(ph, ctx.steps)
    wide = tables.phase_wide(stack, ctx.steps)
    if not wide.empty:
        phase_cols = [c for c in wide.columns if c.startswith("phase:")]
        sec.table(
            "phase_exclusive",
            "Median exclusive time per step (ms)",
            wide,
            SETTING_COLS
            + OPT_COLS
            + [("mode", "mode", "text")]
            + [(c, c.split(":", 1)[1], "ms?") for c in phase_cols]
            + [("step_median_s", "median step", "ms")],
            note="Each phase's time minus its nested phases; the stacked bars below draw "
            "these numbers.",
        )
    sec.table(
        "phase_times",
        "Per-phase statistics (inclusive and exclusive: median, IQR, n)",
        ph,
        SETTING_COLS
        + OPT_COLS
        + [
            ("mode", "mode", "text"),
            ("phase", "phase", "text"),
            ("parent", "parent", "text"),
            ("n", "n", "int"),
            ("median_s", "inclusive median (ms)", "ms"),
            ("iqr_s", "IQR (ms)", "ms"),
            ("excl_median_s", "exclusive median (ms)", "ms"),
            ("excl_iqr_s", "IQR (ms)", "ms"),
        ],
        collapsed=True,
    )
    if not stack.empty:
        sec.table("phase_stack", "Stacked-bar data", stack, [], show=False)
        for s in ctx.settings(stack):
            sec.figure(figures.phase_stack(stack, s), "Phase breakdown", s)
    return sec


# ------------------------------------------------------------------------------ memory


def memory(ctx: Context) -> Section:
    sec = Section(
        "memory",
        "Memory",
        "Peak memory (GPU: peak_allocated; CPU: peak_rss) and the optimizer's own state "
        "(with its components), each run's largest value, median over runs.",
    )
    sec.missing += _kind_missing(ctx, "memory", "no memory figures")
    mem = tables.memory(ctx.records) if not ctx.empty else pd.DataFrame()
    sec.table(
        "memory",
        "Memory",
        mem,
        SETTING_COLS
        + OPT_COLS
        + [
            ("runs", "runs", "int"),
            ("peak_kind", "peak of", "text"),
            ("peak_bytes", "peak (MiB)", "mib"),
            ("optimizer_state_bytes", "optimizer state (MiB)", "mib"),
            ("components", "state components", "text"),
        ],
    )
    if not mem.empty:
        sec.figure(figures.memory(mem), "Memory")
    return sec


# -------------------------------------------------------------------------- batch size


def batch_size(ctx: Context) -> Section:
    sec = Section(
        "batch",
        "Cost against batch size",
        "Median step time (all modes, warm-up excluded) against batch size, for each "
        "workload and optimizer measured at several batch sizes on the same device.",
    )
    bs = tables.batch_scaling(ctx.steps)
    if ctx.empty:
        sec.missing.append(ctx.no_records())
    elif ctx.steps.empty:
        sec.missing.append("No 'step' records, so no cost against batch size.")
    elif bs.empty:
        sec.missing.append(
            "Every workload and optimizer ran at a single batch size: no batch-size sweep."
        )
    sec.table(
        "batch_scaling",
        "Step time against batch size",
        bs,
        [c for c in SETTING_COLS if c[0] != "batch_size"]
        + OPT_COLS
        + [
            ("batch_size", "batch", "int"),
            ("n", "n", "int"),
            ("median_s", "median step (ms)", "ms"),
            ("per_sample_s", "per sample (ms)", "ms"),
            ("ratio_to_sgd", "×SGD", "ratio"),
        ],
        group=("workload", "size", "data_source", "device_name"),
    )
    if not bs.empty:
        sec.figure(figures.batch_scaling(bs), "Step time against batch size")
    return sec


# ----------------------------------------------------------------------------- profile


def profile(ctx: Context) -> Section:
    sec = Section(
        "profile",
        "Profile",
        "Per-step CPU and GPU time of each phase read back from torch.profiler traces "
        "(fngd-bench profile): median over the profiled steps, warm-up steps excluded, per "
        "optimizer and mode; '(whole step)' is the step as a whole.",
    )
    sec.missing += _kind_missing(ctx, "profile", "no profiler summary")
    prof = tables.profile(ctx.records) if not ctx.empty else pd.DataFrame()
    sec.table(
        "profile",
        "Profiler summary",
        prof,
        SETTING_COLS
        + OPT_COLS
        + [
            ("mode", "mode", "text"),
            ("phase", "phase", "text"),
            ("steps", "steps", "int"),
            ("cpu_time_s", "CPU (ms)", "ms?"),
            ("gpu_time_s", "GPU (ms)", "ms?"),
            ("count", "calls / step", "g?"),
        ],
    )
    for s in ctx.settings(prof) if not prof.empty else []:
        sec.figure(figures.profile(prof, s), "Profile", s)
    return sec


# ------------------------------------------------------------------------------- cells


def cells(ctx: Context) -> Section:
    sec = Section(
        "cells",
        "Failed cells",
        "Cells (one workload × optimizer × seed run) that diverged, ran out of memory or "
        "failed, and cells that started but have no final status (still running or killed).",
    )
    if ctx.empty:
        sec.missing.append(ctx.no_records())
        return sec
    failed = tables.failed_cells(ctx.records)
    unfinished = tables.unfinished_cells(ctx.records)
    if "cell" not in set(ctx.records["kind"]):
        sec.missing.append("No 'cell' records, so cell status is unknown.")
    elif failed.empty and unfinished.empty:
        sec.notes.append("No cell diverged, ran out of memory, failed or stopped unfinished.")
    if not failed.empty:
        sec.table(
            "failed_cells",
            "Diverged, out-of-memory and failed cells",
            failed,
            [("run_id", "run", "text")]
            + SETTING_COLS
            + OPT_COLS
            + [
                ("seed", "seed", "int"),
                ("status", "status", "text"),
                ("epoch", "epoch", "int?"),
                ("message", "message", "text"),
                ("when", "when", "text"),
            ],
        )
    if not unfinished.empty:
        sec.table(
            "unfinished_cells",
            "Started, no final status",
            unfinished,
            [("run_id", "run", "text")]
            + SETTING_COLS
            + OPT_COLS
            + [
                ("seed", "seed", "int"),
                ("last_epoch", "last epoch", "int?"),
                ("started", "started", "text"),
            ],
        )
    return sec


# ----------------------------------------------------------------------------- problems

MAX_PROBLEMS = 200


def problems(ctx: Context) -> Section:
    sec = Section(
        "problems",
        "Input problems",
        "Lines and paths that could not be used; each was skipped and the rest of the "
        "report is built without it.",
    )
    found = ctx.problems + ctx.errors
    if not found:
        sec.notes.append("None: every line read was a usable record.")
        return sec
    frame = pd.DataFrame({"problem": found})
    sec.table(
        "problems",
        f"{len(found)} problem(s)",
        frame,
        [("problem", "problem", "text")],
        max_rows=MAX_PROBLEMS,
        note=f"Only the first {MAX_PROBLEMS} are shown; the CSV lists them all."
        if len(found) > MAX_PROBLEMS
        else "",
    )
    return sec


BUILDERS: tuple[Callable[[Context], Section], ...] = (
    environment,
    speedup,
    convergence,
    step_time,
    epoch_time,
    phase_breakdown,
    memory,
    batch_size,
    profile,
    cells,
    problems,
)
TITLES = {
    "environment": "Environment",
    "speedup": "Speedup",
    "convergence": "Convergence",
    "step_time": "Per-step time",
    "epoch_time": "Per-epoch time",
    "phase_breakdown": "Phase breakdown",
    "memory": "Memory",
    "batch_size": "Cost against batch size",
    "profile": "Profile",
    "cells": "Failed cells",
    "problems": "Input problems",
}


def build(ctx: Context) -> list[Section]:
    out = []
    for builder in BUILDERS:
        try:
            out.append(builder(ctx))
        except Exception as exc:  # one broken section must not take the report down
            log.exception("report section %s failed", builder.__name__)
            out.append(
                Section(
                    builder.__name__,
                    TITLES.get(builder.__name__, builder.__name__),
                    error=f"This section could not be built: {type(exc).__name__}: {exc}",
                )
            )
    return out
