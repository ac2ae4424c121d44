"""A report section: its tables and figures, and what it is missing.

A topic module (reports/topics/) builds one ``Section`` from the shared ``Context``; a
section never raises for absent input: it says what is missing instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure

from reports.common import Column, setting_label
from reports.plot import to_png_data_uri


@dataclass
class TableBlock:
    name: str  # the CSV is ``<page stem>_<name>.csv``
    title: str
    frame: pd.DataFrame
    columns: Sequence[Column]  # shown in the HTML (``Columns.shown``); the CSV has every column
    note: str = ""
    show: bool = True  # False: written as CSV and linked, not shown as an HTML table
    max_rows: int = 0  # rows shown in the HTML (0: all); the CSV has every row
    collapsed: bool = False  # shown folded (an HTML <details> element)
    #: columns shown as one group row per distinct value instead of as columns
    group: tuple[str, ...] = (
        "workload", "size", "data_source", "device_name", "world_size", "batch_size"
    )
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
    #: what makes the figures below doubtful (shown in a warning box above them)
    warnings: list[str] = field(default_factory=list)
    blocks: list[TableBlock | FigureBlock] = field(default_factory=list)
    error: str = ""
    findings: list[str] = field(default_factory=list)  # what the section concludes, in words

    def table(self, *args, **kwargs) -> None:
        self.blocks.append(TableBlock(*args, **kwargs))

    def figure(self, fig: Figure | None, title: str, setting: pd.Series | None = None) -> None:
        if fig is None:
            return
        synthetic = setting is not None and setting["data_source"] == "synthetic"
        label = title if setting is None else f"{title}: {setting_label(setting)}"
        self.blocks.append(FigureBlock(label, to_png_data_uri(fig), label, synthetic))

    @property
    def tables(self) -> list[TableBlock]:
        return [b for b in self.blocks if isinstance(b, TableBlock)]
