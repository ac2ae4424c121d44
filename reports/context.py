"""What every section of the report reads: the records, the problems met reading them, and
the tables several topics share (reports/tables/), each computed once here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from reports import hygiene
from reports.common import kinds_present, settings
from reports.tables import convergence, epochs, phases, speedup, steps

log = logging.getLogger(__name__)


@dataclass
class Context:
    """The records (``common.prepare``d), and the shared tables; a table that fails is
    reported in "Input problems" and is empty, and the report still renders."""

    records: pd.DataFrame
    problems: list[str]
    inputs: list[str]
    steps: pd.DataFrame = field(init=False)
    phases: pd.DataFrame = field(init=False)
    epochs: pd.DataFrame = field(init=False)
    targets: pd.DataFrame = field(init=False)
    final: pd.DataFrame = field(init=False)
    curves: pd.DataFrame = field(init=False)
    speed: pd.DataFrame = field(init=False)
    spread: pd.DataFrame = field(init=False)
    cold: pd.DataFrame = field(init=False)

    errors: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        df = self.records
        self.steps = self._safe(steps.step_times, df)
        self.phases = self._safe(phases.phase_times, df)
        self.epochs = self._safe(epochs.epoch_times, df)
        self.targets = self._safe(speedup.time_to_target, df)
        self.final = self._safe(convergence.final_values, df)
        self.curves = self._safe(convergence.convergence, df)
        self.speed = self._safe(speedup.speedup, self.steps, self.epochs, self.targets)
        self.spread = self._safe(hygiene.epoch_spread, df)
        self.cold = self._safe(hygiene.cold_start, df)

    @property
    def hygiene_flags(self) -> list[str]:
        """Timings to look at twice: runs whose later epochs spread widely, cold starts."""
        return hygiene.spread_flags(self.spread) + hygiene.cold_start_flags(self.cold)

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
        return [row for _, row in settings(src).iterrows()]

    def no_records(self) -> str:
        where = ", ".join(self.inputs) or "(no directories given)"
        return f"No records: no usable records (*.parquet, *.jsonl) were found under {where}."

    def kind_missing(self, kind: str, what: str) -> list[str]:
        """What to say when there are no records of ``kind`` (so ``what``)."""
        if self.empty:
            return [self.no_records()]
        if kind not in kinds_present(self.records):
            return [f"No {kind!r} records, so {what}."]
        return []
