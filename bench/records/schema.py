"""The record schema, declared once: record kinds and their fields, what is constant for a
cell, phase keys and columns, cell statuses, and how values are made JSON-safe.

The writers (the runner, the overhead measurement, the profiler) write it and the report
(``reports/``) reads it by these names. A cell's records are written as JSON Lines while it
runs (``bench.records.writer``) and compacted to Parquet once it is closed
(``bench.records.parquet``); see docs/RECORDS.md.

Values are made JSON-safe on the way out: tuples become lists, tensors and NumPy scalars
become numbers or lists, ``torch.device``/``dtype`` and other objects become strings, and
non-finite floats (a diverged loss) become ``null`` so every file is strict JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "BASE_FIELDS",
    "BASE_KEY",
    "CELL_FIELDS",
    "CELL_STATUSES",
    "CONSTANT_FIELDS",
    "FAILED_STATUSES",
    "FIELDS",
    "KINDS",
    "KIND_FIELDS",
    "OPTIONAL_FIELDS",
    "PHASE_COLUMN",
    "RECORD_FIELDS",
    "RECORD_SUFFIXES",
    "STEP_FIELDS",
    "TRAINING_KINDS",
    "CorruptRecordWarning",
    "json_safe",
    "phase_column",
    "phase_key",
    "split_phase_key",
]

# The schema, declared once: the writers (bench.cell.runner, bench.measure.overhead,
# bench.measure.profile) write it and the report (reports/) reads it by these names.

#: Fields every record carries (``None`` where they do not apply), in the order written.
BASE_FIELDS = (
    "run_id",
    "workload",
    "optimizer",
    "impl",
    "hparams",
    "seed",
    "device",
    "device_name",
    "data_source",
    "batch_size",
    "kind",
    "epoch",
    "step",
    "phase",
    "seconds",
    "name",
    "value",
    "torch_version",
    "cuda_version",
    "git_commit",
    "time",
)
#: Fields of timed intervals (``step``, ``phase`` and ``profile`` records): the enclosing
#: phase, whether the step is a warm-up step, and the optimiser's mode in that step.
STEP_FIELDS = ("parent", "warmup", "mode")
#: Fields the runner sets for a whole cell: ``family`` is the optimiser factory behind the
#: ``optimizer`` label (``kfac-inv1`` -> ``kfac``), ``attempt`` the cell's attempt number,
#: ``size`` the workload size, ``steps_per_epoch``/``max_steps_per_epoch`` how long epochs
#: were (cut to), ``replay_first_epoch`` whether later epochs replay the first one's batches;
#: ``hparams_source`` says where the cell's hyperparameter overrides came from (``preset``,
#: or ``study <name> trial <n>``), ``study`` names the tuning study (``bench.campaign.tune``)
#: the cell is a trial of or took them from, and ``trial`` the trial the cell is (tuning runs only);
#: ``rank`` is the process that wrote the record and ``world_size`` how many trained the cell
#: at once (torchrun: ``bench.host.distributed``; rank 0 writes, 1 and 0 in one process).
CELL_FIELDS = (
    "family",
    "attempt",
    "size",
    "epochs",
    "steps_per_epoch",
    "max_steps_per_epoch",
    "replay_first_epoch",
    "preset",
    "hparams_source",
    "study",
    "trial",
    "rank",
    "world_size",
)
#: Every field a ``RecordWriter`` writes on every record (``None`` where unset), in order.
FIELDS = BASE_FIELDS + STEP_FIELDS + CELL_FIELDS

#: What one record measures (docs/ARCHITECTURE.md, "Records"). ``phase`` records (one per
#: phase entry) are what earlier versions wrote; a ``step`` record now holds its phases.
KINDS = (
    "phase",
    "step",
    "epoch",
    "eval",
    "memory",
    "target",
    "staleness",
    "overhead",
    "cell",
    "profile",
)
#: The kinds a training cell writes (the overhead measurement and the profiler write the rest).
TRAINING_KINDS = ("phase", "step", "epoch", "eval", "memory", "target", "staleness", "cell")
#: Fields only records of one kind carry (absent, not null, on the others).
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    # seconds per phase_key (phases of the step, summed over their entries); how many phase
    # intervals the step timed; on several processes every rank's time of the step
    # (``seconds``: the slowest)
    "step": ("phases", "phase_count", "rank_seconds"),
    "epoch": ("steps", "train_seconds"),  # steps run in the epoch; cumulative training time
    "eval": ("eval_seconds", "split"),  # evaluation time; ``test`` or ``val`` (tuning)
    # the metric, its value and split when the target was met; evaluation time until then
    # (kept out of ``seconds``, the training time)
    "target": ("metric", "metric_value", "split", "eval_seconds"),
    # stored against fresh coefficients' direction on the probe batch: value = cosine
    "staleness": ("norm_ratio", "probe_seconds"),
    "overhead": (
        "median_ratio",
        "estimate",
        "plain_step_seconds",
        "timed_step_seconds",
        "phases_per_step",
        "phase_cost_seconds",
        "step_cost_seconds",
        "steps",
        "pairs",
    ),
    "profile": ("trace",),  # the trace file the step was read from
    "cell": ("traceback",),  # ``error`` cells only
}
#: Fields of the machine description that records written since it grew carry.
OPTIONAL_FIELDS = ("threads",)

#: Fields that vary from record to record; the other fields of ``FIELDS`` describe the cell.
RECORD_FIELDS = ("kind", "epoch", "step", "phase", "seconds", "name", "value", "time")
RECORD_FIELDS += STEP_FIELDS
#: Fields constant for a cell, written once per cell: a base line in JSON Lines, the file's
#: metadata in Parquet.
CONSTANT_FIELDS = tuple(f for f in FIELDS if f not in RECORD_FIELDS) + OPTIONAL_FIELDS
#: The key of a JSON Lines base line: ``{"base": {field: value, ...}}``.
BASE_KEY = "base"

#: A step's phases: ``phase_key(name, parent)`` is the phase's name, or ``parent>name`` when
#: it ran inside another phase (FNGD's weighted sum inside ``backward``: its exclusive time
#: is what the report subtracts from ``backward``). In Parquet each key is one column,
#: ``PHASE_COLUMN + key``.
PHASE_SEPARATOR = ">"
PHASE_COLUMN = "phase:"

#: The suffixes of records files: Parquet (a closed cell) and JSON Lines (a running or
#: interrupted cell, and everything written by earlier versions).
RECORD_SUFFIXES = (".parquet", ".jsonl")

#: ``name`` of a ``cell`` record: its status. ``started`` first, then one of the others.
CELL_STATUSES = ("started", "finished", "diverged", "oom", "error")
#: The statuses of a cell that ended without finishing.
FAILED_STATUSES = ("diverged", "oom", "error")


class CorruptRecordWarning(UserWarning):
    """A line of a records file is not a JSON object; it was skipped."""


def phase_key(name: str, parent: str | None = None) -> str:
    """The key of phase ``name`` entered inside ``parent`` (``None``: at the step's top)."""
    for part in (name, parent):
        if part is not None and PHASE_SEPARATOR in part:
            raise ValueError(f"phase name {part!r} contains {PHASE_SEPARATOR!r}")
    return name if parent is None else f"{parent}{PHASE_SEPARATOR}{name}"


def split_phase_key(key: str) -> tuple[str, str | None]:
    """``(name, parent)`` of a ``phase_key``."""
    parent, sep, name = key.partition(PHASE_SEPARATOR)
    return (name, parent) if sep else (key, None)


def phase_column(key: str) -> str:
    """The Parquet column (and report column) of a ``phase_key``."""
    return PHASE_COLUMN + key


def json_safe(value: Any) -> Any:
    """``value`` converted to plain JSON types (see the module docstring)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    tolist = getattr(value, "tolist", None)  # torch.Tensor, numpy arrays and scalars
    if callable(tolist):
        try:
            return json_safe(tolist())
        except Exception:  # noqa: BLE001 - fall back to the string form below
            pass
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return json_safe(item())
        except Exception:  # noqa: BLE001
            pass
    return str(value)

