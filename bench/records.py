"""JSON Lines records: the schema (kinds and field groups), a crash-safe writer, the one reader.

One JSON object per line, one measurement per object (see docs/ARCHITECTURE.md, "Records").
The writer appends, and ``flush()`` pushes the lines to disk (``os.fsync``); the runner
flushes at the end of every epoch and after every ``cell`` record. A process killed while
writing leaves at most one cut line at the end of a file: the reader reports it as
``file:line: why`` (a ``CorruptRecordWarning``, or your ``on_error``) and skips it instead of
failing. ``reports/`` reads records with the same reader.

Values are made JSON-safe on the way out: tuples become lists, tensors and NumPy scalars
become numbers or lists, ``torch.device``/``dtype`` and other objects become strings, and
non-finite floats (a diverged loss) become ``null`` so every file is strict JSON.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "BASE_FIELDS",
    "CELL_FIELDS",
    "CELL_STATUSES",
    "FAILED_STATUSES",
    "FIELDS",
    "KINDS",
    "KIND_FIELDS",
    "OPTIONAL_FIELDS",
    "STEP_FIELDS",
    "TRAINING_KINDS",
    "CorruptRecordWarning",
    "RecordWriter",
    "iter_jsonl",
    "iter_numbered",
    "json_safe",
    "jsonl_files",
    "read_dir",
    "read_jsonl",
]

# The schema, declared once: the writers (bench.runner, bench.overhead, bench.profile) write
# it and the report (reports/) reads it by these names.

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
#: or ``study <name> trial <n>``), ``study`` names the tuning study (``bench.tune``) the cell
#: is a trial of or took them from, and ``trial`` the trial the cell is (tuning runs only);
#: ``rank`` is the process that wrote the record and ``world_size`` how many trained the cell
#: at once (torchrun: ``bench.distributed``; rank 0 writes, 1 and 0 in one process).
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

#: What one record measures (docs/ARCHITECTURE.md, "Records").
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
    # a cell on several processes: every rank's time of the step (``seconds``: the slowest)
    "step": ("rank_seconds",),
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

#: ``name`` of a ``cell`` record: its status. ``started`` first, then one of the others.
CELL_STATUSES = ("started", "finished", "diverged", "oom", "error")
#: The statuses of a cell that ended without finishing.
FAILED_STATUSES = ("diverged", "oom", "error")


class CorruptRecordWarning(UserWarning):
    """A line of a records file is not a JSON object; it was skipped."""


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


class RecordWriter:
    """Appends records to ``path``; every record is ``{**FIELDS as None, **base, **record}``.

    ``base`` holds the fields shared by all records of a cell (``update_base`` adds to it,
    e.g. once the optimiser, and with it ``impl`` and ``hparams``, is known). Lines are
    buffered until ``flush()``; ``write(..., flush=True)`` flushes at once.
    """

    def __init__(self, path: str | os.PathLike[str], base: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.base: dict[str, Any] = {k: None for k in FIELDS}
        if base:
            self.base.update(base)
        self._safe_base = json_safe(self.base)
        needs_newline = False
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if needs_newline:  # a cut last line must not swallow the next record
            self._file.write("\n")
        self.count = 0
        self.statuses: list[str] = []  # the ``cell`` statuses written, in order

    def update_base(self, **fields: Any) -> None:
        self.base.update(fields)
        self._safe_base = json_safe(self.base)

    def write(self, record: Mapping[str, Any], *, flush: bool = False) -> None:
        merged = dict(self._safe_base)
        merged.update(json_safe(record))
        if merged.get("time") is None:
            merged["time"] = time.time()
        self._file.write(json.dumps(merged, allow_nan=False, separators=(",", ":")) + "\n")
        self.count += 1
        if merged.get("kind") == "cell":
            self.statuses.append(str(merged.get("name")))
        if flush:
            self.flush()

    def write_many(self, records: Iterable[Mapping[str, Any]], *, flush: bool = False) -> None:
        now = time.time()
        for record in records:
            if record.get("time") is None:
                record = {**record, "time": now}
            self.write(record)
        if flush:
            self.flush()

    def flush(self) -> None:
        if self._file.closed:
            return
        self._file.flush()
        with contextlib.suppress(OSError):  # some file systems cannot fsync
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ErrorHandler = Callable[[Path, int, str, str], None]


def _warn(path: Path, lineno: int, line: str, why: str) -> None:
    shown = line if len(line) <= 80 else line[:77] + "..."
    warnings.warn(
        f"{path}:{lineno}: {why}, record skipped: {shown!r}",
        CorruptRecordWarning,
        stacklevel=3,
    )


def iter_numbered(
    path: str | os.PathLike[str], on_error: ErrorHandler | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each JSON object of ``path``, one per non-blank line;
    corrupt lines are reported to ``on_error(path, lineno, line, why)`` (default: a
    ``CorruptRecordWarning``) and skipped. Undecodable bytes are replaced, never fatal."""
    path = Path(path)
    report = on_error or _warn
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                report(path, lineno, text, f"not valid JSON ({exc.msg})")
                continue
            if not isinstance(record, dict):
                report(path, lineno, text, f"not a JSON object ({type(record).__name__})")
                continue
            yield lineno, record


def iter_jsonl(
    path: str | os.PathLike[str], on_error: ErrorHandler | None = None
) -> Iterator[dict[str, Any]]:
    """The records of ``path`` (see ``iter_numbered``)."""
    for _lineno, record in iter_numbered(path, on_error):
        yield record


def read_jsonl(
    path: str | os.PathLike[str], on_error: ErrorHandler | None = None
) -> list[dict[str, Any]]:
    """All records of one file (see ``iter_jsonl``)."""
    return list(iter_jsonl(path, on_error))


def jsonl_files(directory: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """The records files (``*.jsonl``) in ``directory``, sorted by path.

    Superseded attempts of a cell are kept under other suffixes (``*.partial``,
    ``*.replaced``; see ``bench.sweep``), so they are never listed here.
    """
    pattern = "**/*.jsonl" if recursive else "*.jsonl"
    return sorted(p for p in Path(directory).glob(pattern) if p.is_file())


def read_dir(
    directory: str | os.PathLike[str],
    on_error: ErrorHandler | None = None,
    *,
    recursive: bool = False,
) -> list[dict[str, Any]]:
    """All records of the files ``jsonl_files`` lists."""
    out: list[dict[str, Any]] = []
    for path in jsonl_files(directory, recursive=recursive):
        out.extend(iter_jsonl(path, on_error))
    return out
