"""Records: the schema (kinds and field groups), a crash-safe writer, the one reader.

A cell's records are written as JSON Lines while it runs and compacted to Parquet once it is
closed (see docs/ARCHITECTURE.md, "Records"):

- **JSON Lines, appended.** What is constant for a cell (``CONSTANT_FIELDS``: the cell, its
  hyperparameters, the machine, versions, commit) is written once, as a *base line*
  ``{"base": {...}}``; every record after it carries only its own fields and is read as
  ``{**FIELDS as None, **base, **record}``. A training step is one ``step`` record holding
  its phase times (``phases``: seconds per ``phase_key``, summed over the phase's entries in
  the step; ``phase_count``: how many phase intervals were timed). The writer appends, and
  ``flush()`` pushes the lines to disk (``os.fsync``); the runner flushes at the end of every
  epoch and after every ``cell`` record. A process killed while writing leaves at most one
  cut line at the end of a file: the reader reports it as ``file:line: why`` (a
  ``CorruptRecordWarning``, or your ``on_error``) and skips it instead of failing.
- **Parquet, once closed** (``bench.columnar``): one row per record, the cell's constants in
  the file's metadata, a step's phase times as ``phase:<phase_key>`` columns.

Files written by earlier versions (every field on every line, one ``phase`` record per phase
entry) are read by the same reader. ``reports/`` reads records with it too.

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
    "RecordWriter",
    "cell_file",
    "iter_jsonl",
    "iter_lines",
    "iter_numbered",
    "iter_records",
    "json_safe",
    "jsonl_files",
    "phase_column",
    "phase_key",
    "read_dir",
    "read_jsonl",
    "read_records",
    "record_files",
    "split_phase_key",
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


class RecordWriter:
    """Appends records to ``path``, read back as ``{**FIELDS as None, **base, **record}``.

    ``base`` holds the fields shared by all records of a cell (``update_base`` adds to it,
    e.g. once the optimiser, and with it ``impl`` and ``hparams``, is known); it is written
    as one base line before the next record, never on every record. Lines are buffered
    until ``flush()``; ``write(..., flush=True)`` flushes at once.
    """

    def __init__(self, path: str | os.PathLike[str], base: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.base: dict[str, Any] = dict(base or {})
        needs_newline = False
        existing = self.path.exists() and self.path.stat().st_size > 0
        if existing:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if needs_newline:  # a cut last line must not swallow the next record
            self._file.write("\n")
        # a base line before the first record: always after earlier lines (whose base must
        # not leak into this writer's records), else once there is a base to write
        self._base_due = existing or bool(self.base)
        self.count = 0
        self.statuses: list[str] = []  # the ``cell`` statuses written, in order

    def update_base(self, **fields: Any) -> None:
        self.base.update(fields)
        self._base_due = True

    def _dumps(self, obj: Mapping[str, Any]) -> str:
        return json.dumps(obj, allow_nan=False, separators=(",", ":")) + "\n"

    def write(self, record: Mapping[str, Any], *, flush: bool = False) -> None:
        if self._base_due:
            self._file.write(self._dumps({BASE_KEY: json_safe(self.base)}))
            self._base_due = False
        safe = json_safe(record)
        if safe.get("time") is None:
            safe["time"] = time.time()
        self._file.write(self._dumps(safe))
        self.count += 1
        if safe.get("kind") == "cell":
            self.statuses.append(str(safe.get("name")))
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


_NONE = dict.fromkeys(FIELDS)


def iter_numbered(
    path: str | os.PathLike[str], on_error: ErrorHandler | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each record of the JSON Lines file ``path``, read as
    ``{**FIELDS as None, **base, **record}`` (``base``: the last base line before it, if
    any); corrupt lines are reported to ``on_error(path, lineno, line, why)`` (default: a
    ``CorruptRecordWarning``) and skipped. Undecodable bytes are replaced, never fatal."""
    for lineno, base, record in iter_lines(path, on_error):
        yield lineno, {**_NONE, **base, **record}


def iter_lines(
    path: str | os.PathLike[str], on_error: ErrorHandler | None = None
) -> Iterator[tuple[int, dict[str, Any], dict[str, Any]]]:
    """``(line number, base, record)`` for each record line of a JSON Lines file: the record
    as written and the base in force for it (one dict, shared by the records after its base
    line). ``iter_numbered`` merges the two; compaction keeps the base apart."""
    path = Path(path)
    report = on_error or _warn
    base: dict[str, Any] = {}
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
            if BASE_KEY in record and len(record) == 1:
                if not isinstance(record[BASE_KEY], dict):
                    report(path, lineno, text, "base line without a JSON object")
                    continue
                base = record[BASE_KEY]
                continue
            yield lineno, base, record


def iter_jsonl(
    path: str | os.PathLike[str], on_error: ErrorHandler | None = None
) -> Iterator[dict[str, Any]]:
    """The records of the JSON Lines file ``path`` (see ``iter_numbered``)."""
    for _lineno, record in iter_numbered(path, on_error):
        yield record


def read_jsonl(
    path: str | os.PathLike[str], on_error: ErrorHandler | None = None
) -> list[dict[str, Any]]:
    """All records of one JSON Lines file (see ``iter_jsonl``)."""
    return list(iter_jsonl(path, on_error))


def iter_records(
    path: str | os.PathLike[str],
    on_error: ErrorHandler | None = None,
    *,
    kinds: Iterable[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """The records of one file, Parquet or JSON Lines, as the same dicts (``read_jsonl``'s);
    with ``kinds``, only the records of those kinds (from Parquet, only their rows are read).

    A Parquet file that cannot be read is reported to ``on_error`` (line 0) and gives none.
    """
    path = Path(path)
    if path.suffix != ".parquet":
        wanted = None if kinds is None else frozenset(kinds)
        for record in iter_jsonl(path, on_error):
            if wanted is None or record.get("kind") in wanted:
                yield record
        return
    from bench import columnar  # pyarrow is imported only where Parquet is read

    try:
        records = columnar.read_records(path, kinds=kinds)
    except columnar.UNREADABLE as exc:
        (on_error or _warn)(path, 0, "", f"not a readable Parquet file ({exc})")
        return
    yield from records


def read_records(
    path: str | os.PathLike[str],
    on_error: ErrorHandler | None = None,
    *,
    kinds: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """All records of one file, Parquet or JSON Lines (see ``iter_records``)."""
    return list(iter_records(path, on_error, kinds=kinds))


def jsonl_files(directory: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """The JSON Lines records files (``*.jsonl``) in ``directory``, sorted by path."""
    pattern = "**/*.jsonl" if recursive else "*.jsonl"
    return sorted(p for p in Path(directory).glob(pattern) if p.is_file())


def record_files(directory: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """The records files in ``directory`` (``*.parquet``, ``*.jsonl``), sorted by path.

    A cell compacted to ``X.parquet`` is listed once: a ``X.jsonl`` beside it (left by a
    process stopped between writing the one and removing the other) is not listed.
    Superseded attempts of a cell are kept under other suffixes (``*.partial``,
    ``*.replaced``; see ``bench.sweep``), so they are never listed here.
    """
    found: list[Path] = []
    for suffix in RECORD_SUFFIXES:
        pattern = f"**/*{suffix}" if recursive else f"*{suffix}"
        found.extend(p for p in Path(directory).glob(pattern) if p.is_file())
    parquet = {p.with_suffix("") for p in found if p.suffix == ".parquet"}
    return sorted(p for p in found if p.suffix == ".parquet" or p.with_suffix("") not in parquet)


def cell_file(path: str | os.PathLike[str]) -> Path | None:
    """The file holding a cell's records: ``path`` names it with either suffix (or none);
    its Parquet file once it was compacted, else its JSON Lines, else ``None``."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in RECORD_SUFFIXES else path
    for suffix in RECORD_SUFFIXES:
        candidate = stem.with_name(stem.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def read_dir(
    directory: str | os.PathLike[str],
    on_error: ErrorHandler | None = None,
    *,
    recursive: bool = False,
) -> list[dict[str, Any]]:
    """All records of the files ``record_files`` lists."""
    out: list[dict[str, Any]] = []
    for path in record_files(directory, recursive=recursive):
        out.extend(iter_records(path, on_error))
    return out
