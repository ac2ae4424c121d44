"""pytest-benchmark: the records of one seed of a full paper schedule, written and reported.

    FNGD_BENCH_SCALE=1 pytest bench/suite/test_records_scale.py --benchmark-only  # tox -e scale

Skipped unless ``FNGD_BENCH_SCALE`` is set: its value is the fraction of the schedule's 100
epochs to write (``1``: all of them, ``0.1``: 10). At ``1`` the record set
(``bench.measure.record_scale.FULL``) is 14 cells (the ``paper`` preset's 2 workloads x 7 optimiser
labels) x 100 epochs x 391 steps: 547,400 training steps, about 4.1 million step-phase entries,
written through the runner's writer and compacted to Parquet as a sweep does (half a minute on
2 cores, not timed). The benchmark is ``fngd-bench report`` on it, in a child process (about
half a minute more); ``extra_info`` holds the bytes on disk per step, the report's wall and
CPU seconds and its peak resident memory.

Goals: at most 100 bytes per training step on disk, every phase included (asserted); the
report in at most 60 s (recorded, not asserted: a shared machine's clock is no test) with at
most 2 GB peak resident memory (asserted).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bench.measure.record_scale import FULL, measure_report, write_record_set

SCALE = os.environ.get("FNGD_BENCH_SCALE")
pytestmark = pytest.mark.skipif(
    not SCALE, reason="FNGD_BENCH_SCALE=1 (the full schedule) runs it: tox -e scale"
)
MAX_BYTES_PER_STEP = 100
MAX_PEAK_RSS = 2 * 10**9


@pytest.fixture(scope="module")
def record_set(tmp_path_factory: pytest.TempPathFactory) -> Any:
    epochs = max(1, round(FULL.epochs * float(SCALE or 1)))
    return write_record_set(tmp_path_factory.mktemp("records"), FULL.scaled(epochs))


def test_report_of_a_paper_schedule(benchmark: Any, record_set: Any, tmp_path: Path) -> None:
    benchmark.group = "records"
    cost = benchmark.pedantic(
        measure_report, args=(record_set.directory, tmp_path / "index.html"), rounds=1
    )
    benchmark.extra_info.update(
        {
            "cells": len(record_set.files),
            "steps": record_set.steps,
            "step_phase_entries": record_set.entries,
            "bytes": record_set.bytes,
            "bytes_per_step": record_set.bytes_per_step,
            "report_seconds": cost.seconds,
            "report_cpu_seconds": cost.cpu_seconds,
            "report_peak_rss_bytes": cost.peak_rss,
        }
    )
    print(
        f"\n{record_set.steps} steps, {record_set.entries} step-phase entries in "
        f"{len(record_set.files)} cells: {record_set.bytes_per_step:.1f} bytes per step; "
        f"report {cost.seconds:.1f} s ({cost.cpu_seconds:.1f} s CPU), "
        f"peak {cost.peak_rss / 2**20:.0f} MiB"
    )
    assert (tmp_path / "index_step_times.csv").exists()
    assert record_set.bytes_per_step <= MAX_BYTES_PER_STEP
    assert cost.peak_rss <= MAX_PEAK_RSS
