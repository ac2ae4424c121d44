"""Records: the schema, the crash-safe JSON Lines writer, Parquet for closed cells, and the
one reader of either format (torch-free: ``reports/`` reads them on any machine).

The names most callers need are here; each lives in one module: ``schema`` (kinds, fields,
phase keys, statuses), ``writer`` (``RecordWriter``), ``jsonl`` and ``parquet`` (the two
formats), ``reader`` (either format, a directory's files). The generated record set the size
of a paper schedule, for the scale benchmark, is ``bench.measure.record_scale``.
"""

from bench.records.jsonl import ErrorHandler, iter_jsonl, iter_lines, iter_numbered, read_jsonl
from bench.records.reader import (
    cell_file,
    iter_records,
    jsonl_files,
    read_dir,
    read_records,
    record_files,
)
from bench.records.schema import (
    BASE_FIELDS,
    BASE_KEY,
    CELL_FIELDS,
    CELL_STATUSES,
    CONSTANT_FIELDS,
    FAILED_STATUSES,
    FIELDS,
    KIND_FIELDS,
    KINDS,
    OPTIONAL_FIELDS,
    PHASE_COLUMN,
    RECORD_FIELDS,
    RECORD_SUFFIXES,
    STEP_FIELDS,
    TRAINING_KINDS,
    CorruptRecordWarning,
    json_safe,
    phase_column,
    phase_key,
    split_phase_key,
)
from bench.records.writer import RecordWriter

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
    "ErrorHandler",
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
