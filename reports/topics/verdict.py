"""The summary that opens the report: the forest plot of every optimizer against SGD
(reports/figures/forest.py) and its three sentences; then FNGD against each baseline, per
workload, in one small table and, folded, in words, with 95 % intervals (reports/stats.py,
docs/STATISTICS.md); train and test side by side; and an AlgoPerf-style performance profile
of time to target over workloads.

The ratios are baseline time ÷ FNGD time (above 1 FNGD is faster) and FNGD's metric ÷ the
baseline's (above 1 FNGD's is higher). When each side ran once they are the speed-up table's
(reports/tables/speedup.py) ratios of medians over the steps or epochs, with a percentile
bootstrap; with several seeds, ratios of the runs' geometric means (each run: its median) with
a t-interval on the logs, paired by seed where both ran the same seeds. Each interval names its
method and n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports import plot
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
    seed_of,
    setting_label,
    sort_rows,
    timed,
)
from reports.figures import forest
from reports.section import Section
from reports.stats import (
    MIN_N,
    Interval,
    difference,
    performance_profile,
    ratio_interval,
    seeded_ratio_interval,
)
from reports.tables.convergence import convergence_long
from reports.vocabulary import FNGD, display_name

if TYPE_CHECKING:
    from reports.context import Context

ID = "verdict"
TITLE = "Summary"

#: The comparisons, in table order: (metric, header, ratio column of the speed-up table).
COMPARISONS = (
    ("step_time", "per step", "per_step"),
    ("later_epoch_time", "later epochs", "later_epochs"),
    ("time_to_target", "to target", "time_to_target"),
    ("final_metric", "final metric", None),
)
#: What a ratio above 1 means, per metric.
ABOVE_ONE = {
    "step_time": "FNGD faster",
    "later_epoch_time": "FNGD faster",
    "time_to_target": "FNGD faster",
    "final_metric": "FNGD higher",
}

VERDICT = cols(
    SETTING_COLUMNS,
    "optimizer",
    "baseline",
    "baseline_family",
    "metric",
    "ratio",
    "ci_low",
    "ci_high",
    "seeds",
    "fngd_seeds",
    "baseline_seeds",
    "unit",
    "n",
    "method",
    "difference",
    "above_one",
    "fngd_value",
    "baseline_value",
    "target",
    "quantity",
    "fngd_eval_s",
    "baseline_eval_s",
    "flags",
)
#: The page's table: one row per FNGD label and baseline, one column per comparison.
VERDICT_SHOWN = cols(
    SETTING_COLUMNS,
    col("fngd", "FNGD"),
    col("against", "against"),
    col("seeds", "seeds", "int"),
    *(col(m, header) for m, header, _ in COMPARISONS),
).shown
GENERALISATION = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    col("runs", "runs", "int"),
    col("train_loss", "train loss", "g"),
    col("test_loss", "test loss", "g"),
    col("loss_gap", "gap (test − train)", "g"),
    col("metric", "metric"),
    col("train_metric", "train metric", "g?"),
    col("test_metric", "test metric", "g"),
)
PROFILE_TIMES = cols(SETTING_COLUMNS, OPT_COLUMNS, "target", "seconds", "reached", "runs")


@dataclass
class Group:
    """One optimizer's values in one setting: a value per run, and the raw measurements of
    its single run (steps or epochs), where they exist."""

    runs: np.ndarray
    raw: np.ndarray | None = None
    seeds: tuple = ()


def _groups(
    frame: pd.DataFrame, value: str, raw: bool, seed_of: dict | None = None
) -> dict[tuple, Group]:
    """(setting..., opt) -> Group: per-run medians of ``value`` (and each run's seed, from
    ``seed_of``: run -> seed) and, if ``raw``, the values."""
    if frame.empty:
        return {}
    key = SETTING + ["opt"]
    per_run = frame.groupby(key + ["run"], sort=False)[value].median().reset_index()
    out = {}
    for k, g in per_run.groupby(key, sort=False):
        seeds = tuple(g["run"].map(seed_of)) if seed_of else ()
        out[k] = Group(g[value].to_numpy(float), seeds=seeds)
    if raw:
        for k, g in frame.groupby(key, sort=False):
            out[k].raw = g[value].to_numpy(float)
    return out


def _interval(base: Group | None, fngd: Group | None, estimate: float, unit: str) -> Interval:
    """The ratio's interval: over the raw values when both ran once (the table's ratio of
    medians, percentile bootstrap); else over run medians, a ratio of geometric means with a
    t-interval on the logs, paired by seed where both ran the same seeds once each."""
    if base is None or fngd is None:
        return Interval(estimate)
    if len(base.runs) == 1 and len(fngd.runs) == 1 and base.raw is not None:
        assert fngd.raw is not None
        return ratio_interval(
            base.raw, fngd.raw, method="percentile", estimate=estimate, unit=unit
        )
    if len(base.seeds) == len(base.runs) and len(fngd.seeds) == len(fngd.runs):
        return seeded_ratio_interval(base.runs, base.seeds, fngd.runs, fngd.seeds)
    return ratio_interval(base.runs, fngd.runs, unit="seeds")


def _values(ctx: Context) -> dict[str, dict[tuple, Group]]:
    """Per comparison, the groups behind it."""
    df = ctx.records
    steps = timed(df, "step", SETTING + ["opt", "run", "seconds"])
    e = epoch_records(df)
    later = e.loc[(e["epoch"] > 0) & e["seconds"].notna()] if not e.empty else e
    long = convergence_long(df)
    metrics = metric_names(df)
    if not long.empty:
        long = long.loc[long["quantity"] == long["workload"].map(metrics)]
        long = long.sort_values("epoch").groupby("run", sort=False).tail(1)
    seeds = seed_of(df)
    return {
        "step_time": _groups(steps, "seconds", raw=True, seed_of=seeds),
        "later_epoch_time": _groups(later, "seconds", raw=True, seed_of=seeds),
        "final_metric": _groups(long, "value", raw=False, seed_of=seeds),
    }


def _target_groups(df: pd.DataFrame, target: float) -> dict[tuple, Group]:
    t = df.loc[(df["kind"] == "target") & df["seconds"].notna()]
    t = t.loc[pd.to_numeric(t["value"], errors="coerce") == target]
    return _groups(t, "seconds", raw=False, seed_of=seed_of(df))


def _flags(ctx: Context) -> dict[tuple, set[str]]:
    """(setting..., opt) -> the hygiene flags of its runs."""
    out: dict[tuple, set[str]] = {}
    for frame, name in ((ctx.spread, "wide spread"), (ctx.cold, "cold start")):
        if frame.empty:
            continue
        for _, r in frame.loc[frame["flagged"].astype(bool)].iterrows():
            out.setdefault(tuple(r[c] for c in SETTING + ["opt"]), set()).add(name)
    return out


def _lookup(frame: pd.DataFrame, column: str) -> dict[tuple, float]:
    if frame.empty or column not in frame.columns:
        return {}
    return {tuple(r[c] for c in SETTING + ["opt"]): r[column] for _, r in frame.iterrows()}


def verdict(ctx: Context) -> pd.DataFrame:
    """One row per setting, FNGD label, baseline and comparison (the ``_verdict.csv``)."""
    sp = ctx.speed
    if sp.empty:
        return empty(VERDICT)
    groups = _values(ctx)
    final = _lookup(ctx.final, "metric_median")
    eval_s = {}
    if not ctx.targets.empty:
        for _, r in ctx.targets.iterrows():
            eval_s[tuple(r[c] for c in SETTING + ["opt"]) + (r["target"],)] = r["eval_median_s"]
    metrics = metric_names(ctx.records)
    flags = _flags(ctx)
    target_cache: dict[float, dict[tuple, Group]] = {}
    rows = []
    for _, s in sp.iterrows():
        setting = tuple(s[c] for c in SETTING)
        fk, bk = setting + (s["fngd"],), setting + (s["baseline"],)
        for metric, _header, column in COMPARISONS:
            row = {c: s[c] for c in SETTING}
            row.update(
                optimizer=s["fngd"],
                baseline=s["baseline"],
                baseline_family=s["baseline_optimizer"],
                metric=metric,
                above_one=ABOVE_ONE[metric],
                target=math.nan,
                quantity=metrics.get(s["workload"], ""),
                fngd_eval_s=math.nan,
                baseline_eval_s=math.nan,
            )
            if metric == "final_metric":
                fv, bv = final.get(fk, math.nan), final.get(bk, math.nan)
                estimate = fv / bv if bv and bv > 0 else math.nan
                g = groups["final_metric"]
                # FNGD's metric over the baseline's: FNGD is the numerator here
                iv = _interval(g.get(fk), g.get(bk), estimate, "seeds")
                fg, bg = g.get(fk), g.get(bk)
            else:
                estimate = s[column]
                if metric == "time_to_target":
                    target = s["target"]
                    row["target"] = target
                    if not isnan_(target):
                        if target not in target_cache:
                            target_cache[target] = _target_groups(ctx.records, target)
                        g = target_cache[target]
                        row["fngd_eval_s"] = eval_s.get(fk + (target,), math.nan)
                        row["baseline_eval_s"] = eval_s.get(bk + (target,), math.nan)
                    else:
                        g = {}
                    unit = "seeds"
                else:
                    g = groups[metric]
                    unit = "steps" if metric == "step_time" else "epochs"
                fg, bg = g.get(fk), g.get(bk)
                iv = _interval(bg, fg, estimate, unit)
                fv = float(np.median(fg.runs)) if fg is not None else math.nan
                bv = float(np.median(bg.runs)) if bg is not None else math.nan
                if metric != "time_to_target":
                    fv, bv = _pooled(fg, bg, fv, bv)
            nf = 0 if fg is None else len(fg.runs)
            nb = 0 if bg is None else len(bg.runs)
            row.update(
                ratio=iv.estimate,
                ci_low=iv.low,
                ci_high=iv.high,
                seeds=min(nf, nb),
                fngd_seeds=nf,
                baseline_seeds=nb,
                unit=iv.unit,
                n=iv.n,
                method=iv.method,
                difference=difference(iv) if not math.isnan(iv.estimate) else "unknown",
                fngd_value=fv,
                baseline_value=bv,
                flags=", ".join(
                    sorted(flags.get(fk, set()) | flags.get(bk, set()))
                    if metric != "final_metric"
                    else []
                ),
            )
            rows.append(row)
    return pd.DataFrame(rows, columns=VERDICT.csv)


def isnan_(v: object) -> bool:
    try:
        return math.isnan(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True


def _pooled(fg: Group | None, bg: Group | None, fv: float, bv: float) -> tuple[float, float]:
    """Medians over every step or epoch (the tables' estimate), where the raw values exist."""
    if fg is not None and fg.raw is not None:
        fv = float(np.median(fg.raw))
    if bg is not None and bg.raw is not None:
        bv = float(np.median(bg.raw))
    return fv, bv


# ----------------------------------------------------------------------------- words


def _iv(r: pd.Series) -> Interval:
    method = r["method"] if isinstance(r.get("method"), str) else ""
    return Interval(r["ratio"], r["ci_low"], r["ci_high"], int(r["n"]), str(r["unit"]), method)


def _ci(r: pd.Series, labelled: bool = False) -> str:
    """``[low, high]``; ``labelled``: with its method and n beside it."""
    return _iv(r).described() if labelled else _iv(r).text()


def interval_labels(table: pd.DataFrame) -> list[str]:
    """The distinct ``method, n=...`` labels of the intervals in ``table``, in order."""
    if table.empty:
        return []
    labels = (_iv(r).label for _, r in table.iterrows() if not isnan_(r["ratio"]))
    return list(dict.fromkeys(lab for lab in labels if lab))


def _ratio_text(r: pd.Series, labelled: bool = False) -> str:
    """``1.80× [1.40, 2.30]`` (``⚠`` when a run behind it is flagged; ``labelled``: the
    interval's method and n beside it)."""
    if isnan_(r["ratio"]):
        return ""
    ci = _ci(r, labelled)
    text = f"{r['ratio']:.2f}× {ci}" if ci.startswith("[") else f"{r['ratio']:.2f}× ({ci})"
    return text + (" ⚠" if r["flags"] else "")


def _clause(r: pd.Series, labelled: bool = False) -> str:
    """What one comparison says, FNGD's losses as plainly as its wins."""
    b_name = display_name(r["baseline"])
    if isnan_(r["ratio"]):
        if r["metric"] == "time_to_target":
            return f"not comparable with {b_name} (no target both reached)"
        return f"not comparable with {b_name} (no records)"
    ratio, ci, d = f"{r['ratio']:.2f}×", _ci(r, labelled), r["difference"]
    if r["metric"] == "final_metric":
        other = f"{b_name} ({r['baseline_value']:.3g})"
        if d == "higher":
            return f"higher than {other}: {ratio} {ci}"
        if d == "lower":
            return f"lower than {other}: {ratio} {ci}"
        if d == "none":
            return f"no measurable difference from {other}: {ratio} {ci}"
        return f"{ratio} of {other} ({ci})"
    faster = "sooner" if r["metric"] == "time_to_target" else "faster"
    if d == "higher":
        return f"{ratio} {faster} than {b_name} {ci}"
    if d == "lower":
        return f"{b_name} is faster: {ratio} {ci}"
    if d == "none":
        return f"no measurable difference from {b_name}: {ratio} {ci}"
    return f"{ratio} against {b_name} ({ci})"


def _seeds(n: int, unit: str) -> str:
    if n == 1 and unit in ("steps", "epochs"):
        return f"1 seed; intervals over its {unit}"
    return f"{n} seed{'s' if n != 1 else ''}"


def findings(table: pd.DataFrame, targets: pd.DataFrame) -> list[str]:
    """The summary in words: one sentence per setting, FNGD label and comparison."""
    if table.empty:
        return []
    reached = _lookup(targets, "reached") if not targets.empty else {}
    runs = _lookup(targets, "runs") if not targets.empty else {}
    out = []
    for _, g in table.groupby(SETTING + ["optimizer"], sort=False):
        first = g.iloc[0]
        head = f"{setting_label(first)} · {display_name(first['optimizer'])}"
        for metric, header, _ in COMPARISONS:
            m = g.loc[g["metric"] == metric]
            if m.empty or m["ratio"].isna().all():
                continue
            nf, unit = int(m["fngd_seeds"].max()), str(m["unit"].dropna().iloc[0])
            labels = interval_labels(m)
            clauses = "; ".join(_clause(r, len(labels) > 1) for _, r in m.iterrows())
            how = _seeds(nf, unit) + (f"; {labels[0]}" if len(labels) == 1 else "")
            quantity = first["quantity"] or "metric"
            if metric == "time_to_target":
                tgt = m["target"].dropna()
                what = f"to {tgt.iloc[0]:g} {quantity}" if len(tgt) else "to target"
                key = tuple(first[c] for c in SETTING) + (first["optimizer"],)
                if key in reached and key in runs and reached[key] < runs[key]:
                    what += f" (FNGD reached it in {int(reached[key])} of {int(runs[key])} runs)"
            elif metric == "final_metric":
                fv = m["fngd_value"].dropna()
                what = f"final {quantity}" + (f" {fv.iloc[0]:.3g}" if len(fv) else "")
            else:
                what = header
            out.append(f"{head}, {what} ({how}): {clauses}.")
    return out


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """The page's small table: one row per setting, FNGD label and baseline."""
    if table.empty:
        return empty(SETTING + ["fngd", "against", "seeds"] + [m for m, _, _ in COMPARISONS])
    rows = []
    labelled = len(interval_labels(table)) > 1  # else the table's note names the one label
    for _, g in table.groupby(SETTING + ["optimizer", "baseline"], sort=False):
        first = g.iloc[0]
        row = {c: first[c] for c in SETTING}
        row.update(fngd=first["optimizer"], against=first["baseline"])
        row["seeds"] = int(g["seeds"].min())
        for _, r in g.iterrows():
            row[r["metric"]] = _ratio_text(r, labelled)
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------- train and test


def generalisation(ctx: Context) -> pd.DataFrame:
    """Each optimizer's final train loss beside its test loss, and the test metric (and the
    train metric where the records hold one: an eval record named ``train_<metric>``)."""
    fv = ctx.final
    if fv.empty:
        return empty(GENERALISATION)
    long = convergence_long(ctx.records)
    key = SETTING + OPT
    out = fv[key + ["runs", "metric"]].assign(
        train_loss=fv["train_loss_median"], test_metric=fv["metric_median"]
    )
    last = long.sort_values("epoch").groupby(["run", "quantity"], sort=False).tail(1)
    for name, column in (("eval_loss", "test_loss"), (None, "train_metric")):
        if name is None:
            metrics = metric_names(ctx.records)
            train = last["workload"].map({w: f"train_{m}" for w, m in metrics.items()})
            pick = last.loc[last["quantity"] == train]  # (a workload without a metric: none)
        else:
            pick = last.loc[last["quantity"] == name]
        if pick.empty:
            out[column] = math.nan
            continue
        med = pick.groupby(key, sort=False)["value"].median().rename(column).reset_index()
        out = out.merge(med, on=key, how="left")
    out["loss_gap"] = out["test_loss"] - out["train_loss"]
    return sort_rows(out)[GENERALISATION.csv]


# ------------------------------------------------------------------ performance profile


def profile_times(ctx: Context) -> pd.DataFrame:
    """Per setting and optimizer: the median time to the setting's (highest) target; inf
    when fewer than half its runs reached it, or it has no target record there."""
    t = ctx.targets
    if t.empty:
        return empty(PROFILE_TIMES)
    key = SETTING + OPT
    top = t.groupby(SETTING, sort=False)["target"].transform("max")
    t = t.loc[t["target"] == top]
    present = ctx.records.loc[ctx.records["kind"].isin(("epoch", "step")), key]
    present = present.drop_duplicates()
    targets = t[SETTING + ["target"]].drop_duplicates()
    out = present.merge(targets, on=SETTING).merge(
        t[key + ["median_s", "reached", "runs"]], on=key, how="left"
    )
    ok = out["reached"].fillna(0) * 2 >= out["runs"].fillna(1)
    out["seconds"] = out["median_s"].where(ok & out["median_s"].notna(), np.inf)
    out["reached"] = out["reached"].fillna(0).astype(int)
    return sort_rows(out)[PROFILE_TIMES.csv]


def profile_figure(profile: pd.DataFrame, times: pd.DataFrame) -> Figure | None:
    if profile.empty:
        return None
    labels = plot.opt_labels(times)
    pal = plot.palette(labels)
    n = times[SETTING].drop_duplicates().shape[0]
    with plot.style(), plot.context():
        fig = Figure(figsize=(plot.WIDTH * 0.8, 3.0), layout="constrained")
        ax = fig.subplots()
        for i, lab in enumerate(labels):
            g = profile.loc[profile["optimizer"] == lab].sort_values("tau")
            # a small vertical offset keeps optimizers with the same curve apart
            ax.step(
                g["tau"],
                g["fraction"] + 0.006 * (i - len(labels) / 2),
                where="post",
                color=pal[lab],
                label=lab,
                linewidth=1.8,
            )
        ax.set_xscale("log")
        ax.set_xlabel("τ: time to target ÷ the best optimizer's on that workload")
        ax.set_ylabel(f"fraction of {n} workload{'s' if n != 1 else ''}")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        plot.title(fig, "Performance profile (time to target)")
    return fig


# ----------------------------------------------------------------------------- section


def _summary_note(table: pd.DataFrame) -> str:
    """How the summary's intervals were computed: the one label every interval shares, or
    that each names its own."""
    labels = interval_labels(table)
    which = (
        f"Every interval here: {labels[0]}."
        if len(labels) == 1
        else "Each interval names its method and n beside it."
    )
    return (
        "Several seeds: the ratio of the runs' geometric means with a 95 % t-interval on the "
        "logs (paired by seed where both ran the same seeds, Welch's otherwise); each ran "
        "once: the ratio of medians over its steps or epochs with a 95 % percentile "
        f"bootstrap (approximate from fewer than {MIN_N} values: docs/STATISTICS.md). "
        f"n=1: one seed, no interval. {which}"
    )


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Each optimizer against SGD, per workload: right of 1 is better; a bar that crosses "
        "1 is no measurable difference.",
    )
    if ctx.empty:
        sec.missing.append(ctx.no_records())
        return sec
    present = set(ctx.records["family"])
    if FNGD not in present:
        sec.missing.append("No FNGD records: there is nothing to compare.")
    elif ctx.speed.empty:
        sec.missing.append("No baseline (KFAC, NGD, SGD, AdamW) records to compare FNGD with.")
    trees = forest.forest_table(ctx.records)
    sec.figure(forest.figure(trees), forest.TITLE, element_id="forest-plot", lead=True)
    sec.findings += forest.sentences(trees)
    sec.table("forest", "Forest plot", trees, (), show=False)
    table = verdict(ctx)
    sec.details += findings(table, ctx.targets)
    sec.notes += ctx.hygiene_flags
    sec.table(
        "verdict_summary",
        "FNGD against each baseline (ratio [95 % interval])",
        summary_table(table),
        VERDICT_SHOWN,
        note="Time ratios are the baseline's ÷ FNGD's (above 1× FNGD is faster), the final "
        "metric FNGD's ÷ the baseline's; an interval that contains 1 is no measurable "
        "difference. "
        + _summary_note(table)
        + " Time to target is training time only (the "
        "evaluation time is beside it in the speed-up section). ⚠: a run behind the ratio "
        "has a measurement flag (above). Every row with its interval and unit is in the "
        "verdict CSV.",
        drop_constant=("fngd",),
    )
    sec.table("verdict", "Verdict", table, (), show=False)
    gen = generalisation(ctx)
    if not gen.empty:
        sec.table(
            "generalisation",
            "Train and test (final epoch, median over runs)",
            gen,
            GENERALISATION.shown,
            note="Train loss: the last epoch's mean training loss; test loss and metric: the "
            "last evaluation. A large gap is the over-fitting second-order methods are known "
            "for.",
            drop_constant=("train_metric",),
        )
    times = profile_times(ctx)
    if not times.empty:
        frame = times.assign(
            workload=[setting_label(r) for _, r in times.iterrows()], optimizer=times["opt"]
        )
        prof = performance_profile(frame[["workload", "optimizer", "seconds"]])
        sec.table("profile_times", "Times behind the performance profile", times, (), show=False)
        sec.table("performance_profile", "Performance profile", prof, (), show=False)
        sec.figure(profile_figure(prof, times), "Performance profile")
    return sec
