"""A data loader over tensors that already live on the target device.

Every workload's data set is small enough to keep whole on the device, so a batch is one
index gather: no worker processes, no host-to-device copy of the data, nothing that makes
the ``data`` phase noisy. The shuffle is drawn on the CPU from a ``torch.Generator`` seeded
from ``(seed, epoch)``, so epoch ``e`` of a run is the same whatever happened before it, and
the sample ids are handed out as a CPU int64 tensor: FNGD looks its stored coefficients up by
these ids without having to synchronise with the GPU.

Under ``torchrun`` (``shard(rank, world_size)``) every process draws the same order and takes
its part of each global batch: the batch is cut into ``world_size`` contiguous parts in rank
order (sizes differing by at most one), so the ranks' batches concatenated are exactly the
one-process batch, and every sample is met once per epoch by one rank. A last global batch
smaller than the world size is joined to the one before it, so that every rank gets samples
(and none only samples met before in the epoch: distributed FNGD needs every rank to take
the same phase).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

Inputs = torch.Tensor | tuple[torch.Tensor, ...]
Augment = Callable[[Any, torch.Generator], Any]


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for one (run seed, epoch, stream)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(stream)])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class TensorLoader:
    """Iterate over ``(inputs, targets, sample_ids)`` batches of on-device tensors.

    ``inputs`` is a tensor or a tuple of tensors (e.g. ``(src, tgt_in)``); every tensor's
    first dimension indexes samples. ``sample_ids`` is a CPU int64 tensor of positions in the
    data set, stable across epochs. Each ``iter()`` is one epoch: with ``shuffle`` the order
    is a fresh permutation drawn from ``(seed, epoch)``; ``set_epoch`` picks the epoch (the
    counter otherwise advances by one per ``iter()``). ``augment(inputs, generator)``, if
    given, runs on the gathered batch on the device with a device generator seeded per epoch.
    With ``drop_last`` every batch has exactly ``batch_size`` samples. The workloads train
    without it: FNGD's coefficients shared by sample exist for every sample only if the
    first epoch visits every sample; a dropped sample would send every later batch that
    holds it back to the inversion phase.
    """

    def __init__(
        self,
        inputs: Inputs,
        targets: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
    ) -> None:
        tensors = _as_tuple(inputs)
        n = len(targets)
        if any(len(t) != n for t in tensors):
            raise ValueError("inputs and targets must have the same number of samples")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if drop_last and n < batch_size:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {n} samples and drop_last=True "
                "would leave no batches"
            )
        self.inputs = inputs
        self.targets = targets
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.augment = augment
        self.device = targets.device
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self._tuple_inputs = isinstance(inputs, tuple | list)

    @property
    def num_samples(self) -> int:
        return len(self.targets)

    def __len__(self) -> int:
        return len(self._bounds())

    def shard(self, rank: int, world_size: int) -> None:
        """Yield rank ``rank``'s part of every global batch of ``batch_size`` (module doc)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        if self.num_samples < world_size:
            raise ValueError(f"{self.num_samples} samples cannot be shared by {world_size} ranks")
        self.rank, self.world_size = int(rank), int(world_size)

    def _bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of each global batch in the epoch's order."""
        n, b = self.num_samples, self.batch_size
        stop = (n // b) * b if self.drop_last else n
        bounds = [(i, min(i + b, stop)) for i in range(0, stop, b)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < self.world_size:
            bounds[-2:] = [(bounds[-2][0], bounds[-1][1])]
        return bounds

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` produce epoch ``epoch``'s order."""
        self.epoch = int(epoch)

    def order(self, epoch: int) -> torch.Tensor:
        """The CPU int64 sample order of epoch ``epoch``."""
        n = self.num_samples
        if not self.shuffle:
            return torch.arange(n, dtype=torch.int64)
        generator = torch.Generator(device="cpu")
        generator.manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(n, generator=generator, dtype=torch.int64)

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[tuple[Any, torch.Tensor, torch.Tensor]]:
        order = self.order(epoch)
        on_cuda = self.device.type == "cuda"
        if on_cuda:
            order = order.pin_memory()  # so the per-batch id copies are truly asynchronous
        aug_gen = None
        if self.augment is not None:
            aug_gen = torch.Generator(device=self.device)
            aug_gen.manual_seed(epoch_seed(self.seed, epoch, stream=1))
        world = self.world_size
        for start, stop in self._bounds():
            ids = order[start:stop]
            if world > 1:
                ids = torch.tensor_split(ids, world)[self.rank]
            dev_ids = ids if self.device.type == "cpu" else ids.to(self.device, non_blocking=True)
            inputs = self._gather(dev_ids)
            if self.augment is not None:
                inputs = self.augment(inputs, aug_gen)
            yield inputs, self.targets[dev_ids], ids

    def _gather(self, ids: torch.Tensor) -> Any:
        if self._tuple_inputs:
            return tuple(t[ids] for t in self.inputs)
        return self.inputs[ids]


def _as_tuple(inputs: Inputs | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    return tuple(inputs)
