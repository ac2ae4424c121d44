"""Records: round trip, constants once per cell, JSON-safe values, crash-safe appends, corrupt
lines skipped, a cell read once whichever files it left."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from bench.records import (
    FIELDS,
    CorruptRecordWarning,
    RecordWriter,
    cell_file,
    json_safe,
    phase_key,
    read_dir,
    read_jsonl,
    read_records,
    record_files,
    split_phase_key,
)
from bench.records.parquet import compact


def test_round_trip_has_every_field(tmp_path):
    path = tmp_path / "a.jsonl"
    with RecordWriter(path, base={"run_id": "r", "workload": "w"}) as w:
        w.write({"kind": "step", "step": 0, "seconds": 0.5})
        w.update_base(optimizer="sgd")
        w.write({"kind": "epoch", "epoch": 0, "name": "train_loss", "value": 1.25})
    records = read_jsonl(path)
    assert len(records) == 2
    for r in records:
        assert set(FIELDS) <= set(r)
        assert r["run_id"] == "r" and isinstance(r["time"], float)
    assert records[0]["optimizer"] is None and records[1]["optimizer"] == "sgd"
    assert records[0]["seconds"] == 0.5 and records[1]["value"] == 1.25


def test_json_safe():
    value = json_safe(
        {
            "betas": (0.9, 0.999),
            "t": torch.tensor(2.5),
            "v": torch.arange(3),
            "dev": torch.device("cpu"),
            "dtype": torch.float32,
            "nan": float("nan"),
            "inf": -math.inf,
            1: {"nested": (1, [2, 3])},
        }
    )
    assert value == {
        "betas": [0.9, 0.999],
        "t": 2.5,
        "v": [0, 1, 2],
        "dev": "cpu",
        "dtype": "torch.float32",
        "nan": None,
        "inf": None,
        "1": {"nested": [1, [2, 3]]},
    }
    json.dumps(value, allow_nan=False)


def test_non_finite_values_are_strict_json(tmp_path):
    path = tmp_path / "a.jsonl"
    with RecordWriter(path) as w:
        w.write({"kind": "epoch", "value": float("nan"), "hparams": {"betas": (0.9, 0.99)}})
    text = path.read_text()
    assert "NaN" not in text
    (r,) = read_jsonl(path)
    assert r["value"] is None and r["hparams"] == {"betas": [0.9, 0.99]}


def test_corrupt_lines_are_reported_and_skipped(tmp_path):
    path = tmp_path / "a.jsonl"
    with RecordWriter(path) as w:
        w.write({"kind": "step", "step": 0})
        w.write({"kind": "step", "step": 1})
    with open(path, "a") as f:
        f.write('[1, 2]\n{"kind": "step", "st')  # a non-object and a line cut by a kill
    seen = []
    records = read_jsonl(path, on_error=lambda p, n, line, why: seen.append((n, why)))
    assert [r["step"] for r in records] == [0, 1]
    assert [n for n, _ in seen] == [3, 4]
    with pytest.warns(CorruptRecordWarning) as caught:
        assert len(read_jsonl(path)) == 2
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert "a.jsonl:3" in messages[0] and "a.jsonl:4" in messages[1]


def test_append_after_a_cut_line_keeps_the_next_record(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"kind": "step", "step": 0}\n{"kind": "ste')
    with RecordWriter(path) as w:
        w.write({"kind": "step", "step": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptRecordWarning)
        records = read_jsonl(path)
    assert [r["step"] for r in records] == [0, 1]


def test_flush_makes_records_visible(tmp_path):
    path = tmp_path / "a.jsonl"
    w = RecordWriter(path)
    w.write({"kind": "step"})
    w.write({"kind": "cell", "name": "started"}, flush=True)
    assert len(read_jsonl(path)) == 2  # before close
    assert w.statuses == ["started"]
    w.close()


def test_read_dir_reads_only_jsonl(tmp_path):
    with RecordWriter(tmp_path / "a.jsonl") as w:
        w.write({"kind": "step"})
    with RecordWriter(tmp_path / "b.jsonl") as w:
        w.write({"kind": "step"})
        w.write({"kind": "step"})
    (tmp_path / "a.attempt1.partial").write_text('{"kind": "step"}\n')
    assert len(read_dir(tmp_path)) == 3


def test_read_dir_goes_into_folders_only_when_asked_and_reports_bad_lines(tmp_path):
    with RecordWriter(tmp_path / "a.jsonl") as w:
        w.write({"kind": "step", "step": 0})
    (tmp_path / "trials").mkdir()
    nested = tmp_path / "trials" / "b.jsonl"
    with RecordWriter(nested) as w:
        w.write({"kind": "step", "step": 1})
    with open(nested, "a") as f:
        f.write('{"kind": "st')  # cut by a kill
    assert [r["step"] for r in read_dir(tmp_path)] == [0]
    seen = []
    records = read_dir(
        tmp_path, lambda p, n, line, why: seen.append((Path(p).name, n)), recursive=True
    )
    assert sorted(r["step"] for r in records) == [0, 1]
    assert seen == [("b.jsonl", 2)]


def test_constants_are_written_once_and_read_on_every_record(tmp_path):
    """A cell's constant fields go on one base line, not on every record."""
    path = tmp_path / "a.jsonl"
    base = {"run_id": "r", "workload": "w", "hparams": {"lr": 0.1}, "git_commit": "abc"}
    with RecordWriter(path, base=base) as w:
        for step in range(3):
            w.write({"kind": "step", "step": step, "seconds": 0.5, "phases": {"data": 0.1}})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"base": base}
    assert all("run_id" not in line and "hparams" not in line for line in lines[1:])
    assert len(lines) == 4
    records = read_jsonl(path)
    assert [r["step"] for r in records] == [0, 1, 2]
    assert all(r["hparams"] == {"lr": 0.1} and r["git_commit"] == "abc" for r in records)
    assert records[0]["phases"] == {"data": 0.1}


def test_a_second_writer_does_not_inherit_the_first_ones_base(tmp_path):
    path = tmp_path / "a.jsonl"
    with RecordWriter(path, base={"run_id": "first"}) as w:
        w.write({"kind": "cell", "name": "started"})
    with RecordWriter(path) as w:
        w.write({"kind": "cell", "name": "error"})
    first, second = read_jsonl(path)
    assert first["run_id"] == "first" and second["run_id"] is None


def test_phase_keys_name_the_parent():
    assert phase_key("update") == "update"
    assert phase_key("fngd/weighted_sum", "backward") == "backward>fngd/weighted_sum"
    assert split_phase_key("backward>fngd/weighted_sum") == ("fngd/weighted_sum", "backward")
    assert split_phase_key("fngd/gram") == ("fngd/gram", None)
    with pytest.raises(ValueError, match="contains"):
        phase_key("a>b")


def test_record_files_take_a_cells_parquet_over_its_json_lines(tmp_path):
    """A stop between compaction's rename and its removal leaves both: read the cell once."""
    with RecordWriter(tmp_path / "c.jsonl", base={"run_id": "c"}) as w:
        w.write({"kind": "cell", "name": "finished"})
    (tmp_path / "c.jsonl.bak").write_bytes((tmp_path / "c.jsonl").read_bytes())
    parquet = compact(tmp_path / "c.jsonl")
    assert not (tmp_path / "c.jsonl").exists()
    (tmp_path / "c.jsonl.bak").rename(tmp_path / "c.jsonl")  # the leftover
    with RecordWriter(tmp_path / "d.jsonl") as w:
        w.write({"kind": "cell", "name": "started"})
    assert record_files(tmp_path) == [parquet, tmp_path / "d.jsonl"]
    assert len(read_dir(tmp_path)) == 2
    assert cell_file(tmp_path / "c.jsonl") == parquet == cell_file(tmp_path / "c")
    assert cell_file(tmp_path / "d.parquet") == tmp_path / "d.jsonl"
    assert cell_file(tmp_path / "e.jsonl") is None


def test_iter_records_reads_only_the_kinds_asked_for(tmp_path):
    with RecordWriter(tmp_path / "c.jsonl", base={"run_id": "c"}) as w:
        w.write({"kind": "cell", "name": "started"})
        w.write({"kind": "step", "step": 0, "phases": {}})
        w.write({"kind": "cell", "name": "finished"})
    from_lines = read_records(tmp_path / "c.jsonl", kinds=("cell",))
    from_parquet = read_records(compact(tmp_path / "c.jsonl"), kinds=("cell",))
    for cells in (from_lines, from_parquet):
        assert [r["name"] for r in cells] == ["started", "finished"]
        assert all(r["run_id"] == "c" for r in cells)
