"""Records as Parquet: a closed cell's JSON Lines compacted, and read back by column.

A cell writes JSON Lines while it runs (``bench.records.writer.RecordWriter``: appended, flushed per
epoch, crash-safe); once it is closed ``compact`` rewrites the file as ``<run_id>.parquet``
and removes the JSON Lines. The schema is the one in ``bench.records.schema``; a file's layout:

- one row per record, in the order written. Columns: the varying fields
  (``RECORD_FIELDS``), the per-kind fields (``KIND_FIELDS``), then one float column per
  phase key of the cell's steps (``phase:<phase_key>``: a step's seconds in that phase,
  null where the step had none), each typed from its values (bool, int64, float64, string);
  a column holding anything else (a cell's message beside numbers in ``value``) is kept as
  JSON text and listed in the metadata's ``json_columns``. Columns with no value at all are
  left out: read back, the field is null.
- the file's metadata (key ``fngd-bench``): ``constants``, the ``CONSTANT_FIELDS`` all
  records share, written once; a constant field that varies in a file is a column instead.

Timings are float64, unrounded: zstd with byte-stream-split (a timing's high bytes repeat,
its low bytes do not) keeps a training step, every phase included, at a few tens of bytes.
Reading takes only the columns asked for (``read_table``), so the report never decodes a
column it does not use.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.records.jsonl import ErrorHandler, iter_lines
from bench.records.schema import (
    CONSTANT_FIELDS,
    FIELDS,
    KIND_FIELDS,
    PHASE_COLUMN,
    RECORD_FIELDS,
)

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "UNREADABLE",
    "compact",
    "file_metadata",
    "read_records",
    "read_table",
    "to_numpy",
    "to_table",
    "write_table",
]

#: The metadata key of a records file, and the version of its layout.
METADATA_KEY = b"fngd-bench"
FORMAT_VERSION = 2
#: What reading a damaged or foreign file raises.
UNREADABLE = (pa.ArrowException, OSError, ValueError, KeyError)

_PHASES = KIND_FIELDS["step"][0]  # the step record's dict of phase times
_KIND_ORDER = tuple(dict.fromkeys(f for fields in KIND_FIELDS.values() for f in fields))
_NONE = dict.fromkeys(FIELDS)
_CONSTANT = frozenset(CONSTANT_FIELDS)
_JSON = {"allow_nan": False, "separators": (",", ":"), "sort_keys": True}


def _typed(values: list[Any]) -> tuple[pa.Array, bool] | None:
    """The Arrow array of one column's values, and whether it holds JSON text; ``None``
    when every value is null."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    types = {type(v) for v in present}
    if types == {bool}:
        return pa.array(values, pa.bool_()), False
    if types == {int}:
        with contextlib.suppress(OverflowError):
            return pa.array(values, pa.int64()), False
    if types <= {int, float}:
        return pa.array(values, pa.float64()), False
    if types == {str}:
        return pa.array(values, pa.string()), False
    text = [None if v is None else json.dumps(v, **_JSON) for v in values]
    return pa.array(text, pa.string()), True


def to_table(records: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The records (``bench.records``' dicts, JSON-safe) as one table in the layout above."""
    constants: dict[str, Any] = {}
    for field in CONSTANT_FIELDS if records else ():
        first = records[0].get(field)
        if (first is not None or field in _NONE) and all(r.get(field) == first for r in records):
            constants[field] = first
    return _table(records, constants)


def _lines_table(lines: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> pa.Table:
    """A JSON Lines file's records as a table: under one base line whose fields are all
    cell constants no record sets again (what the writer gives), its base is the constants
    as it stands, with no scan of every record; otherwise each record read whole."""
    bases = {id(base): base for _lineno, base, _record in lines}
    keys: set[str] = set()
    for _lineno, _base, record in lines:
        keys.update(record)
    base = next(iter(bases.values()), {})
    if len(bases) > 1 or not set(base) <= _CONSTANT.difference(keys):
        return to_table([{**_NONE, **b, **r} for _lineno, b, r in lines])
    constants = {f: base.get(f) for f in CONSTANT_FIELDS if f in base or f in _NONE}
    constants = {f: v for f, v in constants.items() if f not in keys}
    return _table([record for _lineno, _base, record in lines], constants)


def _table(records: Sequence[Mapping[str, Any]], constants: dict[str, Any]) -> pa.Table:
    """``records`` as rows, but for the ``constants``: the file's metadata."""
    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r))
    names.pop(_PHASES, None)
    ordered = [f for f in RECORD_FIELDS if f in names]
    ordered += [f for f in _KIND_ORDER if f in names and f not in ordered]
    ordered += [f for f in names if f not in ordered and f not in constants]
    phase_keys: dict[str, None] = {}
    for r in records:
        phases = r.get(_PHASES)
        if phases:
            phase_keys.update(dict.fromkeys(phases))

    arrays: list[pa.Array] = []
    fields: list[str] = []
    json_columns: list[str] = []
    for name in ordered:
        typed = _typed([r.get(name) for r in records])
        if typed is None:
            continue
        array, is_json = typed
        arrays.append(array)
        fields.append(name)
        if is_json:
            json_columns.append(name)
    for key in phase_keys:
        values = [(r.get(_PHASES) or {}).get(key) for r in records]
        arrays.append(pa.array(values, pa.float64()))
        fields.append(PHASE_COLUMN + key)
    meta = {"version": FORMAT_VERSION, "constants": constants, "json_columns": json_columns}
    table = pa.Table.from_arrays(arrays, names=fields) if fields else pa.table({})
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, allow_nan=False)})


def write_table(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write ``table`` to ``path`` atomically (a temporary file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    try:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            compression_level=9,
            use_dictionary=[f.name for f in table.schema if f.name not in floats],
            use_byte_stream_split=floats,
        )
        with open(tmp, "rb") as f, contextlib.suppress(OSError):
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def compact(path: str | os.PathLike[str], on_error: ErrorHandler | None = None) -> Path:
    """Rewrite the closed cell ``<stem>.jsonl`` as ``<stem>.parquet``; remove the JSON Lines.

    The Parquet file is complete before the JSON Lines go (a reader that finds both takes
    the Parquet file: ``bench.records.record_files``). Corrupt lines are reported to
    ``on_error`` as the reader reports them, and left out. Returns the Parquet path.
    """
    path = Path(path)
    target = path.with_suffix(".parquet")
    write_table(_lines_table(list(iter_lines(path, on_error))), target)
    with contextlib.suppress(OSError):  # the directory entry of the rename, on disk
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    path.unlink()
    return target


def file_metadata(path: str | os.PathLike[str]) -> tuple[list[str], dict[str, Any]]:
    """The columns of a records file and its metadata (``constants``, ``json_columns``)."""
    schema = pq.read_schema(path)
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError("no fngd-bench metadata: not a records file")
    meta = json.loads(raw)
    if not isinstance(meta, dict) or not isinstance(meta.get("constants"), dict):
        raise ValueError("damaged fngd-bench metadata")
    return list(schema.names), meta


def read_table(
    path: str | os.PathLike[str],
    columns: Iterable[str] | None = None,
    *,
    kinds: Iterable[str] | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """The columns of ``columns`` the file has (all: ``None``) and the file's metadata;
    with ``kinds``, only the rows of those kinds.

    Fields stored as constants are not columns: the metadata's ``constants`` holds them.
    """
    names, meta = file_metadata(path)
    wanted = names if columns is None else [c for c in dict.fromkeys(columns) if c in names]
    if kinds is None:
        return pq.read_table(path, columns=wanted), meta
    kinds = list(kinds)
    if "kind" not in names:
        return pq.read_table(path, columns=wanted).slice(0, 0), meta
    table = pq.read_table(path, columns=list(dict.fromkeys([*wanted, "kind"])))
    table = table.filter(pc.is_in(table["kind"], pa.array(kinds, pa.string())))
    return table.select(wanted), meta


def to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A column as NumPy: numbers as float64 (null: NaN) or int64, text and flags as objects
    in which equal values are one shared object (null: ``None``)."""
    kind = column.type
    if pa.types.is_floating(kind) or (pa.types.is_integer(kind) and column.null_count):
        return column.to_numpy().astype("float64", copy=False)
    if pa.types.is_integer(kind):
        return column.to_numpy()
    encoded = pc.dictionary_encode(column).combine_chunks()
    values = np.empty(len(encoded.dictionary) + 1, dtype=object)
    values[:-1] = encoded.dictionary.to_pylist()
    values[-1] = None
    indices = encoded.indices.fill_null(len(encoded.dictionary)).to_numpy()
    return values[indices]


def read_records(
    path: str | os.PathLike[str], *, kinds: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """The records of a Parquet records file as the JSON Lines reader gives them: every field
    of ``FIELDS`` (null where unset), any other field where it has a value (a kind's own
    fields, ``KIND_FIELDS``, on records of that kind), a step's ``phases`` as a dict.
    ``kinds``: only the records of those kinds."""
    table, meta = read_table(path, kinds=kinds)
    constants = meta["constants"]
    decode = frozenset(meta.get("json_columns", ()))
    out: list[dict[str, Any]] = []
    for row in table.to_pylist():
        record = {**_NONE, **constants}
        phases: dict[str, float] = {}
        for name, value in row.items():
            if name.startswith(PHASE_COLUMN):
                if value is not None:
                    phases[name[len(PHASE_COLUMN) :]] = value
                continue
            if value is not None and name in decode:
                value = json.loads(value)
            if value is not None or name in _NONE:
                record[name] = value
        if _PHASES in KIND_FIELDS.get(record["kind"], ()):
            record[_PHASES] = phases
        out.append(record)
    return out
