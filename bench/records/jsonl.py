"""Reading JSON Lines records: base lines merged in, a corrupt line reported and skipped.

Files written by earlier versions (every field on every line, one ``phase`` record per phase
entry) read the same. A cut or corrupt line is reported as ``file:line: why`` (a
``CorruptRecordWarning``, or the caller's ``on_error``) instead of failing the read.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.records.schema import BASE_KEY, FIELDS, CorruptRecordWarning

__all__ = ["ErrorHandler", "iter_jsonl", "iter_lines", "iter_numbered", "read_jsonl", "warn"]

ErrorHandler = Callable[[Path, int, str, str], None]


def warn(path: Path, lineno: int, line: str, why: str) -> None:
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
    report = on_error or warn
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
