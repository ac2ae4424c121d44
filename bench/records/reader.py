"""The one reader of records, Parquet or JSON Lines, and the files of a results directory.

Parquet (closed cells, ``bench.records.parquet``) and JSON Lines (running or interrupted
cells, ``bench.records.jsonl``) give the same dicts; ``reports/`` reads records through it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.records.jsonl import ErrorHandler, iter_jsonl, warn
from bench.records.schema import RECORD_SUFFIXES

__all__ = ["cell_file", "iter_records", "jsonl_files", "read_dir", "read_records", "record_files"]


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
    from bench.records import parquet  # pyarrow is imported only where Parquet is read

    try:
        records = parquet.read_records(path, kinds=kinds)
    except parquet.UNREADABLE as exc:
        (on_error or warn)(path, 0, "", f"not a readable Parquet file ({exc})")
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
    ``*.replaced``; see ``bench.campaign.sweep``), so they are never listed here.
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
