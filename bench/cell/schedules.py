"""Learning-rate schedules, the same for every optimiser: constant, warm-up + cosine, step.

A schedule is a multiplier of each parameter group's base learning rate, applied by a
``torch.optim.lr_scheduler.LambdaLR`` on ``BenchOptimizer.optimizer`` and stepped once per
training step. FNGD's and KFAC's preconditioners see the schedule only through the
optimiser's learning rate.

Its hyperparameters travel with the optimiser's (``CellSpec.overrides``, the workload's
``schedule``) and are recorded in ``hparams``; ``split_schedule`` takes them out before the
optimiser factory sees the rest:

- ``schedule``: ``constant``, ``warmup-cosine`` or ``step``;
- ``warmup_fraction``: the first fraction of all steps ramps linearly from ``1/w`` to 1
  (every schedule; 0: none);
- ``decay_at`` (``step``): fractions of all steps after which the rate is multiplied by
  ``decay_gamma``.

``warmup-cosine`` decays from 1 to 0 along half a cosine over the steps after the warm-up.
``constant`` without a warm-up is the identity, and no scheduler is attached at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from fngd.optimizers import BenchOptimizer

__all__ = [
    "SCHEDULES",
    "SCHEDULE_DEFAULTS",
    "lr_factor",
    "make_scheduler",
    "split_schedule",
]

SCHEDULES = ("constant", "warmup-cosine", "step")
#: Every schedule hyperparameter and its default (a constant rate).
SCHEDULE_DEFAULTS: dict[str, Any] = {
    "schedule": "constant",
    "warmup_fraction": 0.0,
    "decay_at": [0.5, 0.75],
    "decay_gamma": 0.1,
}


def split_schedule(hparams: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(schedule hyperparameters with defaults filled in, the optimiser's own)``."""
    schedule = {k: hparams.get(k, v) for k, v in SCHEDULE_DEFAULTS.items()}
    schedule["decay_at"] = [float(x) for x in schedule["decay_at"]]
    rest = {k: v for k, v in hparams.items() if k not in SCHEDULE_DEFAULTS}
    check(schedule)
    return schedule, rest


def check(schedule: dict[str, Any]) -> None:
    if schedule["schedule"] not in SCHEDULES:
        raise ValueError(
            f"unknown schedule {schedule['schedule']!r}; valid: {', '.join(SCHEDULES)}"
        )
    if not 0.0 <= float(schedule["warmup_fraction"]) < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {schedule['warmup_fraction']}")


def is_identity(schedule: dict[str, Any]) -> bool:
    return schedule["schedule"] == "constant" and float(schedule["warmup_fraction"]) == 0.0


def lr_factor(schedule: dict[str, Any], total_steps: int) -> Callable[[int], float]:
    """The multiplier of the base learning rate at step ``s`` (0-based) of ``total_steps``."""
    check(schedule)
    kind = schedule["schedule"]
    total = max(int(total_steps), 1)
    warmup = int(round(float(schedule["warmup_fraction"]) * total))
    milestones = sorted(int(round(float(f) * total)) for f in schedule["decay_at"])
    gamma = float(schedule["decay_gamma"])

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "warmup-cosine":
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "step":
            return gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor


def make_scheduler(
    opt: BenchOptimizer, schedule: dict[str, Any], total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A per-step ``LambdaLR`` on ``opt.optimizer`` for ``schedule`` over ``total_steps``;
    ``None`` for the identity. A preconditioner that reads the learning rate (KFAC's kl-clip)
    is pointed at the optimiser's current one, so that it follows the schedule."""
    if is_identity(schedule):
        return None
    optimizer = opt.optimizer
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(schedule, total_steps))
    pre = opt.preconditioner
    if pre is not None and hasattr(type(pre), "lr"):
        pre.lr = lambda _step: optimizer.param_groups[0]["lr"]
    return scheduler
