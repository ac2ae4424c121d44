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
    element_id: str = ""  # the image's HTML id (empty: none)
    #: shown first, above the section's words: the figure a section opens with
    lead: bool = False


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
    #: the findings at length, shown folded below the first block ("Details")
    details: list[str] = field(default_factory=list)

    def table(self, *args, **kwargs) -> None:
        self.blocks.append(TableBlock(*args, **kwargs))

    def figure(
        self,
        fig: Figure | None,
        title: str,
        setting: pd.Series | None = None,
        *,
        element_id: str = "",
        lead: bool = False,
    ) -> None:
        """Append ``fig`` (nothing when ``None``); ``lead``: the first block, shown above the
        section's words (the figure the section opens with)."""
        if fig is None:
            return
        synthetic = setting is not None and setting["data_source"] == "synthetic"
        label = title if setting is None else f"{title}: {setting_label(setting)}"
        block = FigureBlock(label, to_png_data_uri(fig), label, synthetic, element_id, lead)
        if lead:
            self.blocks.insert(0, block)
        else:
            self.blocks.append(block)

    @property
    def tables(self) -> list[TableBlock]:
        return [b for b in self.blocks if isinstance(b, TableBlock)]
