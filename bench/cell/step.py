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
    model: torch.nn.Module | None = None,
) -> torch.Tensor:
    """forward, backward, the optimiser's own phases and the update; returns the loss.

    When the optimiser reweights (FNGD in network scope reusing its coefficients), the
    backward pass is its reweighted loss ``(w * l).mean()`` over the workload's per-sample
    losses ``l``: FNGD's step through plain autograd, at SGD's cost. The loss returned is
    still the ordinary batch loss ``l.mean()``, so train-loss curves compare across
    optimisers. It comes back as a device tensor: reading it would synchronise the GPU.
    ``model`` is what the forward pass calls (under torchrun the workload's model in
    ``DistributedDataParallel``); default: ``workload.model``.
    """
    opt.zero_grad(set_to_none=True)
    opt.prepare(sample_ids=sample_ids)
    reweighted = opt.reweight(sample_ids)
    with phase("forward"):
        outputs = workload.forward(workload.model if model is None else model, inputs)
        if reweighted:
            losses = workload.per_sample_loss(outputs, targets)
            loss = losses.mean()  # reported only: not in the backward graph
            objective = opt.reweighted_loss(losses)
        else:
            loss = workload.loss_fn(outputs, targets)
            objective = loss
    with phase("backward"):
        objective.backward()
    opt.step(sample_ids=sample_ids)
    return loss.detach()
