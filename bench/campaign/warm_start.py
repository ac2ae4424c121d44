"""A discarded warm-up before the first timed cell of a process: no cold-start bias.

The first cell a process trains runs its first epochs markedly slower than any later cell
(lazy imports and first kernel calls, the allocator growing, the CPU's clock and caches
settling). Left alone, that cost lands on whichever optimiser happens to run first. So
``run`` and ``tune`` first train the first cell's workload and optimiser for about
``WARM_SECONDS`` with nothing recorded, then start timing.

Measured on the 2-core CPU (mlp-digits, sgd, three identical cells per process, three
processes each way): without it the process's first step took 2.9-3.5 ms against 1.1-1.3 ms
in the later cells, and the first cell's first epoch 14-19 ms against 11-17 ms; with it the
first cell's first step took 1.1-1.6 ms, like the others. Running the cells in a randomised
or interleaved order would not remove that cost, only hand it to a random optimiser.
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch

from bench.cell import CellSpec, WorkloadFactory, build_cell, run_steps
from bench.cell.timing import NullTimer
from bench.host.distributed import device_for, world
from bench.host.env import resolve_device, synchronize

__all__ = ["WARM_SECONDS", "warm_up"]

#: How long the discarded warm-up trains (the measured cost is the first steps').
WARM_SECONDS = 1.0


def warm_up(
    spec: CellSpec,
    *,
    device: str | torch.device = "auto",
    data_root: str | os.PathLike[str] | None = None,
    workload_factory: WorkloadFactory | None = None,
    seconds: float = WARM_SECONDS,
) -> int:
    """Train a throwaway copy of ``spec`` for about ``seconds``; returns the steps run.

    Under torchrun one epoch instead: every rank must run the same steps.
    """
    dev = device_for(resolve_device(device), world())
    distributed = world().distributed
    cell = build_cell(
        dataclasses.replace(spec, epochs=1, trial=None),
        dev,
        data_root=data_root,
        workload_factory=workload_factory,
    )
    state = cell.loop_state()
    loss_sum = torch.zeros((), device=dev)
    steps, epoch = 0, 0
    deadline = time.perf_counter() + seconds
    while (epoch < 1) if distributed else (time.perf_counter() < deadline):
        batches = iter(cell.workload.train_loader)
        try:
            done = run_steps(
                cell.workload,
                cell.opt,
                batches,
                cell.steps_per_epoch,
                timer=NullTimer(),
                epoch=epoch,
                state=state,
                device=dev,
                loss_sum=loss_sum,
                model=cell.model,
            )
        except FloatingPointError:  # diverged: warm enough, nothing to keep
            break
        finally:
            del batches
        if done == 0:
            break
        steps += done
        epoch += 1
        synchronize(dev)
    cell.workload.eval_fn(cell.workload.model)
    return steps
