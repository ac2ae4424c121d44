"""FNGD's design space: coefficient scope x sharing x damping strategy against step time,
later-epoch cost, final metric and time to target; and how stale reused coefficients get.

Each NGD/FNGD cell's design is read from its recorded hyperparameters (``design_of``), not
from its label: ``scope`` (one vector per layer or for the whole network), ``sharing`` (by
sample, by iteration, or none: exact NGD) and the damping (constant, relative, normalised
coefficients, a schedule). The times are ratios to SGD in the same setting: the median
weighted-sum step (the step FNGD's later epochs take) and the median later epoch; their
quotient says what a later epoch pays beyond its steps. The staleness records (written by
``bench.cell.staleness``) compare, on one fixed probe batch, the direction the stored
coefficients give with a fresh solve: cosine and ``||stored|| / ||fresh||``.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bench.labels import NGD_LABELS, VARIANTS, damping_strategy
from reports import plot
from reports.common import (
    OPT,
    OPT_COLUMNS,
    SETTING,
    SETTING_COLUMNS,
    col,
    cols,
    empty,
    numeric_value,
    ratio,
    select,
    sort_rows,
    target_hardness,
)
from reports.section import Section
from reports.vocabulary import (
    DAMPING_DASHES,
    DAMPINGS,
    DESIGN_COLORS,
    SCOPES,
    SHARE_DISPLAY,
    SHARES,
)

if TYPE_CHECKING:
    from reports.context import Context

ID = "design-space"
TITLE = "FNGD design space"

#: The families whose design the table lays out (those of the scope x sharing x damping
#: labels), and the reference they are divided by.
DESIGN_FAMILIES = tuple(dict.fromkeys(VARIANTS[label].family for label in NGD_LABELS))
REFERENCE = "sgd"
#: The staleness key of the whole network (``fngd.preconditioner.NETWORK``).
NETWORK = "network"

DESIGN = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    col("scope", "scope"),
    col("sharing", "sharing"),
    col("damping", "damping"),
    "damping_strategy",
    col("ws_step_s", "weighted-sum step (ms)", "ms"),
    col("ws_step_ratio", "step ×SGD", "ratio"),
    col("later_epoch_s", "later epoch (s)", "s"),
    col("later_epoch_ratio", "later epoch ×SGD", "ratio"),
    col("epoch_over_step", "epoch ÷ step ratio", "ratio"),
    col("runs", "runs", "int"),
    col("diverged", "diverged", "int"),
    col("metric", "metric"),
    col("metric_median", "final metric", "g"),
    col("metric_min", "min", "g"),
    col("metric_max", "max", "g"),
    col("target", "target", "g"),
    col("reached", "runs reached", "int"),
    col("time_to_target_s", "time to target (s)", "s"),
)
STALENESS = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    "scope",
    "sharing",
    "damping_strategy",
    col("key", "block"),
    col("epoch", "epoch", "int"),
    col("n", "runs", "int"),
    col("cosine_median", "cosine", "g"),
    col("cosine_min", "min", "g"),
    col("cosine_max", "max", "g"),
    col("norm_ratio_median", "norm ratio", "g"),
    col("norm_ratio_min", "min", "g"),
    col("norm_ratio_max", "max", "g"),
)
STALENESS_SUMMARY = cols(
    SETTING_COLUMNS,
    OPT_COLUMNS,
    col("key", "block"),
    col("first_epoch", "first probe", "int"),
    col("first_cosine", "cosine", "g"),
    col("last_epoch", "last probe", "int"),
    col("last_cosine", "cosine", "g"),
    col("min_cosine", "lowest cosine", "g"),
    col("last_norm_ratio", "norm ratio (last)", "g"),
)


# -- the design of a cell ------------------------------------------------------------------


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def design_of(hp: dict[str, Any], family: str) -> dict[str, str]:
    """A cell's place in the design space, from its recorded hyperparameters."""
    if family not in DESIGN_FAMILIES:
        return {"scope": "", "sharing": "", "damping": "", "damping_strategy": ""}
    damping = hp.get("damping")
    strategy = damping_strategy(hp)
    text = f"{float(damping):g}" if _is_number(damping) else str(damping)
    if strategy != "constant":
        text = f"{strategy}: {text}" if "schedule" not in strategy else f"{strategy} {text}"
    share = "none" if family == "ngd" else str(hp.get("share", "sample"))
    return {
        "scope": str(hp.get("scope", "layer")),
        "sharing": share,
        "damping": text,
        "damping_strategy": strategy,
    }


def designs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, optimizer) of the design families and SGD, with its design."""
    key = SETTING + OPT
    if df.empty:
        return empty(key + ["scope", "sharing", "damping", "damping_strategy"])
    rows = df.loc[df["family"].isin((*DESIGN_FAMILIES, REFERENCE))]
    rows = rows.drop_duplicates(subset=key, keep="last")
    out = []
    for _, r in rows.iterrows():
        hp = json.loads(r["hparams_json"] or "{}")
        out.append({**{k: r[k] for k in key}, **design_of(hp, r["family"])})
    return pd.DataFrame(out, columns=key + ["scope", "sharing", "damping", "damping_strategy"])


def _design_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by setting, then SGD, then scope, sharing and damping in the vocabulary's order."""

    def rank(values: tuple[str, ...], v: object) -> int:
        return values.index(v) if v in values else len(values)

    tmp = frame.assign(
        _ref=frame["family"] != REFERENCE,
        _scope=frame["scope"].map(lambda v: rank(SCOPES, v)),
        _share=frame["sharing"].map(lambda v: rank(SHARES, v)),
        _damp=frame["damping_strategy"].map(lambda v: rank(DAMPINGS, v)),
    )
    tmp = sort_rows(tmp)
    tmp = tmp.sort_values(
        [c for c in SETTING if c in tmp.columns] + ["_ref", "_scope", "_share", "_damp", "opt"],
        kind="stable",
    )
    return tmp.drop(columns=["_ref", "_scope", "_share", "_damp"]).reset_index(drop=True)


# -- the table -----------------------------------------------------------------------------


def _by_key(frame: pd.DataFrame) -> dict[tuple, pd.Series]:
    if frame.empty:
        return {}
    return {tuple(r[c] for c in SETTING + OPT): r for _, r in frame.iterrows()}


def _reference(frame: pd.DataFrame, column: str) -> dict[tuple, float]:
    """SGD's ``column`` per setting (the first SGD label in display order)."""
    if frame.empty or column not in frame.columns:
        return {}
    ref = sort_rows(frame.loc[frame["family"] == REFERENCE])
    return {
        tuple(r[c] for c in SETTING): r[column]
        for _, r in ref.drop_duplicates(subset=SETTING, keep="first").iterrows()
    }


def _diverged(df: pd.DataFrame) -> dict[tuple, int]:
    if df.empty:
        return {}
    d = df.loc[(df["kind"] == "cell") & (df["name"] == "diverged")]
    return {k: int(v) for k, v in d.groupby(SETTING + OPT, sort=False)["run"].nunique().items()}


def design_space(
    df: pd.DataFrame,
    steps: pd.DataFrame,
    epochs: pd.DataFrame,
    final: pd.DataFrame,
    targets: pd.DataFrame,
) -> pd.DataFrame:
    """Scope x sharing x damping against time (÷ SGD), final metric and time to target.

    ``ws_step_ratio``: median weighted-sum step ÷ SGD's median step; ``later_epoch_ratio``:
    median later epoch ÷ SGD's; ``epoch_over_step`` their quotient (1: a later epoch pays
    only for its steps). Final metric: median, min and max over runs of the last eval;
    time to target: median over the runs that reached its strictest target.
    """
    base = designs(df)
    if base.empty:
        return empty(DESIGN)
    ws = steps.loc[steps["mode"] == "weighted_sum"] if not steps.empty else steps
    ws_of = _by_key(ws)
    sgd_step = _reference(
        steps.loc[steps["mode"] == "all"] if not steps.empty else steps, "median_s"
    )
    epoch_of = _by_key(epochs)
    sgd_epoch = _reference(epochs, "later_median_s")
    final_of = _by_key(final)
    top = targets
    if not targets.empty:  # each optimizer's strictest target last (``target_hardness``)
        pairs = zip(targets["target"], targets["higher_is_better"], strict=True)
        hardness = [target_hardness(t, bool(h)) for t, h in pairs]
        top = targets.assign(_h=hardness).sort_values("_h")
        top = top.drop_duplicates(subset=SETTING + OPT, keep="last").drop(columns="_h")
    target_of = _by_key(top)
    diverged = _diverged(df)
    rows = []
    for _, r in base.iterrows():
        k = tuple(r[c] for c in SETTING + OPT)
        s = tuple(r[c] for c in SETTING)
        row = r.to_dict()
        w, e, f, t = ws_of.get(k), epoch_of.get(k), final_of.get(k), target_of.get(k)
        row["ws_step_s"] = math.nan if w is None else w["median_s"]
        row["ws_step_ratio"] = ratio(row["ws_step_s"], sgd_step.get(s))
        row["later_epoch_s"] = math.nan if e is None else e["later_median_s"]
        row["later_epoch_ratio"] = ratio(row["later_epoch_s"], sgd_epoch.get(s))
        row["epoch_over_step"] = ratio(row["later_epoch_ratio"], row["ws_step_ratio"])
        row["runs"] = 0 if f is None or pd.isna(f["runs"]) else int(f["runs"])
        row["diverged"] = diverged.get(k, 0)
        for c in ("metric", "metric_median", "metric_min", "metric_max"):
            row[c] = math.nan if f is None else f[c]
        row["target"] = math.nan if t is None else t["target"]
        row["reached"] = 0 if t is None else int(t["reached"])
        row["time_to_target_s"] = math.nan if t is None else t["median_s"]
        rows.append(row)
    return _design_order(pd.DataFrame(rows))[DESIGN.csv]


# -- staleness -----------------------------------------------------------------------------


def staleness(df: pd.DataFrame) -> pd.DataFrame:
    """Cosine and norm ratio per (setting, optimizer, key, epoch): median, min, max over runs."""
    s = df.loc[df["kind"] == "staleness"] if not df.empty else df
    if s.empty:
        return empty(STALENESS)
    s = s.assign(key=s["name"], cosine=numeric_value(s), norm_ratio=s["norm_ratio"])
    s = s.drop_duplicates(subset=SETTING + OPT + ["run", "key", "epoch"], keep="last")
    g = s.groupby(SETTING + OPT + ["key", "epoch"], sort=False)
    out = g.agg(
        n=("run", "nunique"),
        cosine_median=("cosine", "median"),
        cosine_min=("cosine", "min"),
        cosine_max=("cosine", "max"),
        norm_ratio_median=("norm_ratio", "median"),
        norm_ratio_min=("norm_ratio", "min"),
        norm_ratio_max=("norm_ratio", "max"),
    ).reset_index()
    out = out.merge(designs(df), on=SETTING + OPT, how="left")
    out["_net"] = out["key"] != NETWORK  # the whole network first, then the blocks
    out = sort_rows(out, extra=["_net", "key", "epoch"]).drop(columns="_net")
    return out[STALENESS.csv]


def staleness_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, optimizer, key): the cosine at the first and last probe, the lowest
    median cosine, and the last norm ratio."""
    if table.empty:
        return empty(STALENESS_SUMMARY)
    key = SETTING + OPT + ["key"]
    ordered = table.sort_values("epoch", kind="stable")
    g = ordered.groupby(key, sort=False)
    first, last = g.head(1).set_index(key), g.tail(1).set_index(key)
    out = pd.DataFrame(
        {
            "first_epoch": first["epoch"],
            "first_cosine": first["cosine_median"],
            "last_epoch": last["epoch"],
            "last_cosine": last["cosine_median"],
            "min_cosine": g["cosine_median"].min(),
            "last_norm_ratio": last["norm_ratio_median"],
        }
    ).reset_index()
    order = {k: i for i, k in enumerate(table[key].drop_duplicates().itertuples(index=False))}
    out["_o"] = [order[tuple(r)] for r in out[key].itertuples(index=False)]
    return out.sort_values("_o").drop(columns="_o").reset_index(drop=True)[STALENESS_SUMMARY.csv]


#: The staleness figure's legend sits beside the axes up to this many lines, else below.
LEGEND_BESIDE_MAX = 8
LEGEND_COLUMNS = 4


def _style(row: pd.Series) -> tuple[tuple, tuple[float, ...]]:
    """(colour, dashes) of an optimizer's line: colour by scope x sharing, dash by damping."""
    colors = sns.color_palette("colorblind", 10)
    idx = DESIGN_COLORS.get((row["scope"], row["sharing"]), 7)
    strategy = str(row["damping_strategy"]).split(" + ")[-1]
    return colors[idx], DAMPING_DASHES.get(strategy, ())


def staleness_figure(table: pd.DataFrame, setting: pd.Series) -> Figure | None:
    """The whole network's cosine and norm ratio against epoch, one line per optimizer."""
    t = select(table, setting)
    t = t.loc[t["key"] == NETWORK] if not t.empty else t
    if t.empty:
        return None
    with plot.style(), plot.context():
        labels = plot.opt_labels(t)
        # Many variants (the ablation has 24): the legend goes below, in columns, and the
        # figure grows with it instead of squeezing the axes.
        below = len(labels) > LEGEND_BESIDE_MAX
        rows = math.ceil(len(labels) / LEGEND_COLUMNS) if below else 0
        fig = Figure(figsize=(plot.WIDTH, 3.8 + 0.22 * rows), layout="constrained")
        ax_cos, ax_norm = fig.subplots(1, 2)
        for opt in labels:
            g = t.loc[t["opt"] == opt].sort_values("epoch")
            color, dashes = _style(g.iloc[0])
            for ax, c in ((ax_cos, "cosine"), (ax_norm, "norm_ratio")):
                ax.plot(
                    g["epoch"], g[f"{c}_median"], color=color, dashes=dashes, marker=".", label=opt
                )
                if (g[f"{c}_max"] > g[f"{c}_min"]).any():
                    ax.fill_between(
                        g["epoch"], g[f"{c}_min"], g[f"{c}_max"], color=color, alpha=0.12, lw=0
                    )
        ax_cos.set_ylabel("cosine(stored, fresh)")
        ax_norm.set_ylabel("‖stored‖ / ‖fresh‖ (log)")
        ax_norm.set_yscale("log")  # stale norms are off by factors, both ways
        ax_norm.axhline(1.0, color="0.6", lw=0.8)
        for ax in (ax_cos, ax_norm):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if below:
            handles, names = ax_norm.get_legend_handles_labels()
            fig.legend(handles, names, fontsize=7, loc="outside lower center", ncol=LEGEND_COLUMNS)
        else:
            ax_norm.legend(title="", fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        plot.title(
            fig, "Staleness of stored coefficients, whole network (median; band: min–max)", setting
        )
    return fig


# -- the section ---------------------------------------------------------------------------


def section(ctx: Context) -> Section:
    sec = Section(
        ID,
        TITLE,
        "Where each NGD/FNGD variant sits in the design space, read from its recorded "
        "hyperparameters: the coefficient scope (one vector per layer, or one for the whole "
        "network), how coefficients are shared (by sample, by iteration; none is exact NGD) "
        "and the damping (constant, relative to the Gram's mean eigenvalue, normalised "
        "coefficients, a schedule). Times are ratios to SGD in the same setting; "
        "'epoch ÷ step ratio' above 1 means a later epoch pays for more than its steps. "
        "Final metric: median over runs with min and max. Sharing: "
        + ", ".join(f"{k} = {v}" for k, v in SHARE_DISPLAY.items())
        + ". Staleness: on one fixed probe batch, the direction the stored coefficients give "
        "against a fresh solve at the current weights (cosine 1 and norm ratio 1: not stale).",
    )
    df = ctx.records
    if ctx.empty:
        sec.missing.append(ctx.no_records())
        return sec
    table = design_space(df, ctx.steps, ctx.epochs, ctx.final, ctx.targets)
    if table.empty or not table["family"].isin(DESIGN_FAMILIES).any():
        sec.missing.append("No NGD or FNGD cells, so no design space to show.")
    else:
        sec.table("design_space", "Scope × sharing × damping", table, DESIGN.shown)
    stale = staleness(df)
    if stale.empty:  # records from before the probe, or no FNGD cell that stores coefficients
        sec.notes.append(
            "No 'staleness' records here, so the staleness of stored coefficients is not shown."
        )
    else:
        sec.table(
            "staleness_summary",
            "Staleness by block",
            staleness_summary(stale),
            STALENESS_SUMMARY.shown,
        )
        sec.table("staleness", "Staleness per epoch", stale, STALENESS.shown, show=False)
        for s in ctx.settings(stale):
            sec.figure(staleness_figure(stale, s), "Staleness", s)
    return sec
