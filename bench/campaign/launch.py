"""Running a sweep's cells and writing its report: the one path that ``fngd-bench run`` and
:func:`bench.api.compare` both take, so that a notebook's records are a command's records.

The callers build the cells (``bench.campaign.presets.Preset.cells``) and check what was
asked for; this module runs them under the thread setting and writes the report."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.campaign.sweep import SweepResult
    from bench.cell import CellSpec
    from bench.host.progress import Progress

__all__ = ["REPORT_PAGE", "report_path", "run_cells", "write_report"]

#: Where a run's report goes, under its results directory.
REPORT_PAGE = Path("report") / "index.html"


def report_path(out: str | os.PathLike[str]) -> Path:
    """The report page of the results directory ``out``."""
    return Path(out) / REPORT_PAGE


def run_cells(
    cells: Iterable[CellSpec],
    out: str | os.PathLike[str],
    *,
    device: str = "auto",
    threads: int = 1,
    data_root: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool | Progress = False,
    overhead: Sequence[tuple[str, str]] = (),
    warm_start: bool = False,
) -> SweepResult:
    """Run ``cells`` into ``out`` with ``threads`` CPU intra-op threads on the CPU device
    (``bench.host.env.cpu_threads``), then measure the runner's overhead on ``overhead``
    (``bench.campaign.sweep.run_sweep``)."""
    from bench.campaign.sweep import run_sweep
    from bench.host.env import cpu_threads

    with cpu_threads(threads, device):
        return run_sweep(
            cells,
            out,
            device=device,
            data_root=data_root,
            resume=resume,
            progress=progress,
            overhead=overhead,
            warm_start=warm_start,
        )


def write_report(
    results: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out_html: str | os.PathLike[str],
) -> Path:
    """The HTML report of the results directories ``results`` at ``out_html`` (``reports``:
    tables and figures, each table also as CSV beside it); returns the page's path."""
    from reports import build_report

    if isinstance(results, (str, os.PathLike)):
        results = [results]
    return Path(build_report([Path(r) for r in results], Path(out_html)))
