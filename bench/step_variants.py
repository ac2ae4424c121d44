"""Optimisers held in one phase, for timing single steps (benchmarks and the A/B ratio).

FNGD's inversion is timed with its coefficient table cleared before each step; its weighted
sum after one priming step on the same batch; KFAC with its inverse every step, or never
after the first. ``prepare`` builds the workload and the optimiser and takes that first
step; ``before_step`` is what each timed step needs first (for FNGD's inversion, the reset).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench import workloads
from bench.runner import synchronize
from bench.step import train_step
from fngd import optimizers


@dataclass(frozen=True)
class StepVariant:
    label: str
    optimizer: str
    mode: str | None
    overrides: dict[str, Any] = field(default_factory=dict)
    reset_each_step: bool = False


STEP_VARIANTS = {
    v.label: v
    for v in (
        StepVariant("sgd", "sgd", None),
        StepVariant("adamw", "adamw", None),
        StepVariant("kfac-inverse", "kfac", "inverse", {"inv_update_steps": 1}),
        StepVariant("kfac-no-inverse", "kfac", "no_inverse", {"inv_update_steps": 1_000_000}),
        StepVariant("ngd", "ngd", "inversion"),
        StepVariant("fngd-inversion", "fngd", "inversion", reset_each_step=True),
        StepVariant("fngd-weighted-sum", "fngd", "weighted_sum"),
    )
}


@contextmanager
def cpu_threads(threads: int | None, device: str | torch.device) -> Iterator[None]:
    """Run with ``threads`` intra-op threads on the CPU (None or 0: leave torch's own).

    The CPU workloads are small, and on a shared machine spinning worker threads make step
    times erratic; timing uses one thread unless told otherwise.
    """
    previous = torch.get_num_threads()
    if threads and torch.device(device).type == "cpu":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class HeldStep:
    """A workload, an optimiser and one fixed batch: ``step()`` is one timed training step."""

    variant: StepVariant
    workload: Any
    opt: Any
    batch: tuple[Any, ...]
    device: str

    def before_step(self) -> None:
        if self.variant.reset_each_step:
            self.opt.preconditioner.reset_coefficients()

    def step(self) -> None:
        train_step(self.workload, self.opt, *self.batch)
        synchronize(torch.device(self.device))


class RandomMLP:
    """MLP 784-W-W-10 on one batch of random tensors: a step to time, never to train.

    It isolates the per-layer cost of an optimiser from any data set; its records say
    ``synthetic (timing only)``.
    """

    data_source = "synthetic (timing only)"

    def __init__(self, width: int, batch_size: int = 128, device: str = "cpu") -> None:
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        self.name = f"mlp-random-{width}"
        self.batch_size = batch_size
        self.model = nn.Sequential(
            nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, 10),
        ).to(device)
        x = torch.randn(batch_size, 784, generator=g).to(device)
        y = torch.randint(0, 10, (batch_size,), generator=g).to(device)
        self.batch = (x, y, torch.arange(batch_size))
        self.hparams = {"fngd": {"damping": 0.1}, "ngd": {"damping": 0.1}}
        self.train_loader = [self.batch]

    @staticmethod
    def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    @staticmethod
    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y)


def prepare(
    workload_name: str, variant: StepVariant, device: str, size: str, seed: int = 0
) -> HeldStep:
    """``workload_name`` is a registered workload, or ``mlp-random-<width>``."""
    if workload_name.startswith("mlp-random-"):
        w: Any = RandomMLP(int(workload_name.rsplit("-", 1)[1]), device=device)
    else:
        w = workloads.get(workload_name, device=device, seed=seed, size=size)
    hp = {**w.hparams.get(variant.optimizer, {}), **variant.overrides}
    if variant.optimizer in ("fngd", "ngd"):
        hp["steps_per_epoch"] = len(w.train_loader)
    opt = optimizers.build(variant.optimizer, w.model, **hp)
    held = HeldStep(variant, w, opt, tuple(next(iter(w.train_loader))), device)
    held.step()  # FNGD stores its coefficients, KFAC computes its first inverse
    return held
