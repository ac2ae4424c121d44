"""JSON Lines records: the schema's field list, a crash-safe writer and a forgiving reader.

One JSON object per line, one measurement per object (see docs/ARCHITECTURE.md, "Records").
The writer appends, and ``flush()`` pushes the lines to disk (``os.fsync``); the runner
flushes at the end of every epoch and after every ``cell`` record. A process killed while
writing leaves at most one cut line at the end of a file: the reader reports it (a
``CorruptRecordWarning``, or your ``on_error``) and skips it instead of failing.

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
    "FIELDS",
    "KINDS",
    "CorruptRecordWarning",
    "RecordWriter",
    "iter_jsonl",
    "json_safe",
    "read_dir",
    "read_jsonl",
]

# Fields every record carries (``None`` where they do not apply), in the order written.
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
# Fields some kinds add: phase/step records (parent, warmup, mode), everyone (the rest).
EXTRA_FIELDS = (
    "parent",
    "warmup",
    "mode",
    "family",
    "attempt",
    "size",
    "epochs",
    "steps_per_epoch",
    "max_steps_per_epoch",
    "replay_first_epoch",
    "preset",
)
FIELDS = BASE_FIELDS + EXTRA_FIELDS
KINDS = ("phase", "step", "epoch", "eval", "memory", "target", "overhead", "cell", "profile")


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
        f"{path}:{lineno}: skipped a corrupt record ({why}): {shown!r}",
        CorruptRecordWarning,
        stacklevel=3,
    )


def iter_jsonl(
    path: str | os.PathLike[str], on_error: ErrorHandler | None = None
) -> Iterator[dict[str, Any]]:
    """The JSON objects of ``path``, one per non-blank line; corrupt lines are reported
    to ``on_error(path, lineno, line, why)`` (default: a ``CorruptRecordWarning``) and
    skipped."""
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
                report(path, lineno, text, f"invalid JSON: {exc.msg}")
                continue
            if not isinstance(record, dict):
                report(path, lineno, text, "not a JSON object")
                continue
            yield record


def read_jsonl(
    path: str | os.PathLike[str], on_error: ErrorHandler | None = None
) -> list[dict[str, Any]]:
    """All records of one file (see ``iter_jsonl``)."""
    return list(iter_jsonl(path, on_error))


def read_dir(
    directory: str | os.PathLike[str],
    on_error: ErrorHandler | None = None,
    *,
    recursive: bool = False,
) -> list[dict[str, Any]]:
    """All records of the ``*.jsonl`` files in ``directory`` (sorted by file name).

    Superseded attempts of a cell are kept under other suffixes (``*.partial``,
    ``*.replaced``; see ``bench.sweep``), so they are never read here.
    """
    directory = Path(directory)
    pattern = "**/*.jsonl" if recursive else "*.jsonl"
    out: list[dict[str, Any]] = []
    for path in sorted(directory.glob(pattern)):
        if path.is_file():
            out.extend(iter_jsonl(path, on_error))
    return out
