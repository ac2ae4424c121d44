"""The runner's staleness probe: how far FNGD's stored coefficients drift from fresh NGD.

FNGD solves its coefficients in the first epoch and reuses them at later weights. Once per
epoch after the first, the runner runs one fixed probe batch (the first batch of epoch 0,
its sample ids fixed for the cell, iteration 0 for ``share="iteration"``) through
``FNGD.staleness``: the direction the stored coefficients give is compared with a fresh
solve on the same batch and weights. One ``staleness`` record per key (each block's name
in layer scope, and ``"network"``): ``value`` = cosine, ``norm_ratio`` = ``||stored|| /
||fresh||``. The probe leaves training as it was: no ``.grad``, table, mode or step count
changes (``FNGD.staleness``), and here the RNG streams and the model's buffers (batch-norm
running statistics) are restored, so a probed cell trains exactly as an unprobed one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from bench.host.env import synchronize
from bench.workloads.workload import Batch, WorkloadLike
from fngd.optimizers import BenchOptimizer

__all__ = ["KeepFirst", "probed", "staleness_records"]

#: The iteration whose stored coefficients a ``share="iteration"`` probe compares: the
#: probe batch is the first batch of epoch 0.
PROBE_ITERATION = 0


def probed(opt: BenchOptimizer) -> bool:
    """Whether a cell gets staleness records: FNGD with stored coefficients to reuse."""
    pre = opt.preconditioner
    return hasattr(pre, "staleness") and getattr(pre, "share", "none") != "none"


class KeepFirst:
    """An iterator of batches that keeps the first one it yields (``first``)."""

    def __init__(self, batches: Iterator[Batch]) -> None:
        self._batches = batches
        self.first: Batch | None = None

    def __iter__(self) -> KeepFirst:
        return self

    def __next__(self) -> Batch:
        batch = next(self._batches)
        if self.first is None:
            self.first = batch
        return batch


@contextmanager
def _untouched(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Restore the model's buffers and the RNG streams (dropout draws) on exit."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)


def staleness_records(
    workload: WorkloadLike,
    opt: BenchOptimizer,
    batch: Batch,
    device: torch.device,
    *,
    epoch: int,
    train_seconds: float,
) -> list[dict[str, Any]]:
    """The probe's records for this epoch, ``batch`` on ``device`` (``seconds`` = training
    time so far, as ``eval`` records; ``probe_seconds`` = the probe's own time, not training
    time)."""
    inputs, targets, sample_ids = batch
    model = workload.model
    t0 = time.perf_counter()
    pre = opt.preconditioner
    with _untouched(model, device), pre.staleness(sample_ids, iteration=PROBE_ITERATION) as probe:
        workload.loss_fn(workload.forward(model, inputs), targets).backward()
    synchronize(device)
    seconds = time.perf_counter() - t0
    return [
        {
            "kind": "staleness",
            "epoch": epoch,
            "name": key,
            "value": r["cosine"],
            "norm_ratio": r["norm_ratio"],
            "seconds": train_seconds,
            "probe_seconds": seconds,
        }
        for key, r in probe.result.items()
    ]
