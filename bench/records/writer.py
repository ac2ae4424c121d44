"""The crash-safe writer of a cell's JSON Lines records.

What is constant for a cell (``CONSTANT_FIELDS``: the cell, its hyperparameters, the machine,
versions, commit) is written once, as a *base line* ``{"base": {...}}``; every record after
it carries only its own fields and is read as ``{**FIELDS as None, **base, **record}``. A
training step is one ``step`` record holding its phase times (``phases``: seconds per
``phase_key``; ``phase_count``: how many phase intervals were timed). The writer appends, and
``flush()`` pushes the lines to disk (``os.fsync``); the runner flushes at the end of every
epoch and after every ``cell`` record, so a process killed while writing leaves at most one
cut line at the end of a file, which the reader reports and skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.records.schema import BASE_KEY, json_safe

__all__ = ["RecordWriter"]


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
