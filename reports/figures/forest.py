"""The forest plot the report opens with: every optimizer against SGD on every workload, time
to target and final metric, each a ratio with its 95 % interval; its table; its three
sentences.

The reference of a setting (``common.SETTING``) is the label ``sgd``; where its records have
none, the first other baseline in the report's family order (``vocabulary.family_rank``,
never FNGD), and the figure, the table (``fallback``) and the words say so. Both ratios read
"right of 1 is better than the reference": time to target is the reference's time ÷ the
optimizer's; the final metric the optimizer's ÷ the reference's where higher is better, the
reference's ÷ the optimizer's where lower is (``common.higher_is_better``). One value per run
(seed): its training time to the setting's target (its ``target`` record; a run that never
reached the target has none, and an optimizer none of whose runs did is shown as not
reached) and its last evaluation of the metric; the interval is ``stats.ratio_interval``
over those values, and ``stats.difference`` says what it means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter
from matplotlib.transforms import blended_transform_factory

from reports import plot
from reports.common import (
    OPT,
    SETTING,
    SETTING_COLUMNS,
    cols,
    empty,
    higher_is_better,
    metric_names,
    numeric_value,
    seed_of,
    setting_label,
    sort_rows,
    strictest_target,
    training,
)
from reports.stats import Interval, difference, seeded_ratio_interval
from reports.tables.convergence import convergence_long
from reports.vocabulary import FNGD, display_name

#: The label every optimizer is compared with, where the setting has it.
REFERENCE = "sgd"
#: The two panels, left to right: (panel, title, what is compared).
PANELS = (
    ("time_to_target", "Time to target", "time to target"),
    ("final_metric", "Final metric", "final metric"),
)
#: ``stats.difference`` in the forest's direction (above 1 is better).
VERDICTS = {
    "higher": "better",
    "lower": "worse",
    "none": "no measurable difference",
    "unknown": "no interval",
}
#: A row's status: ``ok`` (a ratio), or why there is none.
NOT_REACHED = "not reached"
REFERENCE_NOT_REACHED = "reference not reached"
NEITHER_REACHED = "neither reached"
NO_VALUES = "no values"
FOREST = cols(
    SETTING_COLUMNS,
    "panel",
    "opt",
    "family",
    "optimizer",
    "reference",
    "reference_family",
    "fallback",
    "quantity",
    "higher_is_better",
    "target",
    "ratio",
    "ci_low",
    "ci_high",
    "n",
    "unit",
    "method",
    "verdict",
    "status",
    "runs",
    "reached",
    "reference_runs",
    "reference_reached",
    "value",
    "reference_value",
)
#: The figure's caption and alternative text.
TITLE = (
    "Forest plot: every optimizer's time to target and final metric against SGD, per "
    "workload (right of 1 is better)"
)
#: Inches per row of the figure (an optimizer, or a workload's header row), and around them.
ROW_INCHES = 0.25
FRAME_INCHES = 1.5
#: A setting's header takes this many rows (two lines of text).
HEADER_ROWS = 1.7
HEADER_BAND = "#eef1f5"
EDGE_COLOR = "0.3"


def _key(row: pd.Series, columns: list[str]) -> tuple:
    return tuple(row[c] for c in columns)


def reference(members: pd.DataFrame) -> tuple[pd.Series | None, bool]:
    """A setting's reference among its optimizers (``members``, in display order) and
    whether it is a fallback: the label ``sgd``, else the first baseline (not FNGD)."""
    sgd = members.loc[members["optimizer"] == REFERENCE]
    if not sgd.empty:
        return sgd.iloc[0], False
    others = members.loc[members["family"] != FNGD]
    return (others.iloc[0], True) if not others.empty else (None, False)


@dataclass(frozen=True)
class Runs:
    """One optimizer's values in one setting, a value per run, and each run's seed (what
    pairs two optimizers' runs)."""

    values: np.ndarray
    seeds: tuple

    def __len__(self) -> int:
        return len(self.values)


def _per_run(frame: pd.DataFrame, value: str, seeds: dict) -> dict[tuple, Runs]:
    """(setting..., opt columns) -> one value per run (its first), with each run's seed
    (``seeds``: run -> seed; a run without one is its own)."""
    if frame.empty:
        return {}
    first = frame.groupby(SETTING + OPT + ["run"], sort=False)[value].first().reset_index()
    return {
        k: Runs(g[value].to_numpy(float), tuple(seeds.get(r, r) for r in g["run"]))
        for k, g in first.groupby(SETTING + OPT, sort=False)
    }


def _targets(df: pd.DataFrame) -> tuple[dict[tuple, float], dict[tuple, Runs]]:
    """Per setting its target (the strictest its records name, ``strictest_target``), and
    per optimizer one time to it per run that reached it (the earliest record of the run)."""
    t = df.loc[(df["kind"] == "target") & df["seconds"].notna()] if not df.empty else df
    if t.empty:
        return {}, {}
    t = t.assign(target=numeric_value(t)).dropna(subset=["target"])
    higher = higher_is_better(df)
    setting_target = {
        k if isinstance(k, tuple) else (k,): strictest_target(
            g["target"], higher.get(g["workload"].iloc[0], True)
        )
        for k, g in t.groupby(SETTING, sort=False)
    }
    strictest = [setting_target.get(tuple(r), math.nan) for r in t[SETTING].itertuples(index=False)]
    at = t.loc[t["target"].to_numpy(float) == np.asarray(strictest, float)]
    at = at.sort_values("seconds")
    return setting_target, _per_run(at, "seconds", seed_of(df))


def _finals(df: pd.DataFrame) -> dict[tuple, Runs]:
    """Per optimizer, each run's last evaluation of its workload's metric."""
    long = convergence_long(df)
    if long.empty:
        return {}
    metrics = metric_names(df)
    long = long.loc[long["quantity"] == long["workload"].map(metrics)]
    last = long.sort_values("epoch").groupby("run", sort=False).tail(1)
    return _per_run(last, "value", seed_of(df))


def _median(runs: Runs | None) -> float:
    return float(np.median(runs.values)) if runs is not None and len(runs) else math.nan


def _row(base: dict, panel: str, ref: Runs | None, opt: Runs | None, swap: bool) -> dict:
    """One row: ``ref`` ÷ ``opt`` (``swap``: ``opt`` ÷ ``ref``) with its interval, or why not."""
    row = dict(base, panel=panel, value=_median(opt), reference_value=_median(ref))
    has_ref, has_opt = ref is not None and len(ref) > 0, opt is not None and len(opt) > 0
    row.update(
        ratio=math.nan, ci_low=math.nan, ci_high=math.nan, n=0, unit="", method="", verdict=""
    )
    if panel == "time_to_target":
        row["reached"] = len(opt) if has_opt else 0
        row["reference_reached"] = len(ref) if has_ref else 0
    if not (has_ref and has_opt):
        if panel != "time_to_target":
            row["status"] = NO_VALUES
        elif has_opt:
            row["status"] = REFERENCE_NOT_REACHED
        else:
            row["status"] = NOT_REACHED if has_ref else NEITHER_REACHED
        return row
    num, den = (opt, ref) if swap else (ref, opt)
    iv = seeded_ratio_interval(num.values, num.seeds, den.values, den.seeds)
    row.update(
        ratio=iv.estimate,
        ci_low=iv.low,
        ci_high=iv.high,
        n=iv.n,
        unit=iv.unit,
        method=iv.method,
        status="ok",
    )
    row["verdict"] = VERDICTS[difference(iv)] if not math.isnan(iv.estimate) else ""
    return row


def forest_table(df: pd.DataFrame) -> pd.DataFrame:
    """Two rows (one per panel) per setting and optimizer other than the setting's reference:
    the ratio (above 1: better than the reference), its interval and what it means.

    ``df``: the prepared records (``common.prepare``). A setting without a baseline to
    compare with has no rows.
    """
    trained = training(df[["kind", "run"] + SETTING + OPT]) if not df.empty else df
    if trained.empty:
        return empty(FOREST)
    runs = trained.groupby(SETTING + OPT, sort=False)["run"].nunique()
    members = sort_rows(runs.reset_index()[SETTING + OPT])
    setting_target, times = _targets(df)
    finals = _finals(df)
    metrics, higher = metric_names(df), higher_is_better(df)
    rows = []
    for setting, g in members.groupby(SETTING, sort=False):
        ref, fallback = reference(g)
        if ref is None:
            continue
        rk = _key(ref, SETTING + OPT)
        hib = higher.get(ref["workload"], True)
        for _, m in g.iterrows():
            mk = _key(m, SETTING + OPT)
            if mk == rk:
                continue
            base = dict(zip(SETTING, setting, strict=True))
            base.update(
                opt=m["opt"],
                family=m["family"],
                optimizer=m["optimizer"],
                reference=ref["opt"],
                reference_family=ref["family"],
                fallback=fallback,
                quantity=metrics.get(m["workload"], ""),
                higher_is_better=hib,
                target=setting_target.get(tuple(setting), math.nan),
                runs=int(runs[mk]),
                reference_runs=int(runs[rk]),
                reached=math.nan,
                reference_reached=math.nan,
            )
            rows.append(_row(base, "time_to_target", times.get(rk), times.get(mk), False))
            rows.append(_row(base, "final_metric", finals.get(rk), finals.get(mk), hib))
    if not rows:
        return empty(FOREST)
    return pd.DataFrame(rows, columns=FOREST.csv)


# ------------------------------------------------------------------------------- figure


def _ticks(lo: float, hi: float) -> list[float]:
    """Log-axis ticks between ``lo`` and ``hi``: the coarsest of 1-2-5-like series that gives
    at least four, thinned to at most eight."""
    series = (
        (1.0,),
        (1.0, 2.0, 5.0),
        (1.0, 1.5, 2.0, 3.0, 5.0, 7.0),
        (1.0, 1.1, 1.2, 1.3, 1.5, 1.7, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0),
    )
    ticks: list[float] = []
    for mantissas in series:
        powers = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
        ticks = sorted({float(f"{m * 10.0**k:.6g}") for k in powers for m in mantissas})
        ticks = [t for t in ticks if lo <= t <= hi]
        if len(ticks) >= 4:
            break
    while len(ticks) > 8:
        one = ticks.index(1.0) if 1.0 in ticks else 0
        ticks = [t for i, t in enumerate(ticks) if (i - one) % 2 == 0]
    return ticks


def _limits(frame: pd.DataFrame) -> tuple[float, float]:
    """The x range of one panel: every point and bound, 1, and room at both ends."""
    values = frame[["ratio", "ci_low", "ci_high"]].to_numpy(float).ravel()
    values = values[np.isfinite(values) & (values > 0)]
    lo = min([1.0, *values]) if len(values) else 1.0
    hi = max([1.0, *values]) if len(values) else 1.0
    lo, hi = min(lo / 1.3, 1 / 1.25), max(hi * 1.3, 1.25)
    return lo, hi


def _header(first: pd.Series) -> tuple[str, str]:
    """A workload's header: the setting, then the reference, the target and the metric's
    direction."""
    runs, reached = int(first["reference_runs"]), first["reference_reached"]
    some = "" if math.isnan(reached) or reached >= runs else f", {int(reached)} reached the target"
    ref_text = f"against {first['reference']} (n={runs}{some})"
    if first["fallback"]:
        ref_text += f": no {REFERENCE} in these records"
    quantity = first["quantity"] or "metric"
    side = "≥" if first["higher_is_better"] else "≤"
    target = (
        "" if math.isnan(first["target"]) else f" · target {quantity} {side} {first['target']:g}"
    )
    better = "higher" if first["higher_is_better"] else "lower"
    return setting_label(first), f"{ref_text}{target} · {quantity}: {better} is better"


def _layout(table: pd.DataFrame) -> tuple[list[tuple[float, str, pd.Series]], float]:
    """Each line of the figure top down, (y, ``header`` or ``row``, its first table row),
    and the bottom: a setting's two-line header, then one row per optimizer."""
    lines, y = [], 0.0
    timed = table.loc[table["panel"] == "time_to_target"]  # a row per optimizer, reached counts
    for _, g in timed.groupby(SETTING, sort=False):
        lines.append((y + HEADER_ROWS / 2 - 0.5, "header", g.iloc[0]))
        y += HEADER_ROWS
        for _, r in g.iterrows():
            lines.append((y, "row", r))
            y += 1.0
    return lines, y - 0.5


def _draw_row(ax, y: float, r: pd.Series, color: str, lo: float, hi: float) -> None:
    """One optimizer's ratio in one panel: the interval as a bar with the point, or at the
    edge why there is none."""
    status = r["status"]
    ref = r["reference"]
    text = dict(fontsize=7, va="center", color=color)
    if status == "ok" and not math.isnan(r["ratio"]):
        if not (math.isnan(r["ci_low"]) or math.isnan(r["ci_high"])):
            ax.hlines(y, r["ci_low"], r["ci_high"], color=color, linewidth=2.6, zorder=3)
            ax.plot(r["ratio"], y, "o", color=color, mec=EDGE_COLOR, mew=0.6, ms=6, zorder=4)
        else:  # one seed on a side: the point, hollow, without a bar
            ax.plot(r["ratio"], y, "o", color=color, mfc="white", mew=1.6, ms=6, zorder=4)
        if r["panel"] == "time_to_target" and r["reached"] < r["runs"]:
            right = r["ci_high"] if not math.isnan(r["ci_high"]) else r["ratio"]
            ax.text(right * 1.06, y, f"{int(r['reached'])} of {int(r['runs'])} reached", **text)
    elif status == NOT_REACHED:
        ax.plot(lo * 1.05, y, "<", color=color, ms=7, zorder=4, clip_on=False)
        ax.text(lo * 1.13, y, f"not reached (0 of {int(r['runs'])} runs)", **text)
    elif status == REFERENCE_NOT_REACHED:
        ax.plot(hi / 1.05, y, ">", color=color, ms=7, zorder=4, clip_on=False)
        ax.text(hi / 1.13, y, f"reached; {ref} did not", ha="right", **text)
    elif status == NEITHER_REACHED:
        ax.text(
            lo * 1.05, y, f"neither it nor {ref} reached the target", **{**text, "color": "0.4"}
        )
    else:
        ax.text(lo * 1.05, y, "no values", **{**text, "color": "0.4"})


def figure(table: pd.DataFrame) -> Figure | None:
    """The forest plot of ``forest_table``: time to target | final metric, rows grouped by
    setting, one per optimizer; ``None`` without rows."""
    if table.empty:
        return None
    pal = plot.palette(plot.opt_labels(table))
    lines, bottom = _layout(table)
    fallback = bool(table["fallback"].any())
    ref, ref_word = ("the reference", "the reference's") if fallback else ("SGD", "SGD's")
    height = FRAME_INCHES + ROW_INCHES * (bottom + 0.5)
    with plot.style(), plot.context():
        fig = Figure(figsize=(plot.WIDTH, height), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        for ax, (panel, title, _what) in zip(axes, PANELS, strict=True):
            rows = table.loc[table["panel"] == panel]
            lo, hi = _limits(rows)
            ax.set_xscale("log")
            ax.set_xlim(lo, hi)
            ticks = _ticks(lo, hi)
            ax.set_xticks(ticks, [f"{t:g}×" for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())  # the major ticks are named
            ax.axvline(1.0, color=EDGE_COLOR, linestyle="--", linewidth=1.0, zorder=2)
            ax.grid(axis="y", visible=False)
            ax.set_title(title, fontsize=9)
            by_key = {_key(r, SETTING + ["opt"]): r for _, r in rows.iterrows()}
            for y, kind, first in lines:
                if kind == "header":
                    half = HEADER_ROWS / 2
                    ax.axhspan(y - half, y + half, color=HEADER_BAND, zorder=0, linewidth=0)
                    continue
                r = by_key.get(_key(first, SETTING + ["opt"]))
                if r is not None:
                    _draw_row(ax, y, r, pal[r["opt"]], lo, hi)
        left, right = axes
        # a header runs across the figure from its left edge (over both panels: a figure
        # text, drawn after the axes), outside the layout's sums
        across = blended_transform_factory(fig.transFigure, left.transData)
        for y, kind, first in lines:
            if kind != "header":
                continue
            setting, info = _header(first)
            color = plot.SYNTHETIC_COLOR if first["data_source"] == "synthetic" else "black"
            text = fig.text(
                0.01, y, f"{setting}\n{info}", transform=across, ha="left", va="center",
                fontsize=7.5, linespacing=1.35, color=color, zorder=5,
                bbox=dict(facecolor=HEADER_BAND, edgecolor="none", pad=0.5),
            )  # fmt: skip
            text.set_in_layout(False)
        rows = [(y, r) for y, kind, r in lines if kind == "row"]
        left.set_yticks([y for y, _ in rows], [f"{r['opt']}  n={int(r['runs'])}" for _, r in rows])
        for tick, (_y, r) in zip(left.get_yticklabels(), rows, strict=True):
            tick.set_color(pal[r["opt"]])
        left.set_ylim(bottom, -0.5)
        left.set_xlabel(
            f"{ref_word} time ÷ the optimizer's\n← slower than {ref} · faster than {ref} →",
            fontsize=8,
        )
        right.set_xlabel(
            f"the optimizer's ÷ {ref_word}, flipped where lower is better\n"
            f"← worse than {ref} · better than {ref} →",
            fontsize=8,
        )
        fig.legend(
            handles=_legend_handles(),
            loc="outside lower center",
            ncol=4,
            fontsize=7,
            frameon=False,
        )
        where = " (against the first baseline where no SGD ran)" if fallback else ""
        plot.title(fig, f"Every optimizer against SGD, per workload{where}")
    return fig


def _legend_handles() -> list[Line2D]:
    grey = "0.35"
    return [
        Line2D([], [], color=grey, marker="o", mec=EDGE_COLOR, linewidth=2.6,
               label="ratio of geometric means, 95 % t interval"),
        Line2D([], [], color=grey, marker="o", mfc="white", linewidth=0,
               label="one seed: no interval"),
        Line2D([], [], color=grey, marker="<", linewidth=0, label="target never reached"),
        Line2D([], [], color=EDGE_COLOR, linestyle="--", linewidth=1.0,
               label="1×: no difference"),
    ]  # fmt: skip


# ------------------------------------------------------------------------------- words


def _places(table: pd.DataFrame) -> dict[tuple, str]:
    """setting -> how the words name it: the workload with its size, and what else tells its
    settings apart where one workload ran in several (``mlp-digits (small, batch 64)``)."""
    settings = table[SETTING].drop_duplicates()
    out = {}
    for _, g in settings.groupby("workload", sort=False):
        varies = [c for c in SETTING if g[c].nunique(dropna=False) > 1]
        for _, s in g.iterrows():
            parts = [str(s["size"])] if s["size"] else []
            if "device_name" in varies:
                parts.append(str(s["device_name"]))
            if "world_size" in varies:
                parts.append(f"{int(s['world_size'])} processes")
            if "batch_size" in varies:
                parts.append(f"batch {int(s['batch_size'])}")
            if "data_source" in varies:
                parts.append(f"{s['data_source']} data")
            inside = f" ({', '.join(parts)})" if parts else ""
            out[_key(s, SETTING)] = f"{s['workload']}{inside}"
    return out


def _ratio(r: pd.Series, what: str = "") -> str:
    """``2.00× [1.90, 2.10]`` (``what`` after the ratio), or why there is no interval."""
    iv = Interval(
        r["ratio"], r["ci_low"], r["ci_high"], int(r["n"]), str(r["unit"]), str(r["method"])
    )
    text, ratio = iv.described(), f"{r['ratio']:.2f}×{what}"
    return f"{ratio} {text}" if text.startswith("[") else f"{ratio}, {text}"


def _where(r: pd.Series, places: dict[tuple, str]) -> str:
    """The setting's name, and its reference where that is not SGD."""
    place = places[_key(r, SETTING)]
    return f"{place} against {r['reference']}" if r["fallback"] else place


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _by_place(rows: pd.DataFrame, places: dict[tuple, str]) -> str:
    """``A: x 2.00× [1.9, 2.1], y 0.50× [0.4, 0.6]; B: x ...``: each row under its setting."""
    said: dict[str, list[str]] = {}
    for _, r in rows.iterrows():
        entry = f"{r['opt']} {_ratio(r)}" if r["status"] == "ok" else str(r["opt"])
        said.setdefault(_where(r, places), []).append(entry)
    return "; ".join(f"{place}: {', '.join(entries)}" for place, entries in said.items())


def _soonest(table: pd.DataFrame, places: dict[tuple, str]) -> str:
    itself: dict[str, list[str]] = {}
    parts = []
    for _, g in table.loc[table["panel"] == "time_to_target"].groupby(SETTING, sort=False):
        first = g.iloc[0]
        where, ref = places[_key(first, SETTING)], first["reference"]
        ok = g.loc[g["value"].notna() & (2 * g["reached"] >= g["runs"])]
        ref_ok = not math.isnan(first["reference_value"]) and (
            2 * first["reference_reached"] >= first["reference_runs"]
        )
        best = ok.loc[ok["value"].idxmin()] if not ok.empty else None
        if ref_ok and (best is None or first["reference_value"] <= best["value"]):
            itself.setdefault(ref, []).append(where)
        elif best is None:
            parts.append(f"none on {where} (no optimizer reached it in half its runs)")
        elif best["status"] != "ok":
            parts.append(f"{best['opt']} on {where}, where {ref} did not reach it")
        else:
            meaning = "" if best["verdict"] == "better" else f", {best['verdict']}"
            parts.append(f"{best['opt']} on {where} at {_ratio(best, f' {ref}’s speed')}{meaning}")
    parts += [f"{ref} itself on {_and(where)}" for ref, where in itself.items()]
    return "Soonest to the target: " + "; ".join(parts) + "." if parts else ""


#: What FNGD's time-to-target rows are said as, in the order said.
_FNGD_SAID = {
    "better": "faster",
    "no measurable difference": "no measurable difference",
    "worse": "slower",
    "no interval": "no interval",
    NOT_REACHED: "never reached the target",
    REFERENCE_NOT_REACHED: "reached the target where the reference did not",
    NEITHER_REACHED: "neither it nor the reference reached the target",
}


def _fngd(table: pd.DataFrame, places: dict[tuple, str]) -> str:
    rows = table.loc[(table["family"] == FNGD) & (table["panel"] == "time_to_target")]
    if rows.empty:
        return "There are no FNGD runs to place against SGD."
    outcome = rows["verdict"].where(rows["status"] == "ok", rows["status"])
    parts = [
        f"{said} on {_by_place(rows.loc[outcome == key], places)}"
        for key, said in _FNGD_SAID.items()
        if (outcome == key).any()
    ]
    return f"{display_name(FNGD)} against SGD, time to target — " + " — ".join(parts) + "."


def _metric(table: pd.DataFrame, places: dict[tuple, str]) -> str:
    rows = table.loc[table["panel"] == "final_metric"]
    if rows.empty:
        return ""
    ok = rows.loc[rows["status"] == "ok"]
    same = int((ok["verdict"] == "no measurable difference").sum())
    open_ = len(rows) - len(ok) + int((ok["verdict"] == "no interval").sum())
    parts = [
        f"{v} on {_by_place(ok.loc[ok['verdict'] == v], places)}"
        for v in ("better", "worse")
        if (ok["verdict"] == v).any()
    ]
    rest = f"no measurable difference in {same} of {len(rows)} comparisons"
    rest += f", no interval in {open_}" if open_ else ""
    if not parts:
        return f"Final metric: no optimizer differs measurably from SGD ({rest})."
    return "Final metric against SGD — " + " — ".join(parts) + f" — {rest}."


def sentences(table: pd.DataFrame) -> list[str]:
    """At most three sentences from ``forest_table``: who reached the target soonest on each
    workload, where FNGD stands, and the final-metric picture."""
    if table.empty:
        return []
    places = _places(table)
    out = [_soonest(table, places), _fngd(table, places), _metric(table, places)]
    return [s for s in out if s]
