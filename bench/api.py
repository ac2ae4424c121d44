"""The suite from Python (a notebook): :func:`compare` runs cells as ``fngd-bench run`` does,
:func:`load` reads results folders as the report does, :func:`report` writes the report.

``compare`` checks what it is given with the command line's own checks
(``bench.cli.checks``, whose ``UsageError`` is a ``ValueError``), builds the cells with
``bench.campaign.presets.Preset.cells`` and runs them with
``bench.campaign.launch.run_cells``: the command's path, so the records are the same.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_OUT", "compare", "load", "report"]

#: Where :func:`compare` writes records when ``out`` is not given (relative to the working
#: directory, as ``fngd-bench run`` writes ``results/PRESET``).
DEFAULT_OUT = Path("results") / "api"

#: The ``preset`` recorded for cells that :func:`compare` runs.
PRESET_NAME = "api"

PathLike = str | os.PathLike[str]


def compare(
    workloads: Sequence[str] | str,
    optimizers: Sequence[str] | str,
    seeds: Sequence[int] = (0,),
    *,
    out: PathLike | None = None,
    epochs: int | None = None,
    max_steps_per_epoch: int | None = None,
    size: str = "small",
    device: str = "auto",
    threads: int = 1,
    resume: bool = False,
    report: bool = False,
    overhead: bool = False,
    warm_start: bool = True,
    progress: bool = False,
    data_root: PathLike | None = None,
) -> pd.DataFrame:
    """Train every cell (workload x optimizer x seed) as ``fngd-bench run`` does and return
    its records: :func:`load` of ``out``, the rows of these cells.

    ``workloads`` and ``optimizers``: names of ``fngd-bench list`` or references
    (``pkg.mod:build``, ``path/to/file.py:factory``; a reference's label is its text).
    Records go to ``out``, by default :data:`DEFAULT_OUT` (``results/api`` under the
    working directory), one file per cell as ``fngd-bench run --out`` writes them; an
    earlier run of a cell there is set aside (``resume=True`` keeps complete ones).
    ``epochs``: default each workload's own; ``report``: also write
    ``out/report/index.html``; ``overhead``: also measure the runner's timer overhead on the
    first cell's workload and optimizer; ``warm_start``: a discarded warm-up run first.
    A mistake in an argument is a ``ValueError`` or ``TypeError`` naming it, before
    anything runs."""
    from bench.campaign.launch import report_path, run_cells, write_report
    from bench.campaign.presets import Preset
    from bench.campaign.sweep import resume_conflicts

    workloads = _names("workloads", workloads)
    optimizers = _names("optimizers", optimizers)
    seeds = _seeds(seeds)
    epochs = _count("epochs", epochs, optional=True)
    max_steps_per_epoch = _count("max_steps_per_epoch", max_steps_per_epoch, optional=True)
    threads = _count("threads", threads, low=0)
    _choice("size", size, ("small", "paper"))
    _choice("device", device, ("auto", "cpu", "cuda"))
    _check("workloads", workloads, "check_workloads")
    _check("optimizers", optimizers, "check_optimizers")
    _check("device", device, "check_device")
    out = Path(DEFAULT_OUT if out is None else out)
    _check("out", out, "check_out_dir")

    preset = Preset(
        name=PRESET_NAME,
        workloads=tuple(workloads),
        optimizers=tuple(optimizers),
        seeds=tuple(seeds),
        epochs=epochs,
        max_steps_per_epoch=max_steps_per_epoch,
        size=size,
    )
    cells = preset.cells()
    from bench.cli import checks

    try:  # what plugins and references bring, built once before any cell runs
        checks.check_cells(cells, data_root=data_root)
    except checks.UsageError as exc:
        raise ValueError(str(exc)) from None
    if resume:
        conflicts = resume_conflicts(cells, out)
        if conflicts:
            raise ValueError(
                f"resume=True: {out} holds cells run with other settings ({conflicts[0]}); "
                "resume with the same arguments, or pass another out"
            )
    run_cells(
        cells,
        out,
        device=device,
        threads=threads,
        data_root=data_root,
        resume=resume,
        progress=progress,
        overhead=preset.overhead_for() if overhead else (),
        warm_start=warm_start,
    )
    if report:
        write_report([out], report_path(out))
    frame = load(out)
    run_ids = {c.run_id for c in cells}
    return frame[frame["run_id"].isin(run_ids)].reset_index(drop=True)


def load(path_or_paths: PathLike | Iterable[PathLike]) -> pd.DataFrame:
    """The records of one or more results folders (or record files) as one frame, read by
    the report's loader (``reports.load_records``; columns in ``reports.load.COLUMNS``,
    ``source`` naming each row's file). Each problem met reading them (a corrupt line, an
    unreadable file) is one ``UserWarning``; the rows it concerns are left out."""
    from reports import load_records

    frame, problems = load_records(_paths(path_or_paths))
    for problem in problems:
        warnings.warn(problem, UserWarning, stacklevel=2)
    return frame


def report(source: PathLike | Iterable[PathLike] | pd.DataFrame, out_html: PathLike) -> Path:
    """Write the HTML report (and its tables as CSV beside it) to ``out_html``; returns its
    path. ``source``: results folders, as ``fngd-bench report`` takes them, or a frame from
    :func:`load` or :func:`compare` (its rows only: a filtered frame reports what is left)."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        from reports import build_frame_report

        if "source" not in source.columns:
            raise ValueError(
                "source: a DataFrame without a 'source' column; pass a frame from "
                "bench.api.load or compare, or results folders"
            )
        return build_frame_report(source, out_html, inputs=_folders(source["source"]))
    from bench.campaign.launch import write_report

    return write_report(_paths(source), out_html)


def _paths(given: PathLike | Iterable[PathLike]) -> list[str]:
    if isinstance(given, (str, os.PathLike)):
        given = [given]
    paths = [os.fspath(p) for p in given]
    if not paths:
        raise ValueError("no results folder given")
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise ValueError(f"no such results folder or file: {', '.join(missing)}")
    return paths


def _folders(sources: Iterable[object]) -> list[str]:
    """The folders of the files that rows came from (``file:line`` or ``file``)."""
    found: dict[str, None] = {}
    for text in map(str, sources):
        file, _, line = text.rpartition(":")
        found[str(Path(file if file and line.isdigit() else text).parent)] = None
    return list(found)


def _names(argument: str, given: Sequence[str] | str) -> list[str]:
    if isinstance(given, str):
        given = [given]
    names = list(given)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{argument}: expected one or more names, got {given!r}")
    return list(dict.fromkeys(names))


def _seeds(given: Sequence[int]) -> list[int]:
    if isinstance(given, int) and not isinstance(given, bool):
        given = [given]
    seeds = list(given)
    if not seeds:
        raise ValueError("seeds: expected one or more seeds, got none")
    return [int(_count("seeds", s, low=0)) for s in seeds]


def _count(argument: str, value: Any, *, low: int = 1, optional: bool = False) -> Any:
    """``value``, a whole number of at least ``low`` (or ``None`` when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument}: expected a whole number, got {value!r}")
    if value < low:
        raise ValueError(f"{argument}: must be at least {low}, got {value}")
    return value


def _choice(argument: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{argument}: expected one of {', '.join(choices)}, got {value!r}")


def _check(argument: str, value: object, check: str) -> None:
    """One of the command line's checks (``bench.cli.checks``), its message naming the
    argument as given here."""
    from bench.cli import checks

    try:
        getattr(checks, check)(value)
    except checks.UsageError as exc:
        raise ValueError(f"{argument}={value!r}: {exc}") from None
