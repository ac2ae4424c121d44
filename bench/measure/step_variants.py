"""Optimisers held in one phase, for timing single steps (benchmarks and the A/B ratio).

FNGD's inversion is timed with its coefficient table cleared before each step; its weighted
sum after one whole first epoch (``fngd-net-*``: one whole-network vector, and the weighted
sum is ``train_step``'s plain backward of the reweighted loss), so that the coefficient
table holds every training sample as it does in a later epoch; KFAC with its
inverse every step, or never after the first. ``prepare`` builds the cell as the runner
does (``bench.cell.build.build_cell``: a variant is an optimiser label and overrides) and takes
that first step; ``before_step`` is what each timed step needs first (for FNGD's inversion,
the reset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from bench.cell import Cell, CellSpec, build_cell
from bench.cell.step import train_step
from bench.host.env import resolve_device, synchronize
from bench.workloads.workload import WorkloadLike
from fngd.optimizers import BenchOptimizer


@dataclass(frozen=True)
class StepVariant:
    label: str
    optimizer: str  # an optimiser label (bench.labels)
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
        StepVariant("fngd-net-inversion", "fngd-net", "inversion", reset_each_step=True),
        StepVariant("fngd-net-weighted-sum", "fngd-net", "weighted_sum"),
    )
}


def step_variant(name: str) -> StepVariant:
    """The step variant ``name``: one of ``STEP_VARIANTS``, else any optimiser label
    (a plugin's family, a reference) timed as it steps, in no phase of its own."""
    if name in STEP_VARIANTS:
        return STEP_VARIANTS[name]
    from bench.labels import resolve_label

    try:
        resolve_label(name)
    except KeyError:
        raise ValueError(
            f"unknown step variant {name!r}; valid step variants: {', '.join(STEP_VARIANTS)}, "
            "or any "
            "optimizer label of `fngd-bench list`, or a reference (module:factory)"
        ) from None
    return StepVariant(name, name, None)


@dataclass
class HeldStep:
    """A built cell and one fixed batch: ``step()`` is one timed training step."""

    variant: StepVariant
    cell: Cell
    batch: tuple[Any, ...]

    @property
    def workload(self) -> WorkloadLike:
        return self.cell.workload

    @property
    def opt(self) -> BenchOptimizer:
        return self.cell.opt

    def before_step(self) -> None:
        """Clear FNGD's stored coefficients where every timed step must invert."""
        if self.variant.reset_each_step:
            self.opt.preconditioner.reset_coefficients()

    def step(self) -> None:
        train_step(self.workload, self.opt, *self.batch)
        synchronize(self.cell.device)


def prepare(
    workload_name: str,
    variant: StepVariant,
    device: str | torch.device,
    size: str,
    seed: int = 0,
) -> HeldStep:
    """``workload_name`` is a registered workload (``mlp-random-<width>`` included)."""
    spec = CellSpec(workload_name, variant.optimizer, seed, dict(variant.overrides), size=size)
    cell = build_cell(spec, resolve_device(device))
    loader = cell.workload.train_loader
    if variant.mode == "weighted_sum":  # the table a later epoch finds: every sample's
        for inputs, targets, sample_ids in loader:
            train_step(cell.workload, cell.opt, inputs, targets, sample_ids)
    held = HeldStep(variant, cell, tuple(next(iter(loader))))
    held.step()  # FNGD stores its coefficients, KFAC computes its first inverse
    return held
