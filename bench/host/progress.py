"""Progress of a sweep, shaped for where it goes.

On a terminal: tqdm bars (cells, and the steps of the running cell). Anywhere else (CI, a
file, ``nohup``, a notebook) bars would print every refresh as a line, so instead: one line
per finished cell (label, status, epochs, time, final metric) and at most one line per
epoch every ``EPOCH_LINE_SECONDS``. ``off`` prints neither. Stages (the overhead
measurement, the report), notes (earlier results set aside) and cells that did not finish
are printed in every mode: they are few, and say what the tool is doing or has done to the
user's files.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Literal, TextIO

__all__ = ["EPOCH_LINE_SECONDS", "CellProgress", "Progress", "as_progress"]

Mode = Literal["bars", "lines", "off"]

#: Without a terminal, epoch lines are at least this many seconds apart.
EPOCH_LINE_SECONDS = 10.0


class Progress:
    """Where a sweep reports its progress (stderr unless ``stream`` is given)."""

    def __init__(
        self,
        mode: Mode = "off",
        stream: TextIO | None = None,
        *,
        every: float = EPOCH_LINE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self._stream = stream
        self.every = every
        self.clock = clock
        self._bar: Any = None
        self._total = 0
        self._index = 0
        self._cell_start = 0.0
        self._last_line = clock()
        self.current: CellProgress | None = None

    @classmethod
    def auto(cls, enabled: bool = True, stream: TextIO | None = None) -> Progress:
        """Bars when ``stream`` (default stderr) is a terminal, else lines; off if not
        ``enabled``."""
        if not enabled:
            return cls("off", stream)
        target = stream or sys.stderr
        isatty = getattr(target, "isatty", None)
        return cls("bars" if callable(isatty) and isatty() else "lines", stream)

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr  # resolved late: tests and notebooks swap stderr

    def write(self, line: str) -> None:
        """One line, above the bars if there are any."""
        if self._bar is not None:
            from tqdm import tqdm

            tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)
        self._last_line = self.clock()

    # -- the sweep -----------------------------------------------------------------------

    def start_sweep(self, total: int) -> None:
        self._total, self._index = total, 0
        if self.mode == "bars":
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc="cells", unit="cell", file=self.stream, dynamic_ncols=True
            )

    def start_cell(self, run_id: str) -> None:
        self._index += 1
        self._cell_start = self.clock()
        self.current = None
        if self._bar is not None:
            self._bar.set_postfix_str(run_id)

    def end_cell(self, run_id: str, status: str) -> None:
        """Lines: a line for every cell. Bars and off: a line for cells that did not finish."""
        if self._bar is not None:
            self._bar.update()
        if self.mode == "lines":
            self.write(f"cell {self._index}/{self._total} {run_id}: {self._cell_summary(status)}")
        elif status not in ("finished", "skipped"):
            self.write(f"{run_id}: {status}")

    def _cell_summary(self, status: str) -> str:
        if status == "skipped":
            return "skipped (complete)"
        parts = [status]
        cell = self.current
        if cell is not None:
            parts.append(f"{cell.epochs_done}/{cell.epochs} epochs")
        parts.append(f"{self.clock() - self._cell_start:.1f} s")
        if cell is not None and cell.metric is not None:
            parts.append(f"{cell.metric[0]} {cell.metric[1]:.4g}")
        return ", ".join(parts)

    def end_sweep(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def stage(self, message: str) -> None:
        """A later stage starts (overhead measurement, report): printed in every mode."""
        self.write(message)

    note = stage  # something done to the user's files: printed in every mode

    # -- one cell (the runner) -----------------------------------------------------------

    def cell(self, run_id: str, epochs: int, steps_per_epoch: int) -> CellProgress:
        self.current = CellProgress(self, run_id, epochs, steps_per_epoch)
        return self.current


class CellProgress:
    """The training loop's view: epochs start and end, steps go by."""

    def __init__(self, owner: Progress, run_id: str, epochs: int, steps_per_epoch: int) -> None:
        self.owner = owner
        self.run_id = run_id
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.epochs_done = 0
        self.metric: tuple[str, float] | None = None
        self._bar: Any = None
        if owner.mode == "bars":
            from tqdm import tqdm

            self._bar = tqdm(
                total=steps_per_epoch,
                desc=run_id,
                unit="step",
                leave=False,
                file=owner.stream,
                dynamic_ncols=True,
            )

    @property
    def on_step(self) -> Callable[..., None] | None:
        """The runner's per-step callback, or None when nothing counts steps."""
        if self._bar is None:
            return None
        return lambda *_: self._bar.update()

    def start_epoch(self, epoch: int) -> None:
        if self._bar is not None:
            self._bar.reset(total=self.steps_per_epoch)
            self._bar.set_description(f"{self.run_id} epoch {epoch + 1}/{self.epochs}")

    def end_epoch(
        self, epoch: int, train_loss: float, metric: tuple[str, float] | None = None
    ) -> None:
        self.epochs_done = epoch + 1
        if metric is not None:
            self.metric = metric
        owner = self.owner
        if owner.mode == "lines" and owner.clock() - owner._last_line >= owner.every:
            line = f"  {self.run_id} epoch {epoch + 1}/{self.epochs}: loss {train_loss:.4g}"
            if metric is not None:
                line += f", {metric[0]} {metric[1]:.4g}"
            owner.write(f"{line} ({owner.clock() - owner._cell_start:.0f} s)")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def as_progress(progress: bool | Progress) -> Progress:
    """``True``: bars (the library's default when asked for progress); ``False``: off."""
    if isinstance(progress, Progress):
        return progress
    return Progress("bars" if progress else "off")
