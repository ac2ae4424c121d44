"""Figures (seaborn on matplotlib ``Figure`` objects, no pyplot state), encoded as PNG.

Each function takes the tables from :mod:`reports.tables` for one setting (or all) and
returns a :class:`matplotlib.figure.Figure`; :func:`to_png_data_uri` turns it into a
``data:`` URI so the HTML needs no other file. Settings with synthetic data carry
"SYNTHETIC DATA" in red in their titles.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reports import tables

DPI = 100
WIDTH = 8.0
SYNTHETIC_COLOR = "#b00020"
_BASE_COLORS = {"sgd": 0, "adamw": 4, "kfac": 1, "ngd": 3, "fngd": 2}
_PHASE_COLORS = {
    "data": "#c7c7c7",
    "forward": "#9ecae1",
    "backward": "#4292c6",
    "update": "#08519c",
    "fngd/gram": "#a1d99b",
    "fngd/solve": "#41ab5d",
    "fngd/weighted_sum": "#006d2c",
    "kfac/factors": "#fdae6b",
    "kfac/inverse": "#e6550d",
    "kfac/precondition": "#a63603",
    tables.OTHER: "#f0f0f0",
}


def _style():
    return sns.axes_style("whitegrid")


def _context():
    return sns.plotting_context("notebook", font_scale=0.8)


def palette(labels: Iterable[str]) -> dict[str, tuple]:
    """A stable colour per optimizer label (same optimizer, same colour in every figure)."""
    colors = sns.color_palette("colorblind", 10)
    used: set[int] = set()
    out: dict[str, tuple] = {}
    for label in labels:
        base = str(label).split(" ")[0]
        idx = _BASE_COLORS.get(base)
        if idx is None or idx in used:
            idx = next(
                (i for i in range(10) if i not in used and i not in _BASE_COLORS.values()),
                next((i for i in range(10) if i not in used), 0),
            )
        used.add(idx)
        out[label] = colors[idx]
    return out


def opt_labels(frame: pd.DataFrame) -> list[str]:
    if frame.empty:
        return []
    pairs = frame[["family", "opt"]].drop_duplicates()
    pairs = pairs.assign(r=pairs["family"].map(lambda o: tables.optimizer_rank(o)[0]))
    return list(pairs.sort_values(["r", "opt"])["opt"])


def _title(fig: Figure, text: str, setting: pd.Series | dict | None = None) -> None:
    if setting is not None:
        text = f"{text}\n{tables.setting_label(setting)}"
        synthetic = setting["data_source"] == "synthetic"
    else:
        synthetic = False
    fig.suptitle(text, fontsize=10, color=SYNTHETIC_COLOR if synthetic else "black")


def time_unit(max_seconds: float) -> tuple[float, str]:
    if not max_seconds or math.isnan(max_seconds) or max_seconds >= 120:
        return (1 / 60, "min") if max_seconds and max_seconds >= 120 else (1.0, "s")
    if max_seconds >= 1:
        return 1.0, "s"
    if max_seconds >= 1e-3:
        return 1e3, "ms"
    return 1e6, "µs"


def to_png_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _select(frame: pd.DataFrame, setting: pd.Series | dict) -> pd.DataFrame:
    if frame.empty:
        return frame
    mask = pd.Series(True, index=frame.index)
    for c in tables.SETTING:
        mask &= frame[c] == setting[c]
    return frame.loc[mask]


def _mode_label(opt: str, mode: str) -> str:
    return opt if mode in ("all", None) else f"{opt} · {mode}"


# ------------------------------------------------------------------------------ steps


def step_distribution(records: pd.DataFrame, setting: pd.Series) -> Figure | None:
    """Box plot of the non-warm-up step times per optimizer and mode."""
    s = records.loc[(records["kind"] == "step") & ~records["warmup"] & records["seconds"].notna()]
    s = _select(s, setting)
    if s.empty:
        return None
    labels = opt_labels(s)
    pal = palette(labels)
    parts = [s.assign(label=s["opt"], color_key=s["opt"])]
    moded = s.loc[s["mode"].notna()]
    if not moded.empty:
        parts.append(
            moded.assign(
                label=[_mode_label(o, m) for o, m in zip(moded["opt"], moded["mode"], strict=True)],
                color_key=moded["opt"],
            )
        )
    data = pd.concat(parts, ignore_index=True)
    order = []
    for lab in labels:
        order.append(lab)
        order += sorted(set(data.loc[(data["opt"] == lab) & (data["label"] != lab), "label"]))
    colors = {lab: pal[data.loc[data["label"] == lab, "color_key"].iloc[0]] for lab in order}
    scale, unit = time_unit(float(data["seconds"].max()))
    data = data.assign(t=data["seconds"] * scale)
    with _style(), _context():
        fig = Figure(figsize=(WIDTH, 0.9 + 0.32 * len(order)), layout="constrained")
        ax = fig.subplots()
        with warnings.catch_warnings():
            # seaborn 0.13 passes boxplot's deprecated ``vert`` to newer matplotlib
            warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
            sns.boxplot(
                data=data,
                x="t",
                y="label",
                hue="label",
                order=order,
                hue_order=order,
                palette=colors,
                showfliers=False,
                legend=False,
                ax=ax,
                width=0.6,
            )
        if data["t"].max() / max(data["t"].min(), 1e-12) > 30:
            ax.set_xscale("log")
        ax.set_xlabel(f"step time ({unit}), warm-up excluded")
        ax.set_ylabel("")
        _title(fig, "Per-step time", setting)
    return fig


def epoch_curve(curve: pd.DataFrame, setting: pd.Series) -> Figure | None:
    """Median epoch time against epoch; epoch 0 is FNGD's inversion epoch."""
    c = _select(curve, setting)
    if c.empty:
        return None
    labels = opt_labels(c)
    scale, unit = time_unit(float(c["median_s"].max()))
    c = c.assign(t=c["median_s"] * scale, lo=c["min_s"] * scale, hi=c["max_s"] * scale)
    with _style(), _context():
        fig = Figure(figsize=(WIDTH, 3.2), layout="constrained")
        ax = fig.subplots()
        sns.lineplot(
            data=c,
            x="epoch",
            y="t",
            hue="opt",
            hue_order=labels,
            palette=palette(labels),
            marker="o",
            ax=ax,
        )
        for lab, g in c.groupby("opt"):
            if (g["hi"] > g["lo"]).any():
                ax.fill_between(
                    g["epoch"],
                    g["lo"],
                    g["hi"],
                    color=palette(labels)[lab],
                    alpha=0.15,
                    linewidth=0,
                )
        ax.set_xlabel("epoch (0 = first)")
        ax.set_ylabel(f"epoch time ({unit})")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(title="", fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        _title(fig, "Epoch time (median over seeds; band: min–max)", setting)
    return fig


# ------------------------------------------------------------------------------ phases


def phase_stack(stack: pd.DataFrame, setting: pd.Series) -> Figure | None:
    """Stacked horizontal bars of exclusive median phase time per optimizer and mode."""
    s = _select(stack, setting)
    if s.empty:
        return None
    s = s.assign(label=[_mode_label(o, m) for o, m in zip(s["opt"], s["mode"], strict=True)])
    labels = []
    for lab in opt_labels(s):
        labels += list(dict.fromkeys(s.loc[s["opt"] == lab, "label"]))
    phases = sorted(set(s["phase"]), key=tables.phase_rank)
    wide = s.pivot_table(index="label", columns="phase", values="seconds", aggfunc="sum")
    wide = wide.reindex(index=labels, columns=phases).fillna(0.0)
    scale, unit = time_unit(float(wide.sum(axis=1).max()))
    wide = wide * scale
    extra = sns.color_palette("pastel", 10)
    with _style(), _context():
        fig = Figure(figsize=(WIDTH, 1.3 + 0.38 * len(labels)), layout="constrained")
        ax = fig.subplots()
        left = np.zeros(len(labels))
        y = np.arange(len(labels))
        for i, ph in enumerate(phases):
            vals = wide[ph].to_numpy()
            color = _PHASE_COLORS.get(ph, extra[i % len(extra)])
            ax.barh(
                y,
                vals,
                left=left,
                color=color,
                label=ph,
                height=0.6,
                edgecolor="#555555" if ph == tables.OTHER else "white",
                linewidth=0.5,
            )
            left += vals
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_xlabel(f"median exclusive time per step ({unit})")
        fig.legend(
            *ax.get_legend_handles_labels(),
            fontsize=7,
            ncol=min(6, len(phases)),
            loc="outside lower center",
            frameon=False,
        )
        _title(fig, "Phase breakdown per step (exclusive time; warm-up excluded)", setting)
    return fig


# ------------------------------------------------------------------------- convergence


def convergence(curves: pd.DataFrame, setting: pd.Series, metric: str | None) -> Figure | None:
    """Train loss and eval metric against epoch and wall time; median and min–max band."""
    c = _select(curves, setting)
    if c.empty:
        return None
    quantities = [q for q in ("train_loss", metric) if q and q in set(c["quantity"])]
    if not quantities:
        return None
    labels = opt_labels(c)
    pal = palette(labels)
    scale, unit = time_unit(float(c["wall_median_s"].max()))
    with _style(), _context():
        fig = Figure(figsize=(WIDTH, 0.6 + 2.6 * len(quantities)), layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(quantities), 2, squeeze=False))
        for r, q in enumerate(quantities):
            d = c.loc[c["quantity"] == q].assign(wall=lambda x: x["wall_median_s"] * scale)
            for col, (x, xlabel) in enumerate(
                (("epoch", "epoch"), ("wall", f"training wall time ({unit})"))
            ):
                ax = axes[r, col]
                sns.lineplot(
                    data=d,
                    x=x,
                    y="median",
                    hue="opt",
                    hue_order=labels,
                    palette=pal,
                    marker="o",
                    markersize=4,
                    ax=ax,
                    legend=(r == 0 and col == 1),
                )
                for lab, g in d.groupby("opt"):
                    g = g.sort_values("epoch")
                    ax.fill_between(
                        g[x], g["min"], g["max"], color=pal[lab], alpha=0.18, linewidth=0
                    )
                ax.set_xlabel(xlabel)
                ax.set_ylabel(q.replace("_", " "))
                if (
                    q.endswith("loss")
                    and (d["min"] > 0).all()
                    and (d["max"].max() / d["min"].min() > 20)
                ):
                    ax.set_yscale("log")
                if x == "epoch":
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axes[0, 1].get_legend() is not None:
            axes[0, 1].legend(fontsize=7, title="")
        _title(fig, "Convergence (median over seeds; band: min–max)", setting)
    return fig


# ------------------------------------------------------------------------------ memory


def _panel_title(ax, setting: pd.Series | dict, with_batch: bool = True) -> None:
    first = tables.workload_label(setting)
    if with_batch and int(setting["batch_size"]):
        first += f" · batch {int(setting['batch_size'])}"
    second = str(setting["device_name"])
    synthetic = setting["data_source"] == "synthetic"
    if synthetic:
        second += " · SYNTHETIC DATA"
    ax.set_title(f"{first}\n{second}", fontsize=8, color=SYNTHETIC_COLOR if synthetic else "black")


def memory(mem: pd.DataFrame) -> Figure | None:
    """Peak memory and optimizer state per optimizer: one row of two panels per setting."""
    if mem.empty:
        return None
    sets = [st for _, st in tables.settings(mem).iterrows()]
    labels = opt_labels(mem)
    pal = palette(labels)
    what = (("peak_bytes", "peak memory (MiB)"), ("optimizer_state_bytes", "optimizer state (MiB)"))
    heights = [0.9 + 0.22 * len(_select(mem, st)) for st in sets]
    with _style(), _context():
        fig = Figure(figsize=(WIDTH, 0.5 + sum(heights)), layout="constrained")
        axes = fig.subplots(len(sets), 2, squeeze=False, gridspec_kw={"height_ratios": heights})
        for row, st in enumerate(sets):
            d = _select(mem, st)
            order = [lab for lab in labels if lab in set(d["opt"])]
            for col, (field, xlabel) in enumerate(what):
                ax = axes[row, col]
                dd = d.assign(mib=d[field] / 2**20).dropna(subset=["mib"])
                if dd.empty:
                    ax.set_visible(False)
                    continue
                sns.barplot(
                    data=dd,
                    x="mib",
                    y="opt",
                    hue="opt",
                    order=order,
                    hue_order=order,
                    palette=pal,
                    legend=False,
                    ax=ax,
                )
                ax.set_xlabel(xlabel if row == len(sets) - 1 else "")
                ax.set_ylabel("")
                ax.tick_params(axis="y", labelsize=7)
                _panel_title(ax, st)
        fig.suptitle("Memory: peak and optimizer state (median over seeds)", fontsize=10)
    return fig


# -------------------------------------------------------------------------- batch size


def batch_scaling(batch: pd.DataFrame) -> Figure | None:
    """Median step time against batch size, one panel per (workload, data, device)."""
    if batch.empty:
        return None
    key = [c for c in tables.SETTING if c != "batch_size"]
    groups = list(batch.groupby(key, sort=False))
    ncols = 1 if len(groups) == 1 else 2
    nrows = math.ceil(len(groups) / ncols)
    scale, unit = time_unit(float(batch["median_s"].max()))
    with _style(), _context():
        fig = Figure(figsize=(WIDTH, 0.8 + 2.8 * nrows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
        for ax, (k, g) in zip(axes, groups, strict=False):
            labels = opt_labels(g)
            sns.lineplot(
                data=g.assign(t=g["median_s"] * scale),
                x="batch_size",
                y="t",
                hue="opt",
                hue_order=labels,
                palette=palette(labels),
                marker="o",
                ax=ax,
            )
            ax.set_xscale("log", base=2)
            sizes = sorted(set(g["batch_size"]))
            ax.set_xticks(sizes, [str(b) for b in sizes])
            ax.set_xlabel("batch size")
            ax.set_ylabel(f"median step ({unit})")
            _panel_title(ax, dict(zip(key, k, strict=True)), with_batch=False)
            ax.legend(fontsize=7, title="")
        for ax in axes[len(groups) :]:
            ax.set_visible(False)
        fig.suptitle("Step time against batch size (warm-up excluded)", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- profile


def profile(prof: pd.DataFrame, setting: pd.Series) -> Figure | None:
    """Per-step CPU and GPU time of each phase per optimizer and mode (profiler summary)."""
    p = _select(prof, setting)
    if p.empty:
        return None
    p = p.loc[p["phase"] != tables.WHOLE_STEP]
    long = p.melt(
        id_vars=tables.OPT + ["mode", "phase"],
        value_vars=["cpu_time_s", "gpu_time_s"],
        var_name="clock",
        value_name="seconds",
    ).dropna(subset=["seconds"])
    if long.empty:
        return None
    long = long.assign(
        clock=long["clock"].map({"cpu_time_s": "CPU", "gpu_time_s": "GPU"}),
        who=[_mode_label(o, m) for o, m in zip(long["opt"], long["mode"], strict=True)],
    )
    long = long.assign(
        label=[f"{w} · {ph}" for w, ph in zip(long["who"], long["phase"], strict=True)]
    )
    order = []
    for lab in opt_labels(long):
        for who in dict.fromkeys(long.loc[long["opt"] == lab, "who"]):
            phs = sorted(set(long.loc[long["who"] == who, "phase"]), key=tables.phase_rank)
            order += [f"{who} · {ph}" for ph in phs]
    scale, unit = time_unit(float(long["seconds"].max()))
    long = long.assign(t=long["seconds"] * scale)
    with _style(), _context():
        fig = Figure(figsize=(WIDTH, 1.0 + 0.28 * len(order)), layout="constrained")
        ax = fig.subplots()
        sns.barplot(
            data=long,
            x="t",
            y="label",
            hue="clock",
            order=order,
            hue_order=[h for h in ("CPU", "GPU") if h in set(long["clock"])],
            palette="Set1",
            ax=ax,
        )
        positive = long.loc[long["t"] > 0, "t"]
        if len(positive) and positive.max() / positive.min() > 30:
            ax.set_xscale("log")
        ax.set_xlabel(f"median time per profiled step ({unit})")
        ax.set_ylabel("")
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7, title="")
        _title(fig, "Profiler: time per phase per step (warm-up excluded)", setting)
    return fig
