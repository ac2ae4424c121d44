"""The harness's own cost: timed training steps against the same steps untimed.

Two numbers, written as one ``overhead`` record (``name="runner_overhead"``):

- ``value``, measured: blocks of ``steps`` training steps run alternately through the
  runner's loop (``bench.cell.loop.run_steps``) with timing switched off (a ``NullTimer``, no
  recorder installed) and with it on (a ``StepTimer``: the ``data`` phase, step marks, every
  phase of the step timed; the timer's once-per-epoch ``flush`` is outside the block, as it
  is outside the runner's epoch time), in ABBA order.
  ``value = (timed - plain) / plain`` of the fastest block of each kind (the block least
  disturbed by whatever else runs on the machine, as ``timeit`` does); ``median_ratio`` is
  the median over adjacent pairs. On a busy machine both are noisy at the 1 % level and can
  come out slightly negative.
- ``estimate``: the recorder's cost per phase and per step, measured in isolation over
  thousands of empty phases (precise), times the phases per step, over the plain step time.

Both are fractions of a step; the goal is below 0.01. The record also carries
``median_ratio``, ``plain_step_seconds``, ``timed_step_seconds``, ``phases_per_step``,
``phase_cost_seconds``, ``step_cost_seconds``, ``steps`` and ``pairs``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch

from bench.cell import Cell, CellSpec, WorkloadFactory, build_cell, record_base, run_steps
from bench.cell.spec import file_safe
from bench.cell.timing import NullTimer, StepTimer
from bench.host.env import resolve_device, synchronize
from bench.records import RecordWriter
from fngd import phases

__all__ = ["measure_cell_overhead", "measure_overhead"]


def _cycle(loader: Any) -> Iterator[Any]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise RuntimeError("the train loader gave no batch")


def _recorder_costs(device: torch.device, n: int = 2000) -> tuple[float, float]:
    """Seconds per timed phase (beyond the untimed ``phase``) and per step mark pair."""
    timer = StepTimer(device)
    phase = phases.phase

    def empty_phases(k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            with phase("overhead/probe"):
                pass
        return time.perf_counter() - t0

    previous = phases.set_recorder(None)
    try:
        empty_phases(n // 10)
        plain = min(empty_phases(n) for _ in range(3))
        phases.set_recorder(timer)
        timer.start_step(0, 0)
        empty_phases(n // 10)
        timed = min(empty_phases(n) for _ in range(3))
        timer.discard_step()
    finally:
        phases.set_recorder(previous)
    per_phase = max(timed - plain, 0.0) / n

    def step_marks(k: int) -> float:
        t0 = time.perf_counter()
        for i in range(k):
            timer.start_step(i, 0)
            timer.end_step(mode=None)
        timer.flush()
        return time.perf_counter() - t0

    step_marks(n // 10)
    per_step = min(step_marks(n) for _ in range(3)) / n
    return per_phase, per_step


def measure_overhead(
    cell: Cell,
    *,
    steps: int = 10,
    pairs: int = 100,
    warmup: int = 5,
    budget_s: float = 20.0,
) -> dict[str, Any]:
    """Measure the timing overhead of the runner's loop on ``cell``; returns the fields of
    the ``overhead`` record (see the module docstring). Stops after ``pairs`` pairs of
    blocks, or after ``budget_s`` seconds once at least 2 pairs are done."""
    dev = cell.device
    batches = _cycle(cell.workload.train_loader)
    state = cell.loop_state()
    loss_sum = torch.zeros((), device=dev)
    cell.workload.model.train()
    counts: list[int] = []

    def block(timer: StepTimer | NullTimer, n: int) -> float:
        """Seconds per step of ``n`` steps; a ``StepTimer`` is the phase recorder while they
        run, a ``NullTimer`` leaves none (timing off)."""
        synchronize(dev)
        t0 = time.perf_counter()
        previous = phases.set_recorder(timer if isinstance(timer, StepTimer) else None)
        try:
            run_steps(
                cell.workload,
                cell.opt,
                batches,
                n,
                timer=timer,
                epoch=0,
                state=state,
                device=dev,
                loss_sum=loss_sum,
            )
        finally:
            phases.set_recorder(previous)
        synchronize(dev)
        return (time.perf_counter() - t0) / n

    plain_timer, step_timer = NullTimer(), StepTimer(dev)

    def plain() -> float:
        return block(plain_timer, steps)

    def timed() -> float:
        seconds = block(step_timer, steps)
        records = step_timer.flush()  # once per epoch in the runner, outside the epoch's time
        counts.append(sum(r["phase_count"] for r in records))
        return seconds

    previous = phases.set_recorder(None)
    try:
        block(plain_timer, warmup)
        timed()
        counts.clear()
        plain_times: list[float] = []
        timed_times: list[float] = []
        ratios: list[float] = []
        start = time.perf_counter()
        for i in range(pairs):
            if i >= 2 and time.perf_counter() - start > budget_s:
                break
            if i % 2 == 0:
                a, b = plain(), timed()
            else:
                b, a = timed(), plain()
            plain_times.append(a)
            timed_times.append(b)
            ratios.append((b - a) / a)
    finally:
        phases.set_recorder(previous)
    if not torch.isfinite(loss_sum).item():
        raise FloatingPointError("the loss diverged while measuring the overhead")

    per_phase, per_step = _recorder_costs(dev)
    # The fastest block of each kind is the one least disturbed by anything else running
    # on the machine (timeit's rule); the median of paired ratios is kept for comparison.
    plain_step, timed_step = min(plain_times), min(timed_times)
    phases_per_step = sum(counts) / (len(counts) * steps)
    return {
        "value": (timed_step - plain_step) / plain_step,
        "median_ratio": statistics.median(ratios),
        "estimate": (phases_per_step * per_phase + per_step) / plain_step,
        "plain_step_seconds": plain_step,
        "timed_step_seconds": timed_step,
        "phases_per_step": phases_per_step,
        "phase_cost_seconds": per_phase,
        "step_cost_seconds": per_step,
        "steps": steps,
        "pairs": len(ratios),
    }


def measure_cell_overhead(
    spec: CellSpec,
    writer: RecordWriter,
    *,
    device: str | torch.device = "auto",
    data_root: str | os.PathLike[str] | None = None,
    workload_factory: WorkloadFactory | None = None,
    steps: int = 10,
    pairs: int = 100,
    budget_s: float = 20.0,
) -> dict[str, Any]:
    """Build ``spec``'s workload and optimiser, measure, write and return the record."""
    dev = resolve_device(device)
    run_id = f"overhead__{file_safe(spec.workload)}__{file_safe(spec.optimizer)}__{dev.type}"
    writer.update_base(**record_base(spec, dev, run_id=run_id))
    cell = build_cell(spec, dev, data_root=data_root, workload_factory=workload_factory)
    writer.update_base(**record_base(spec, dev, cell, run_id=run_id))
    fields = measure_overhead(cell, steps=steps, pairs=pairs, budget_s=budget_s)
    record = {"kind": "overhead", "name": "runner_overhead", **fields}
    writer.write(record, flush=True)
    return record
