"""The report's cost grows with the number of steps no faster than linearly, and slowly.

Two record sets of a paper workload's 7 cells (``bench.measure.record_scale``), written through the
real writer and compacted, alike but for the steps per epoch (40 times more in the second),
are reported in this process. What grows between them is the steps' share alone, and each
property is measured without a clock (timings flake on a shared machine; the scale benchmark,
``bench/suite/test_records_scale.py``, times the full-size report):

- disk: bytes per added step, after compaction, within the goal (<= 100);
- memory: the report's peak traced allocation (``tracemalloc``: Python objects and NumPy
  arrays, so pandas frames too) per added step, within a bound that keeps a full paper
  schedule (547,400 steps) well under 2 GB;
- time: the calls the report's own code makes (``cProfile``, exact counts) do not grow with
  the steps: per-step work is vectorised, never a Python loop over steps or phases.
"""

from __future__ import annotations

import cProfile
import pstats
import tracemalloc
from dataclasses import replace
from pathlib import Path

from bench.measure.record_scale import FULL, write_record_set
from reports import build_report

SMALL = replace(FULL, workloads=FULL.workloads[:1], epochs=2, steps_per_epoch=10)
LARGE = replace(SMALL, steps_per_epoch=400)
#: Traced bytes an added step may cost (measured: 0.3 to 0.8 KiB). A full paper schedule at
#: this rate adds 1.6 GiB at most.
BYTES_PER_STEP = 3 * 1024
#: Calls of the report's own code an added step may cost (measured: none, give or take a few
#: hundred calls in all from caches the first report warmed; a Python loop over the steps
#: or their phases costs at least one per step).
CALLS_PER_STEP = 0.25


def _ours(filename: str) -> bool:
    parts = Path(filename).parts
    return "reports" in parts or "bench" in parts


def _report(directory: Path, out: Path) -> tuple[int, int]:
    """(peak traced bytes, calls made from the report's own code) of one report."""
    profile = cProfile.Profile()
    tracemalloc.start()
    profile.enable()
    try:
        build_report(directory, out / "index.html")
    finally:
        profile.disable()
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    calls = 0
    for *_stats, callers in pstats.Stats(profile).stats.values():
        calls += sum(c[1] for caller, c in callers.items() if _ours(caller[0]))
    return peak, calls


def test_report_cost_grows_linearly_with_steps(tmp_path: Path) -> None:
    small = write_record_set(tmp_path / "small", SMALL)
    large = write_record_set(tmp_path / "large", LARGE)
    added = large.steps - small.steps
    assert added == 39 * small.steps == 39 * 7 * 2 * 10

    assert (large.bytes - small.bytes) / added <= 100

    # reported first, unmeasured: imports and what matplotlib caches on a first figure of a
    # kind (its first report of a set peaks tens of MB higher) are not the report's cost
    build_report(large.directory, tmp_path / "warm.html")
    small_peak, small_calls = _report(small.directory, tmp_path / "small-report")
    large_peak, large_calls = _report(large.directory, tmp_path / "large-report")
    assert (tmp_path / "large-report" / "index_step_times.csv").exists()
    per_step = (large_peak - small_peak) / added
    assert per_step <= BYTES_PER_STEP, f"{per_step:.0f} traced bytes per added step"
    assert large_calls - small_calls <= CALLS_PER_STEP * added, (small_calls, large_calls)
