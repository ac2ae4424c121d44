"""What every figure shares: seaborn style, one colour per optimizer, time units, titles, and
the PNG ``data:`` URI the page embeds.

Figures are seaborn on matplotlib ``Figure`` objects (no pyplot state). Settings with
synthetic data carry "SYNTHETIC DATA" in red in their titles.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable
from contextlib import AbstractContextManager

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from reports.common import setting_label, workload_label
from reports.vocabulary import family_rank, label_colors

DPI = 100
WIDTH = 8.0
SYNTHETIC_COLOR = "#b00020"


def style() -> AbstractContextManager[None]:
    return sns.axes_style("whitegrid")


def context() -> AbstractContextManager[None]:
    return sns.plotting_context("notebook", font_scale=0.8)


def palette(labels: Iterable[str]) -> dict[str, str]:
    """A colour per optimizer label, the same in every figure (``vocabulary.label_colors``)."""
    return label_colors(labels)


def opt_labels(frame: pd.DataFrame) -> list[str]:
    """The optimizer display labels of ``frame`` in display order."""
    if frame.empty:
        return []
    pairs = frame[["family", "opt"]].drop_duplicates()
    pairs = pairs.assign(r=pairs["family"].map(lambda o: family_rank(o)[0]))
    return list(pairs.sort_values(["r", "opt"])["opt"])


def title(fig: Figure, text: str, setting: pd.Series | dict | None = None) -> None:
    if setting is not None:
        text = f"{text}\n{setting_label(setting)}"
        synthetic = setting["data_source"] == "synthetic"
    else:
        synthetic = False
    fig.suptitle(text, fontsize=10, color=SYNTHETIC_COLOR if synthetic else "black")


def panel_title(ax, setting: pd.Series | dict, with_batch: bool = True) -> None:
    first = workload_label(setting)
    if with_batch and int(setting["batch_size"]):
        first += f" · batch {int(setting['batch_size'])}"
    second = str(setting["device_name"])
    synthetic = setting["data_source"] == "synthetic"
    if synthetic:
        second += " · SYNTHETIC DATA"
    ax.set_title(f"{first}\n{second}", fontsize=8, color=SYNTHETIC_COLOR if synthetic else "black")


def time_unit(max_seconds: float) -> tuple[float, str]:
    if not max_seconds or math.isnan(max_seconds) or max_seconds >= 120:
        return (1 / 60, "min") if max_seconds and max_seconds >= 120 else (1.0, "s")
    if max_seconds >= 1:
        return 1.0, "s"
    if max_seconds >= 1e-3:
        return 1e3, "ms"
    return 1e6, "µs"


def mode_label(opt: str, mode: str) -> str:
    return opt if mode in ("all", None) else f"{opt} · {mode}"


def to_png_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
