"""Sweeps: cells = workloads x optimiser labels x seeds, run one after another, resumable.

Layout of an output directory
-----------------------------
One file per cell, with ``run_id = <workload>__<label>__s<seed>``: ``<run_id>.jsonl`` while
it runs (JSON Lines, appended and flushed per epoch: an interrupted cell keeps every flushed
epoch), ``<run_id>.parquet`` once it is closed (``bench.records.parquet.compact``, with any status
but an interruption); and one JSON Lines file per overhead measurement,
``overhead__<workload>__<label>__<device>.jsonl``. The report reads every ``*.parquet`` and
``*.jsonl`` of the directory (a cell's Parquet file, not a JSON Lines file left beside it),
so what lies there is exactly the data to count, once.

Cell status
-----------
Each cell file holds a ``cell`` record ``started`` and, at the end, one of ``finished``,
``diverged`` (non-finite loss; the run stops there), ``oom`` (``torch.cuda.OutOfMemoryError``
or a ``RuntimeError`` saying "out of memory") or ``error`` (any other exception; the
message in ``value``, the traceback in ``traceback``). The sweep goes on after any of them.
``KeyboardInterrupt`` flushes what was written and is raised again.

Resume and partial attempts
---------------------------
A cell is *complete* when its file has a ``finished``, ``diverged`` or ``oom`` record.

- ``resume=True`` skips complete cells. Any other earlier attempt (only ``started``: the
  process was killed or interrupted; or ``error``) is renamed to
  ``<run_id>.attempt<N>.partial`` and the cell is run again from the start into a fresh
  ``<run_id>.jsonl``.
- ``resume=False`` runs every cell again; an earlier file is renamed to
  ``<run_id>.attempt<N>.partial`` (incomplete) or ``<run_id>.attempt<N>.replaced``
  (complete).

Renamed files end in neither ``.jsonl`` nor ``.parquet``, so the report never sees them;
every record carries ``attempt`` (1 for the first run of a cell, N+1 after N earlier attempts)
to tell them apart.
Overhead files are measured again unless ``resume`` and they hold an ``overhead`` record.

Under torchrun (``bench.host.distributed``) rank 0 decides what to skip or set aside and writes;
the other ranks train alongside it and write nothing. A cell that raises there ends the run
(after rank 0 wrote its ``error`` record): a rank left waiting for the others would hang,
and torchrun stops every rank instead. The overhead measurement, which times one process's
loop, is skipped.
"""

from __future__ import annotations

import gc
import os
import re
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.cell import CellSpec, WorkloadFactory, run_cell
from bench.cell.spec import file_safe
from bench.host import distributed
from bench.host.env import resolve_device
from bench.host.progress import Progress, as_progress
from bench.records import CELL_STATUSES, RecordWriter, cell_file, iter_records

__all__ = [
    "COMPLETE",
    "SweepResult",
    "cell_status",
    "freeze_heap",
    "is_oom",
    "make_cells",
    "resume_conflicts",
    "run_sweep",
]

COMPLETE = tuple(s for s in CELL_STATUSES if s not in ("started", "error"))


def make_cells(
    workloads: Sequence[str],
    optimizers: Sequence[str],
    seeds: Sequence[int],
    **common: Any,
) -> list[CellSpec]:
    """The cells of a sweep, workload-major (all optimisers of a workload, seed by seed)."""
    return [
        CellSpec(workload=w, optimizer=o, seed=int(s), **common)
        for w in workloads
        for s in seeds
        for o in optimizers
    ]


def is_oom(exc: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _ignore(*_: object) -> None:
    """Corrupt lines: the report lists them; resuming only needs the readable records."""


def _cell_records(path: Path) -> list[dict[str, Any]]:
    """The ``cell`` records of the cell whose file ``path`` names (either suffix)."""
    found = cell_file(path)
    return [] if found is None else list(iter_records(found, _ignore, kinds=("cell",)))


def cell_status(path: str | os.PathLike[str]) -> str | None:
    """The status of a cell file (``<run_id>.jsonl`` or ``.parquet``: whichever holds the
    cell, ``bench.records.cell_file``): its complete status if any, else the last one, else
    ``None`` (no cell record, or no file)."""
    last = None
    for record in _cell_records(Path(path)):
        name = record.get("name")
        if name in COMPLETE:
            return str(name)
        last = name
    return last


def _has_overhead(path: Path) -> bool:
    if not path.exists():
        return False
    return any(True for _ in iter_records(path, _ignore, kinds=("overhead",)))


def _attempts(out: Path, run_id: str) -> int:
    """Earlier attempts of ``run_id`` kept aside."""
    pattern = re.compile(re.escape(run_id) + r"\.attempt(\d+)\.(partial|replaced)$")
    numbers = [int(m.group(1)) for p in out.iterdir() if (m := pattern.match(p.name))]
    return max(numbers, default=0)


def _set_aside(out: Path, path: Path, run_id: str, status: str | None) -> Path:
    """Rename an earlier attempt out of the report's sight; returns its new path."""
    n = _attempts(out, run_id) + 1
    suffix = "replaced" if status in COMPLETE else "partial"
    aside = out / f"{run_id}.attempt{n}.{suffix}"
    path.rename(aside)
    return aside


def resume_conflicts(cells: Iterable[CellSpec], out: str | os.PathLike[str]) -> list[str]:
    """Complete cells in ``out`` that ``--resume`` would keep although they were run with
    another preset, size, epoch count or step cut than ``cells`` ask for: one line each."""
    out = Path(out)
    found = []
    for spec in cells:
        path = out / f"{spec.run_id}.jsonl"
        if cell_status(path) not in COMPLETE:
            continue
        record = next(iter(_cell_records(path)), {})
        asked = {
            "preset": spec.preset,
            "size": spec.size,
            "max_steps_per_epoch": spec.max_steps_per_epoch,
            "epochs": spec.epochs,
        }
        differ = [
            f"{key} {record.get(key)!r} (now {value!r})"
            for key, value in asked.items()
            if key in record and value is not None and record[key] != value
        ]
        if spec.max_steps_per_epoch is None and record.get("max_steps_per_epoch") is not None:
            differ.append(f"max_steps_per_epoch {record['max_steps_per_epoch']!r} (now None)")
        if differ:
            found.append(f"{spec.run_id}: {', '.join(differ)}")
    return found


@dataclass
class SweepResult:
    """Status of every cell the sweep went through (``skipped`` ones were complete)."""

    statuses: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    overhead: dict[str, float | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s in ("finished", "diverged") for s in self.statuses.values())


def freeze_heap() -> None:
    """Move every object alive now (modules, the workloads' cached data) out of the
    collector's reach: the full collection after each cell (:func:`_free`) then scans only
    what the cells made, not the whole heap of torch, pandas and matplotlib (a third of a
    second per cell on a 2-core machine, before)."""
    gc.collect()
    gc.freeze()


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_one(
    spec: CellSpec,
    out: Path,
    *,
    device: torch.device,
    data_root: str | os.PathLike[str] | None,
    workload_factory: WorkloadFactory | None,
    resume: bool,
    progress: Progress,
) -> str:
    """Run (or skip) one cell; returns its status (``skipped`` when resume skipped it).

    The cell writes ``<run_id>.jsonl``; once closed (any status: the closing ``cell``
    record is written) it is compacted to ``<run_id>.parquet``. An interrupted cell keeps
    its JSON Lines."""
    path = out / f"{spec.run_id}.jsonl"
    world = distributed.world()
    attempt = 0  # 0: skipped (rank 0 decides, under torchrun)
    if world.main:
        attempt = _prepare_file(spec, out, path, resume=resume, progress=progress)
    attempt = distributed.broadcast(attempt)
    if attempt == 0:
        return "skipped"

    writer = RecordWriter(path) if world.main else distributed.NullWriter()
    status, message, extra = "error", "", {}
    fatal: BaseException | None = None
    try:
        status, message = run_cell(
            spec,
            writer,
            device=device,
            data_root=data_root,
            workload_factory=workload_factory,
            progress=progress,
            attempt=attempt,
        )
    except KeyboardInterrupt:
        writer.close()
        raise
    except Exception as exc:  # noqa: BLE001 - recorded, and the sweep goes on
        status = "oom" if is_oom(exc) else "error"
        message = f"{type(exc).__name__}: {exc}".strip()
        if status == "error":
            extra = {"traceback": traceback.format_exc()}
        if world.distributed:
            fatal = exc
    try:
        if "started" not in writer.statuses:
            writer.write({"kind": "cell", "name": "started", "value": ""})
        writer.write({"kind": "cell", "name": status, "value": message, **extra}, flush=True)
    finally:
        writer.close()
    if fatal is not None:
        raise fatal
    _free(device)  # the exception and its frames (and their tensors) are gone by now
    if world.main:
        _compact(path, progress)
    return status


def _prepare_file(
    spec: CellSpec, out: Path, path: Path, *, resume: bool, progress: Progress
) -> int:
    """Set an earlier attempt of the cell aside; its attempt number, or 0 to skip it."""
    if path.exists() and path.with_suffix(".parquet").exists():
        path.unlink()  # left by a stop between compaction's two steps; the Parquet is whole
    earlier = cell_file(path)
    previous = cell_status(earlier) if earlier is not None else None
    if earlier is not None:
        if resume and previous in COMPLETE:
            return 0
        aside = _set_aside(out, earlier, spec.run_id, previous)
        progress.note(
            f"earlier {previous or 'unfinished'} run of {spec.run_id} set aside as {aside}"
            + ("" if resume else " (--resume keeps complete cells)")
        )
    return _attempts(out, spec.run_id) + 1


def _compact(path: Path, progress: Progress) -> None:
    """Compact a closed cell to Parquet; if that fails, its JSON Lines stay and are read."""
    from bench.records.parquet import compact

    try:
        compact(path, on_error=_ignore)
    except Exception as exc:  # noqa: BLE001 - the records stay readable as JSON Lines
        progress.note(f"{path.name} kept as JSON Lines: compaction failed: {exc}")


def run_overhead(
    workload: str,
    label: str,
    out: Path,
    *,
    device: torch.device,
    data_root: str | os.PathLike[str] | None,
    workload_factory: WorkloadFactory | None,
    resume: bool,
    size: str = "small",
    batch_size: int | None = None,
    seed: int = 0,
    preset: str | None = None,
    progress: Progress | None = None,
) -> float | None:
    """Measure the runner's overhead on (workload, label); writes an ``overhead`` record."""
    from bench.measure.overhead import measure_cell_overhead

    path = out / f"overhead__{file_safe(workload)}__{file_safe(label)}__{device.type}.jsonl"
    if resume and _has_overhead(path):
        return None
    if progress is not None:
        progress.stage(f"measuring the runner's timer overhead on {workload} / {label}")
    if path.exists():
        path.unlink()
    spec = CellSpec(
        workload=workload,
        optimizer=label,
        seed=seed,
        size=size,
        batch_size=batch_size,
        preset=preset,
    )
    try:
        with RecordWriter(path) as writer:
            record = measure_cell_overhead(
                spec,
                writer,
                device=device,
                data_root=data_root,
                workload_factory=workload_factory,
            )
    except BaseException:
        if path.exists() and path.stat().st_size == 0:
            path.unlink()
        raise
    finally:
        _free(device)
    return record["value"]


def run_sweep(
    cells: Iterable[CellSpec],
    out: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
    data_root: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool | Progress = False,
    workload_factory: WorkloadFactory | None = None,
    overhead: Sequence[tuple[str, str]] = (),
    warm_start: bool = False,
) -> SweepResult:
    """Run ``cells`` into ``out`` (see the module docstring); then measure the runner's
    overhead on each (workload, label) of ``overhead``, with the size, batch size, seed and
    preset of the sweep's first cell of that workload. ``progress``: ``True`` for bars,
    ``False`` for silence, or a :class:`~bench.host.progress.Progress`. ``warm_start``: a
    discarded warm-up run of the first cell first (``bench.campaign.warm_start``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world = distributed.world()
    dev = distributed.device_for(resolve_device(device), world)
    cells = list(cells)
    shown = as_progress(progress)
    result = SweepResult()
    freeze_heap()
    if warm_start and cells:
        from bench.campaign.warm_start import warm_up

        try:
            warm_up(cells[0], device=dev, data_root=data_root, workload_factory=workload_factory)
        except Exception as exc:  # noqa: BLE001 - the cell itself will record what fails
            shown.write(f"warm-up skipped: {type(exc).__name__}: {exc}")
    shown.start_sweep(len(cells))
    try:
        for spec in cells:
            shown.start_cell(spec.run_id)
            status = run_one(
                spec,
                out,
                device=dev,
                data_root=data_root,
                workload_factory=workload_factory,
                resume=resume,
                progress=shown,
            )
            shown.end_cell(spec.run_id, status)
            if status == "skipped":
                result.skipped.append(spec.run_id)
            else:
                result.statuses[spec.run_id] = status
    finally:
        shown.end_sweep()
    if world.distributed and overhead:
        if world.main:
            shown.write("timer overhead not measured: it times one process's loop")
        overhead = ()
    for workload, label in overhead:
        key = f"{workload}__{label}"
        like = next((c for c in cells if c.workload == workload), CellSpec(workload, label))
        try:
            result.overhead[key] = run_overhead(
                workload,
                label,
                out,
                device=dev,
                data_root=data_root,
                workload_factory=workload_factory,
                resume=resume,
                size=like.size,
                batch_size=like.batch_size,
                seed=like.seed,
                preset=like.preset,
                progress=shown,
            )
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed measurement must not end the sweep
            shown.write(f"overhead {key}: {type(exc).__name__}: {exc}")
    return result
