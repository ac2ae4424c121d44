"""Parquet records: a closed cell compacts to one file that reads back as its JSON Lines did,
the cell's constants stored once, and a damaged file reported instead of read."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq

from bench.records import RecordWriter, read_jsonl
from bench.records import read_records as read_any
from bench.records.parquet import METADATA_KEY, compact, read_records, read_table
from reports.load import load_records

BASE = {
    "run_id": "w__fngd__s0",
    "workload": "w",
    "optimizer": "fngd",
    "family": "fngd",
    "hparams": {"lr": 0.1, "betas": [0.9, 0.99], "skip_layers": []},
    "seed": 0,
    "device": "cuda",
    "device_name": "GPU",
    "git_commit": "abc",
    "threads": 4,
    "attempt": 1,
}


def _cell(path):
    """A small cell with a record of every kind a training cell writes."""
    with RecordWriter(path, BASE) as w:
        w.write({"kind": "cell", "name": "started", "value": "data note"}, flush=True)
        w.write({"kind": "memory", "name": "baseline_allocated", "value": 2**40 + 3})
        for epoch in range(2):
            mode = "inversion" if epoch == 0 else "weighted_sum"
            inner = "fngd/gram" if epoch == 0 else "backward>fngd/weighted_sum"
            w.write_many(
                {
                    "kind": "step",
                    "step": 3 * epoch + i,
                    "epoch": epoch,
                    "seconds": 0.1 + i / 7,
                    "warmup": i == 0,
                    "mode": mode,
                    "phases": {"data": 1e-3 / (i + 1), "backward": 0.05, inner: 0.01 * i},
                    "phase_count": 3 + i,
                }
                for i in range(3)
            )
            w.write(
                {
                    "kind": "epoch",
                    "epoch": epoch,
                    "seconds": 1.5,
                    "name": "train_loss",
                    "value": math.nan if epoch else 2.5,
                    "steps": 3,
                    "train_seconds": 1.5,
                }
            )
            w.write(
                {
                    "kind": "eval",
                    "epoch": epoch,
                    "name": "accuracy",
                    "value": 0.5,
                    "seconds": 1.5,
                    "eval_seconds": 0.2,
                    "split": "test",
                }
            )
            if epoch:
                w.write(
                    {
                        "kind": "staleness",
                        "epoch": epoch,
                        "name": "network",
                        "value": 0.9,
                        "norm_ratio": 1.1,
                        "seconds": 3.0,
                        "probe_seconds": 0.01,
                    }
                )
            w.flush()
        w.write(
            {
                "kind": "cell",
                "name": "error",
                "value": "ValueError: x",
                "traceback": "Traceback ...",
            },
            flush=True,
        )


def test_compaction_reads_back_as_the_json_lines(tmp_path):
    path = tmp_path / "w__fngd__s0.jsonl"
    _cell(path)
    expected = read_jsonl(path)
    parquet = compact(path)
    assert parquet == tmp_path / "w__fngd__s0.parquet"
    assert not path.exists() and sorted(p.name for p in tmp_path.iterdir()) == [parquet.name]
    assert read_records(parquet) == expected
    assert read_any(parquet) == expected  # bench.records' reader takes either format
    step = expected[2]
    assert step["phases"] == {"data": 1e-3, "backward": 0.05, "fngd/gram": 0.0}
    assert expected[-1]["traceback"] == "Traceback ..." and "traceback" not in expected[0]
    assert expected[4]["value"] is None  # a non-finite loss, stored as null


def test_constants_are_stored_once_and_steps_are_columns(tmp_path):
    path = tmp_path / "c.jsonl"
    _cell(path)
    parquet = compact(path)
    schema = pq.read_schema(parquet)
    meta = json.loads(schema.metadata[METADATA_KEY])
    assert meta["constants"]["hparams"] == BASE["hparams"]
    assert meta["constants"]["run_id"] == BASE["run_id"] and meta["constants"]["threads"] == 4
    assert not set(BASE) & set(schema.names)  # no constant is repeated on every row
    phases = [n for n in schema.names if n.startswith("phase:")]
    assert phases == [
        "phase:data",
        "phase:backward",
        "phase:fngd/gram",
        "phase:backward>fngd/weighted_sum",
    ]
    assert "value" in meta["json_columns"]  # messages beside numbers: JSON text
    table, _ = read_table(parquet, ["step", "seconds", "no-such-column"], kinds=("step",))
    assert table.column_names == ["step", "seconds"] and table.num_rows == 6


def test_a_field_that_varies_within_a_file_is_a_column(tmp_path):
    path = tmp_path / "c.jsonl"
    with RecordWriter(path, {**BASE, "attempt": 1}) as w:
        w.write({"kind": "cell", "name": "started"})
        w.update_base(attempt=2, impl="builtin")
        w.write({"kind": "cell", "name": "finished"})
    expected = read_jsonl(path)
    parquet = compact(path)
    names = pq.read_schema(parquet).names
    assert "attempt" in names and "impl" in names and "run_id" not in names
    assert read_records(parquet) == expected
    assert [r["attempt"] for r in expected] == [1, 2]


def test_compaction_leaves_out_a_cut_line(tmp_path):
    path = tmp_path / "c.jsonl"
    _cell(path)
    with open(path, "a") as f:
        f.write('{"kind": "step", "st')  # the process was killed mid-line
    seen = []
    parquet = compact(path, on_error=lambda p, n, line, why: seen.append(n))
    assert len(seen) == 1 and len(read_records(parquet)) == 14


def test_a_damaged_parquet_file_is_reported_not_read(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    seen = []
    assert read_any(tmp_path / "bad.parquet", lambda p, n, line, why: seen.append(why)) == []
    assert "not a readable Parquet file" in seen[0]
    path = tmp_path / "good.jsonl"
    _cell(path)
    compact(path)
    frame, problems = load_records([tmp_path])
    assert len(problems) == 1 and "bad.parquet: cannot be read" in problems[0]
    assert set(frame["run_id"]) == {BASE["run_id"]}


def test_the_report_reads_a_cell_the_same_from_either_file(tmp_path):
    """Only the columns the report uses, constants from the metadata: the same frame."""
    path = tmp_path / "c.jsonl"
    _cell(path)
    lines, problems = load_records([path])
    assert problems == []
    parquet, problems = load_records([compact(path)])
    assert problems == []
    lines = lines.drop(columns="source")
    parquet = parquet.drop(columns="source")
    assert list(parquet.columns) == list(lines.columns)
    for col in lines.columns:
        assert lines[col].tolist() == parquet[col].tolist() or (
            lines[col].isna().tolist() == parquet[col].isna().tolist()
            and lines[col].dropna().tolist() == parquet[col].dropna().tolist()
        ), col
    steps = parquet.loc[parquet["kind"] == "step"]
    assert steps["phase:backward"].tolist() == [0.05] * 6
    assert steps["phase_count"].tolist() == [3, 4, 5, 3, 4, 5]
