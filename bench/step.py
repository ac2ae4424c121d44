"""One training step, shared by the runner, the profiler and the pytest-benchmark suite."""

from __future__ import annotations

from typing import Any

import torch

from fngd.optimizers import BenchOptimizer
from fngd.phases import phase


def train_step(
    workload: Any,
    opt: BenchOptimizer,
    inputs: Any,
    targets: torch.Tensor,
    sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """forward, backward, the optimiser's own phases and the update; returns the loss.

    The loss comes back as a device tensor: reading it would synchronise the GPU.
    """
    opt.zero_grad(set_to_none=True)
    opt.prepare(sample_ids=sample_ids)
    with phase("forward"):
        outputs = workload.forward(workload.model, inputs)
        loss = workload.loss_fn(outputs, targets)
    with phase("backward"):
        loss.backward()
    opt.step(sample_ids=sample_ids)
    return loss.detach()
