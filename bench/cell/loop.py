"""The one training loop: the runner, the profiler, the overhead measurement and the
benchmarks' phase medians all drive a cell through ``run_steps``.

Timing: the train loss is accumulated on the device and phase times are read once per epoch
(``bench.cell.timing.StepTimer``), so the loop never synchronises the device itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from bench.cell.spec import LoopState
from bench.cell.step import train_step
from bench.cell.timing import NullTimer, StepTimer
from bench.workloads.workload import WorkloadLike
from fngd.optimizers import BenchOptimizer
from fngd.phases import _profiler_enabled

__all__ = ["OnStep", "run_steps", "to_device"]


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x if x.device == device else x.to(device, non_blocking=True)
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a namedtuple
        return type(x)(*(to_device(v, device) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x


_record_function = torch.profiler.record_function


#: Called after each step with (step index, mode, warmup).
OnStep = Callable[[int, Any, bool], None]


def run_steps(
    workload: WorkloadLike,
    opt: BenchOptimizer,
    batches: Iterator[Any],
    n: int,
    *,
    timer: StepTimer | NullTimer,
    epoch: int,
    state: LoopState,
    device: torch.device,
    loss_sum: torch.Tensor,
    on_step: OnStep | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    model: torch.nn.Module | None = None,
) -> int:
    """Up to ``n`` steps from ``batches``, timed by ``timer`` (a ``NullTimer``: untimed);
    adds each loss into ``loss_sum`` (on the device); steps ``scheduler`` (the cell's
    learning-rate schedule) after each step, inside its time. ``model``: what the forward
    pass calls (``Cell.model``; default the workload's). Returns the number of steps done
    (fewer when ``batches`` runs out)."""
    on_cuda = device.type == "cuda"
    # The ``data`` phase calls the timer directly, and carries the profiler label only while
    # a profiler runs: ``record_function`` costs microseconds even when nothing listens.
    profiling = _profiler_enabled()
    done = 0
    while done < n:
        timer.start_step(state.step, epoch)
        try:
            label = _record_function("data") if profiling else None
            if label is not None:
                label.__enter__()
            token = timer.begin("data")
            try:
                batch = next(batches, None)
                if batch is not None:
                    inputs, targets, sample_ids = batch
                    if on_cuda:
                        inputs = to_device(inputs, device)
                        targets = to_device(targets, device)
            finally:
                timer.end(token)
                if label is not None:
                    label.__exit__(None, None, None)
            if batch is None:
                timer.discard_step()
                break
            loss = train_step(workload, opt, inputs, targets, sample_ids, model)
            if scheduler is not None:
                scheduler.step()
        except BaseException:
            timer.discard_step()
            raise
        mode = opt.mode
        warmup = state.warmup(mode)
        timer.end_step(mode=mode, warmup=warmup)
        loss_sum += loss.float()
        step = state.step
        state.step += 1
        done += 1
        if on_step is not None:
            on_step(step, mode, warmup)
    return done
