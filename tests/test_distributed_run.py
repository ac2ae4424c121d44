"""``fngd-bench run --nproc 2``: torchrun starts two gloo ranks and the run writes complete
records (rank 0's file per cell, tagged with rank and world size, a step's time the slowest
rank's), and ``--resume`` then skips every cell, as in one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.records import FIELDS, read_records

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "run",
    "--nproc",
    "2",
    "--workload",
    "mlp-digits",
    "--optimizer",
    "sgd",
    "fngd-net",
    "--seeds",
    "0",
    "--epochs",
    "2",
    "--max-steps-per-epoch",
    "3",
    "--no-report",
    "--no-progress",
    "--no-warm-start",
]


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *ARGS, "--out", str(out), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("ddp-run")
    return out, _run(out)


def test_distributed_quick_run_writes_complete_records(run):
    out, done = run
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 cells" in done.stdout and "2 finished" in done.stdout
    files = sorted(p.name for p in out.iterdir())
    # closed cells are compacted to Parquet (bench.records.parquet)
    assert files == ["mlp-digits__fngd-net__s0__w2.parquet", "mlp-digits__sgd__s0__w2.parquet"]
    for name in files:
        records = read_records(out / name)
        assert [r["name"] for r in records if r["kind"] == "cell"] == ["started", "finished"]
        assert all(set(FIELDS) <= set(r) for r in records)
        assert {(r["rank"], r["world_size"]) for r in records} == {(0, 2)}
        assert {r["run_id"] for r in records} == {name.removesuffix(".parquet")}
        steps = [r for r in records if r["kind"] == "step"]
        assert [r["step"] for r in steps] == list(range(6))
        for r in steps:
            assert len(r["rank_seconds"]) == 2 and r["seconds"] == max(r["rank_seconds"])
            assert r["phases"] and r["phase_count"] >= 4  # rank 0's own phase times
        epochs = [r for r in records if r["kind"] == "epoch"]
        assert [r["epoch"] for r in epochs] == [0, 1] and all(r["steps"] == 3 for r in epochs)
        kinds = {r["kind"] for r in records}
        assert {"eval", "memory"} <= kinds
    fngd = read_records(out / files[0])
    modes = [r["mode"] for r in fngd if r["kind"] == "step"]
    assert modes == ["inversion"] * 3 + ["weighted_sum"] * 3
    assert any(r["kind"] == "staleness" for r in fngd)


def test_distributed_resume_skips_complete_cells(run):
    out, first = run
    assert first.returncode == 0
    again = _run(out, "--resume")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 skipped (complete)" in again.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "mlp-digits__fngd-net__s0__w2.parquet",
        "mlp-digits__sgd__s0__w2.parquet",
    ]
