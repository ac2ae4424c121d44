"""The runner's staleness records: FNGD cells with stored coefficients get them from the
second epoch on, one per key, and a probed cell trains exactly as an unprobed one."""

from __future__ import annotations

import pytest
import torch.nn.functional as F

import bench.cell.runner
from bench.cell import CellSpec, run_cell
from bench.records import RecordWriter, read_jsonl
from tests.test_runner import TinyWorkload

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Tiny(TinyWorkload):
    def per_sample_loss(self, outputs, targets):
        return F.cross_entropy(outputs, targets, reduction="none")


def factory(name, device, seed, batch_size=None, data_root=None, size="small"):
    return Tiny(name, device, seed, batch_size)


def _run(tmp_path, label, name="c", **overrides):
    spec = CellSpec("tiny", label, seed=0, epochs=3, overrides=overrides)
    path = tmp_path / f"{name}.jsonl"
    with RecordWriter(path) as writer:
        status, _ = run_cell(spec, writer, device="cpu", workload_factory=factory)
    assert status == "finished"
    return read_jsonl(path)


def _numbers(records):
    return [(r["kind"], r["name"], r["value"]) for r in records if r["kind"] in ("epoch", "eval")]


@pytest.mark.parametrize(
    ("label", "keys"),
    [
        ("fngd", {"0", "2", "network"}),
        ("fngd-iter", {"0", "2", "network"}),
        ("fngd-net", {"network"}),
        ("fngd-net-iter-rel", {"network"}),
    ],
)
def test_staleness_records_from_the_second_epoch(tmp_path, monkeypatch, label, keys) -> None:
    records = _run(tmp_path, label, damping=0.05)
    stale = [r for r in records if r["kind"] == "staleness"]
    assert sorted({r["epoch"] for r in stale}) == [1, 2]
    for epoch in (1, 2):
        assert {r["name"] for r in stale if r["epoch"] == epoch} == keys
    epochs = {r["epoch"]: r for r in records if r["kind"] == "epoch"}
    for r in stale:
        assert -1.0 <= r["value"] <= 1.0 + 1e-9 and r["norm_ratio"] > 0
        assert r["probe_seconds"] > 0
        assert r["seconds"] == pytest.approx(epochs[r["epoch"]]["train_seconds"])
    # a probed cell trains exactly as an unprobed one
    monkeypatch.setattr(bench.cell.runner, "probed", lambda opt: False)
    plain = _run(tmp_path, label, name="plain", damping=0.05)
    assert not any(r["kind"] == "staleness" for r in plain)
    assert _numbers(plain) == _numbers(records)


def test_unchanged_weights_give_cosine_one(tmp_path) -> None:
    """With lr 0 the weights never move: stored and fresh coefficients agree."""
    records = _run(tmp_path, "fngd", lr=0.0, damping=0.05)
    stale = [r for r in records if r["kind"] == "staleness"]
    assert stale
    for r in stale:
        assert r["value"] == pytest.approx(1.0, abs=1e-6)
        assert r["norm_ratio"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("label", ["sgd", "ngd", "ngd-net"])
def test_no_staleness_records_without_stored_coefficients(tmp_path, label) -> None:
    assert not any(r["kind"] == "staleness" for r in _run(tmp_path, label))
