"""What a cell is: its spec (what to train, with what, for how long), the built cell, and
the state its loop carries from epoch to epoch (with the warm-up rule).

Warm-up rule (``LoopState.warmup``): a step is ``warmup: true`` if it is one of the first
``warmup_steps`` steps of the cell, or if it is the first step with a ``mode`` the cell has
not seen before. The second part covers FNGD's first weighted-sum step (a new code path at
the start of epoch 2: new kernels, allocator growth) and KFAC's first step without an
inverse, wherever they fall.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.labels import resolve_label
from bench.workloads.workload import WorkloadLike
from fngd.optimizers import BenchOptimizer

__all__ = ["WARMUP_STEPS", "Cell", "CellSpec", "LoopState", "WorkloadFactory", "file_safe"]

WorkloadFactory = Callable[..., WorkloadLike]
#: Steps at the start of a cell marked ``warmup`` (and run before a profile's window).
WARMUP_STEPS = 3


def file_safe(name: str) -> str:
    """``name`` with every character a file name should not hold written ``_``."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)


@dataclass
class CellSpec:
    """One cell: what to train, with what, for how long."""

    workload: str
    optimizer: str  # a label, see bench.labels
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None  # None: the workload's own
    max_steps_per_epoch: int | None = None
    batch_size: int | None = None  # None: the workload's own
    size: str = "small"
    warmup_steps: int = WARMUP_STEPS
    preset: str | None = None
    eval_split: str = "test"  # "val" while tuning: the test split stays for final reports
    study: str | None = None  # the tuning study this cell is a trial of, or took hparams from
    trial: int | None = None  # the study's trial this cell is (tuning runs only)
    hparams_source: str = "preset"  # where the overrides came from ("study S trial N")
    #: End the cell after the epoch whose evaluation first reaches the target (tuning
    #: trials: their score is the time to target, and later epochs cannot change it).
    stop_at_target: bool = False
    #: Processes the cell trains on at once (torchrun; ``bench.host.distributed``).
    world_size: int = 1

    @property
    def run_id(self) -> str:
        """``<workload>__<label>__s<seed>``, a file name: a reference's ``:`` and ``/``
        (``pkg.mod:build``, ``tasks.py:build``) are written ``_`` (``file_safe``)."""
        run_id = f"{file_safe(self.workload)}__{file_safe(self.optimizer)}__s{self.seed}"
        if self.world_size > 1:
            run_id += f"__w{self.world_size}"
        return run_id if self.trial is None else f"{run_id}__t{self.trial}"

    @property
    def family(self) -> str:
        return resolve_label(self.optimizer).family


@dataclass
class Cell:
    """A built cell: the workload, the optimiser and what ``build_cell`` decided."""

    spec: CellSpec
    device: torch.device
    workload: WorkloadLike
    opt: BenchOptimizer
    epochs: int
    steps_per_epoch: int
    replay: bool  # every epoch replays the first epoch's batches (``replays_first_epoch``)
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None  # per step (bench.cell.schedules)
    #: What the training loop's forward pass calls: the workload's model, or it in
    #: ``DistributedDataParallel`` under torchrun (evaluation uses the workload's own).
    model: torch.nn.Module | None = None

    def loop_state(self) -> LoopState:
        return LoopState(warmup_steps=self.spec.warmup_steps)


# -- building ----------------------------------------------------------------------------------


@dataclass
class LoopState:
    """What carries over between epochs of a cell."""

    step: int = 0  # global step index
    warmup_steps: int = WARMUP_STEPS
    seen_modes: set[Any] = field(default_factory=set)

    def warmup(self, mode: Any) -> bool:
        """The warm-up rule (module docstring) for the current step, which ran ``mode``."""
        warm = self.step < self.warmup_steps or mode not in self.seen_modes
        self.seen_modes.add(mode)
        return warm
