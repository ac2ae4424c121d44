"""Read benchmark records (JSON Lines) into one pandas DataFrame.

Every ``*.jsonl`` file under the given directories (recursively) is read line by line. A line
that is not a JSON object, or lacks the fields every record needs, is skipped and reported as
``file:line: reason`` so that one corrupt line never hides the rest of a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bench.records import (
    BASE_FIELDS,
    CELL_FIELDS,
    KINDS,
    STEP_FIELDS,
    iter_numbered,
    jsonl_files,
)
from reports.vocabulary import family_of

#: Per-kind fields the tables read (``bench.records.KIND_FIELDS``): the steps an epoch record
#: covers, the metric of a target record, a staleness record's norm ratio, the
#: evaluation's own time of an eval record, and every rank's time of a distributed step.
KIND_COLUMNS = ("steps", "metric", "norm_ratio", "eval_seconds", "rank_seconds")
#: Columns of the frame :func:`load_records` returns (``source`` is ``file:line``).
COLUMNS = BASE_FIELDS + STEP_FIELDS + CELL_FIELDS + KIND_COLUMNS + ("hparams_json", "source")
_KINDS = frozenset(KINDS)
#: Fields without which a record cannot be placed in any table.
REQUIRED = ("kind", "workload", "optimizer")

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
_NUMERIC_SET = frozenset(_NUMERIC)
#: value types that need no further check (strings are checked where numbers are due)
_PLAIN = (int, float, str)


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
            files.extend(jsonl_files(d, recursive=True))
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


def _read_file(path: Path, problems: list[str]) -> list[dict]:
    """The usable rows of one file; each skipped line is a ``file:line: why`` problem."""
    found: list[str] = []

    def skipped(_path: Path, lineno: int, _line: str, why: str) -> None:
        found.append(f"{path}:{lineno}: {why}, line skipped")

    try:
        records = list(iter_numbered(path, on_error=skipped))
    except OSError as exc:
        problems.append(f"{path}: cannot be read ({exc.strerror or exc})")
        return []
    rows: list[dict] = []
    for lineno, record in records:
        why = _check(record)
        if why is not None:
            found.append(f"{path}:{lineno}: {why}, line skipped")
            continue
        row = {k: record.get(k) for k in _FIELDS}
        for key in _TEXT:
            if row[key] is not None and not isinstance(row[key], str):
                row[key] = str(row[key])
        if isinstance(row["value"], (dict, list)):
            row["value"] = json.dumps(row["value"], sort_keys=True)
        row["hparams_json"] = _hparams_json(record.get("hparams"))
        row["source"] = f"{path}:{lineno}"
        rows.append(row)
    problems.extend(found)
    return rows


def _flag(v: object) -> bool:
    """JSON true (or 1, or "true") is true; null, a missing field and anything else is not."""
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    if isinstance(v, (bool, int)):
        return bool(v)
    return False


def empty_frame() -> pd.DataFrame:
    return _normalise(pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS}))


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    df = df[list(COLUMNS)].copy()
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in ("workload", "optimizer", "kind", "phase", "name", "parent", "mode"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    for col in _TEXT_KEYS:
        df[col] = df[col].astype(object).where(df[col].notna(), "unknown")
        df[col] = df[col].map(str)
    df["workload"] = df["workload"].map(lambda v: None if v is None else str(v))
    df["optimizer"] = df["optimizer"].map(lambda v: None if v is None else str(v).lower())
    family = df["family"].astype(object)
    df["family"] = family.where(family.notna() & (family != ""), df["optimizer"].map(family_of))
    df["family"] = df["family"].map(lambda v: str(v).lower())
    size = df["size"].astype(object)
    df["size"] = size.where(size.notna(), "").map(str)
    df["warmup"] = df["warmup"].map(_flag).astype(bool)
    df["batch_size"] = df["batch_size"].fillna(0).astype("int64")
    return df


def load_records(
    dirs: Iterable[Path | str] | Path | str,
) -> tuple[pd.DataFrame, list[str]]:
    """All records under ``dirs`` as a DataFrame, and the problems met reading them.

    Returns ``(frame, problems)``: one row per usable record with the columns in
    :data:`COLUMNS` (``batch_size`` 0 where a record had none; ``hparams_json`` the
    hyperparameters as sorted JSON; ``source`` the ``file:line`` it came from), and one
    message per skipped line or unreadable path.
    """
    problems: list[str] = []
    rows: list[dict] = []
    for path in _files(_as_paths(dirs), problems):
        rows.extend(_read_file(path, problems))
    if not rows:
        return empty_frame(), problems
    return _normalise(pd.DataFrame.from_records(rows)), problems
