"""Read benchmark records (Parquet and JSON Lines) into one pandas DataFrame.

Every records file under the given directories (recursively; ``bench.records.record_files``)
is read: a closed cell's Parquet file column by column, taking only the columns the report
uses (the cell's constants come once, from the file's metadata), and the JSON Lines of a
running or interrupted cell, or of results written by earlier versions, line by line. A line
that is not a JSON object, or lacks the fields every record needs, is skipped and reported as
``file:line: reason`` so that one corrupt line never hides the rest of a run.

One row per record, and one per training step: a ``step`` row holds the step's phase times
in ``phase:<phase_key>`` columns (``bench.records.phase_key``: a phase, or ``parent>phase``)
and ``phase_count``, the phase intervals it timed. Files from earlier versions hold one
``phase`` record per phase entry: each is added to the row of its step (same cell, epoch,
step, warm-up flag and mode); phase records without such a step record form a ``phase`` row
of their own (no step time). So every file gives the same frame, whichever way it was
written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.records import (
    BASE_FIELDS,
    CELL_FIELDS,
    KINDS,
    PHASE_COLUMN,
    STEP_FIELDS,
    iter_numbered,
    phase_column,
    phase_key,
    record_files,
)
from reports.common import phase_columns
from reports.vocabulary import family_of

#: Per-kind fields the tables read (``bench.records.KIND_FIELDS``): the steps an epoch record
#: covers, the metric of a target record and the value it was met with (the side it was met
#: from says which way the metric is better), a staleness record's norm ratio, the
#: evaluation's own time of an eval record, the phase intervals a step timed, and every
#: rank's time of a distributed step.
KIND_COLUMNS = (
    "steps",
    "metric",
    "metric_value",
    "norm_ratio",
    "eval_seconds",
    "phase_count",
    "rank_seconds",
)
#: Columns of the frame :func:`load_records` returns (``source`` is ``file:line`` for JSON
#: Lines, the file for Parquet), followed by one ``phase:<phase_key>`` column per phase key.
COLUMNS = BASE_FIELDS + STEP_FIELDS + CELL_FIELDS + KIND_COLUMNS + ("hparams_json", "source")
_KINDS = frozenset(KINDS)
#: Fields without which a record cannot be placed in any table.
REQUIRED = ("kind", "workload", "optimizer")
_PHASES, _PHASE_COUNT = "phases", "phase_count"  # a step record's (KIND_FIELDS["step"])

_NUMERIC = (
    "seed",
    "batch_size",
    "epoch",
    "step",
    "seconds",
    "time",
    "attempt",
    "steps_per_epoch",
    "max_steps_per_epoch",
    "steps",
    "norm_ratio",
    "eval_seconds",
    "phase_count",
    "metric_value",
)
_TEXT_KEYS = ("run_id", "impl", "device", "device_name", "data_source")
_TEXT = _TEXT_KEYS + (
    "kind",
    "workload",
    "optimizer",
    "phase",
    "parent",
    "mode",
    "name",
    "torch_version",
    "cuda_version",
    "git_commit",
    "family",
    "size",
    "metric",
)
_TEXT_SET = frozenset(_TEXT)
_FIELDS = COLUMNS[:-2]
_FIELD_SET = frozenset(_FIELDS)
_NUMERIC_SET = frozenset(_NUMERIC)
#: value types that need no further check (strings are checked where numbers are due)
_PLAIN = (int, float, str)
#: What makes a phase record (earlier versions) part of a step: the cell, then the step.
_STEP_KEY = (
    "run_id",
    "workload",
    "optimizer",
    "impl",
    "seed",
    "device",
    "device_name",
    "data_source",
    "batch_size",
    "attempt",
    "size",
    "family",
    "epoch",
    "step",
    "mode",
)


def _as_paths(dirs: Iterable[Path | str] | Path | str) -> list[Path]:
    if isinstance(dirs, (str, Path)):
        dirs = [dirs]
    return [Path(d) for d in dirs]


def _files(dirs: list[Path], problems: list[str]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        if d.is_file():
            files.append(d)
        elif d.is_dir():
            files.extend(record_files(d, recursive=True))
        else:
            problems.append(f"{d}: no such file or directory")
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _number(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _check(record: dict) -> str | None:
    """Why ``record`` (a JSON object) cannot be used, or None."""
    missing = [k for k in REQUIRED if record.get(k) in (None, "")]
    if missing:
        return "missing " + ", ".join(missing)
    for key in [k for k, v in record.items() if v is not None and type(v) not in _PLAIN]:
        v = record[key]
        if key in _TEXT_SET and isinstance(v, (dict, list)):
            return f"{key} is not a string ({type(v).__name__})"
        if key in _NUMERIC_SET and _number(v) is None:
            return f"{key} is not a number ({v!r})"
    if record["kind"] not in _KINDS:
        return f"unknown kind {record['kind']!r}"
    for key in _NUMERIC:
        v = record.get(key)
        if type(v) is str and _number(v) is None:
            return f"{key} is not a number ({v!r})"
    phases = record.get(_PHASES)
    if phases is not None and not isinstance(phases, dict):
        return f"{_PHASES} is not an object ({type(phases).__name__})"
    return None


_hparams_cache: dict[tuple, str] = {}


def _hparams_json(hp: object) -> str:
    if hp in (None, ""):
        return "{}"
    if isinstance(hp, dict):
        try:
            key = tuple(hp.items())
            hit = _hparams_cache.get(key)
        except TypeError:  # unhashable values (lists, dicts)
            return json.dumps(hp, sort_keys=True, default=str)
        if hit is None:
            hit = _hparams_cache[key] = json.dumps(hp, sort_keys=True, default=str)
        return hit
    return json.dumps(hp, sort_keys=True, default=str)


_hparams_shared: dict[str, object] = {}


def _row(record: dict, source: str) -> dict:
    """The frame's fields of one usable record (its phases not yet added)."""
    row = {k: record.get(k) for k in _FIELDS}
    for key in _TEXT:
        if row[key] is not None and not isinstance(row[key], str):
            row[key] = str(row[key])
    if isinstance(row["value"], (dict, list)):
        row["value"] = json.dumps(row["value"], sort_keys=True)
    hparams = row["hparams_json"] = _hparams_json(record.get("hparams"))
    # one object per distinct set of hyperparameters, not one per record
    row["hparams"] = _hparams_shared.setdefault(hparams, record.get("hparams"))
    row["source"] = source
    return row


def _add_phase(row: dict, key: str, seconds: object) -> None:
    value = _number(seconds)
    if value is not None:
        column = phase_column(key)
        row[column] = row.get(column, 0.0) + value


def _step_key(record: dict) -> tuple:
    return (*(record.get(k) for k in _STEP_KEY), _flag(record.get("warmup")))


def _read_jsonl(path: Path, problems: list[str]) -> list[dict]:
    """The usable rows of one JSON Lines file; each skipped line is a ``file:line: why``
    problem. Phase records (earlier versions) are added to their step's row."""
    found: list[str] = []

    def skipped(_path: Path, lineno: int, _line: str, why: str) -> None:
        found.append(f"{path}:{lineno}: {why}, line skipped")

    rows: list[dict] = []
    steps: dict[tuple, dict] = {}  # step key -> the row of its (first) step record
    phase_records: list[tuple[int, dict]] = []
    try:
        for lineno, record in iter_numbered(path, on_error=skipped):
            why = _check(record)
            if why is not None:
                found.append(f"{path}:{lineno}: {why}, line skipped")
                continue
            if record["kind"] == "phase":
                phase_records.append((lineno, record))
                continue
            row = _row(record, f"{path}:{lineno}")
            rows.append(row)
            if record["kind"] == "step":
                row[_PHASE_COUNT] = _number(record.get(_PHASE_COUNT)) or 0
                for key, seconds in (record.get(_PHASES) or {}).items():
                    _add_phase(row, str(key), seconds)
                steps.setdefault(_step_key(record), row)
    except OSError as exc:
        problems.append(f"{path}: cannot be read ({exc.strerror or exc})")
        return []
    holders: dict[tuple, dict] = {}  # phase records of no step record: a row of their own
    for lineno, record in phase_records:
        key = _step_key(record)
        row = steps.get(key) or holders.get(key)
        if row is None:
            row = holders[key] = _row(
                {**record, "phase": None, "parent": None, "seconds": None}, f"{path}:{lineno}"
            )
            row[_PHASE_COUNT] = 0
            rows.append(row)
        row[_PHASE_COUNT] = (row.get(_PHASE_COUNT) or 0) + 1
        name = record.get("phase")
        if name is not None:
            parent = record.get("parent")
            _add_phase(
                row,
                phase_key(str(name), None if parent is None else str(parent)),
                record.get("seconds"),
            )
    problems.extend(found)
    return rows


def _read_parquet(path: Path, problems: list[str]) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The usable rows of one Parquet records file, only the columns the report uses, and
    the file's constant fields (set on its rows once all files are read)."""
    from bench.records import parquet  # pyarrow: imported only when there is Parquet to read

    try:
        names, _meta = parquet.file_metadata(path)
        wanted = [c for c in names if c in _FIELD_SET or c.startswith(PHASE_COLUMN)]
        table, meta = parquet.read_table(path, wanted)
    except parquet.UNREADABLE as exc:
        problems.append(f"{path}: cannot be read ({exc})")
        return None
    stored = set(table.column_names)
    constants = {k: v for k, v in meta["constants"].items() if k in _FIELD_SET and k not in stored}
    missing = [k for k in REQUIRED if k not in stored and constants.get(k) in (None, "")]
    if missing:
        problems.append(f"{path}: missing {', '.join(missing)}, file skipped")
        return None
    for key in _TEXT_SET & constants.keys():
        if constants[key] is not None and not isinstance(constants[key], str):
            constants[key] = str(constants[key])
    decode = set(meta.get("json_columns", ()))
    columns: dict[str, Any] = {}
    for col in table.column_names:
        if col in decode:
            columns[col] = _decoded(table.column(col), col)
        else:
            columns[col] = parquet.to_numpy(table.column(col))
    del table
    df = pd.DataFrame({k: _series(v) for k, v in columns.items()})
    if "hparams" in stored:
        df["hparams_json"] = [_hparams_json(v) for v in df["hparams"]]
    else:
        constants["hparams_json"] = _hparams_json(constants.get("hparams"))
        constants["hparams"] = _hparams_shared.setdefault(
            constants["hparams_json"], constants.get("hparams")
        )
    constants["source"] = str(path)
    usable = df["kind"].isin(_KINDS) if "kind" in df else pd.Series(False, index=df.index)
    for key in ("workload", "optimizer"):
        if key in df:
            usable &= df[key].notna()
    if not usable.all():
        bad = pd.Series(df.get("kind"), index=df.index, dtype=object)
        for kind, count in bad[~usable].fillna("(none)").value_counts().items():
            problems.append(f"{path}: {count} rows of kind {kind!r} unusable, rows skipped")
        df = df.loc[usable]
    return df, constants


def _decoded(column: Any, name: str) -> np.ndarray:
    """A JSON text column's values, as the JSON Lines reader gives them (``value``: objects
    as JSON text; text fields: text); only the rows with a value are decoded (a step has
    none in most such columns)."""
    out = np.empty(len(column), dtype=object)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    decoded = np.empty(int(valid.sum()), dtype=object)
    for i, text in enumerate(column.drop_null().to_pylist()):
        value = json.loads(text)
        if name == "value" and isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        elif name in _TEXT_SET and value is not None and not isinstance(value, str):
            value = str(value)
        decoded[i] = value
    out[valid] = decoded
    return out


def _with_constants(df: pd.DataFrame, files: np.ndarray, constants: list[dict]) -> None:
    """Set each file's constant fields on its rows (``files``: each row's file number), one
    shared object per file and field."""
    for field in dict.fromkeys(k for c in constants for k in c):
        lookup = np.empty(len(constants), dtype=object)
        has = np.zeros(len(constants), dtype=bool)
        for i, c in enumerate(constants):
            if field in c:
                lookup[i], has[i] = c[field], True
        values = lookup[files]
        if field in df.columns and not has.all():
            values = np.where(has[files], values, df[field].to_numpy(dtype=object))
        df[field] = _series(values, df.index)


def _series(values: np.ndarray, index: pd.Index | None = None) -> pd.Series:
    """``values`` as a column as they are: text stays in its shared objects (pandas would
    copy every row's text into a string array of its own)."""
    return pd.Series(values, index=index, dtype=object if values.dtype == object else None)


def _flag(v: object) -> bool:
    """JSON true (or 1, or "true") is true; null, a missing field and anything else is not."""
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    if isinstance(v, (bool, int, np.bool_)):
        return bool(v)
    return False


def empty_frame() -> pd.DataFrame:
    return _normalise(pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS}))


def _shared(values: pd.Series, transform: Any = None, na: object = None) -> pd.Series:
    """``values`` as an object column in which equal values are one shared object (a row
    costs a pointer, however long its text: a cell's constants repeat on all its steps),
    each distinct value passed through ``transform``; missing values become ``na``."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapped = np.empty(len(uniques) + 1, dtype=object)
    for i, value in enumerate(uniques):
        mapped[i] = value if transform is None else transform(value)
    mapped[-1] = na  # code -1: missing
    return pd.Series(mapped[codes], index=values.index, dtype=object)


def _text(v: object) -> str:
    return str(v)


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    phases = phase_columns(df)
    df = df[list(COLUMNS) + phases].copy(deep=False)
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in phases:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in ("kind", "phase", "name", "parent", "mode"):
        df[col] = _shared(df[col])
    for col in _TEXT_KEYS:
        df[col] = _shared(df[col], _text, na="unknown")
    df["workload"] = _shared(df["workload"], _text)
    # labels as written: a reference's case is part of it (`torch.optim:NAdam`)
    df["optimizer"] = _shared(df["optimizer"], _text)
    family = _shared(df["family"], lambda v: v if v != "" else None)
    family = family.where(family.notna(), _shared(df["optimizer"], family_of))
    df["family"] = _shared(family, _text, na="none")
    df["size"] = _shared(df["size"], _text, na="")
    df["warmup"] = _shared(df["warmup"], _flag, na=False).astype(bool)
    df["batch_size"] = df["batch_size"].fillna(0).astype("int64")
    df["phase_count"] = df["phase_count"].fillna(0.0)
    for col in (
        "torch_version",
        "cuda_version",
        "git_commit",
        "preset",
        "hparams_source",
        "study",
        "metric",
        "hparams_json",
        "source",
    ):
        df[col] = _shared(df[col])
    return df


def load_records(
    dirs: Iterable[Path | str] | Path | str,
) -> tuple[pd.DataFrame, list[str]]:
    """All records under ``dirs`` as a DataFrame, and the problems met reading them.

    Returns ``(frame, problems)``: one row per usable record with the columns in
    :data:`COLUMNS` (``batch_size`` 0 where a record had none; ``hparams_json`` the
    hyperparameters as sorted JSON; ``source`` where it came from), a step's phases in its
    ``phase:<phase_key>`` columns (see the module docstring), and one message per skipped
    line or unreadable path.
    """
    problems: list[str] = []
    frames: list[pd.DataFrame] = []
    constants: list[dict[str, Any]] = []
    for path in _files(_as_paths(dirs), problems):
        if path.suffix == ".parquet":
            read = _read_parquet(path, problems)
            frame, fixed = read if read is not None else (None, {})
        else:
            rows = _read_jsonl(path, problems)
            frame, fixed = (pd.DataFrame.from_records(rows) if rows else None), {}
        if frame is not None and len(frame):
            frames.append(frame.assign(_file=np.int32(len(constants))))
            constants.append(fixed)
    if not frames:
        return empty_frame(), problems
    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True, sort=False)
    del frames
    df = df.reset_index(drop=True)
    _with_constants(df, df.pop("_file").to_numpy(), constants)
    return _normalise(df), problems
