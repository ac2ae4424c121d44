"""The preconditioners' side of ``torch.distributed``: DDP's sync switch and their own collectives.

Everything FNGD and the built-in KFAC communicate goes through ``Comm``, so it is counted
(``Comm.collectives``) and a test can pin what a step costs. The engine is
``torch.distributed`` itself (gloo on CPUs, NCCL on GPUs); nothing here is a home-made
transport.

- ``unwrap(model)``: a ``DistributedDataParallel`` model's own module and the wrapper, with
  any ``torch.compile`` wrapper (``OptimizedModule``, outside or inside DDP) taken off too.
  The preconditioners attach to the inner module, so block names (and state dicts) are the
  same with and without DDP or ``torch.compile``.
- ``Comm.sync(on)``: whether DDP's reducer all-reduces the coming backward pass (what
  ``DistributedDataParallel.no_sync()`` switches; FNGD's inversion phase turns it off and
  reduces the gradients itself once they exist, in ``step()``).
- ``Comm.gather``: the rows of tensors of every rank, concatenated in rank order, in one
  ``all_gather`` (ranks may hold different numbers of rows).
- ``Comm.average``: the mean over ranks of tensors, in one ``all_reduce`` per dtype and device
  (DDP's average: divided by the world size, then summed).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Comm", "default_group", "unwrap"]


def _ddp_type() -> type | None:
    try:
        from torch.nn.parallel import DistributedDataParallel
    except ImportError:  # a torch built without distributed support
        return None
    return DistributedDataParallel


def unwrap(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """``(module, ddp)``: a ``DistributedDataParallel``'s inner module and the wrapper, else
    ``(model, None)``; a compiled model's original module either way (its blocks' forwards
    are the ones the compiled model traces)."""
    model = _uncompiled(model)
    ddp = _ddp_type()
    if ddp is not None and isinstance(model, ddp):
        return _uncompiled(model.module), model
    return model, None


def _uncompiled(model: nn.Module) -> nn.Module:
    """The module ``torch.compile`` wrapped (its ``_orig_mod``), else ``model``. Dynamo is
    only looked up once imported (a model cannot be compiled before): importing it costs
    seconds."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    while eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
        model = model._orig_mod
    return model


def default_group() -> Any | None:
    """The default process group when ``torch.distributed`` is initialised with more than one
    process, else None (kfac-pytorch's rule for when to communicate)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.group.WORLD
    return None


class Comm:
    """One process group's collectives, counted; and DDP's sync switch, when there is a DDP.

    With one process every collective is the identity and nothing is sent.
    """

    def __init__(self, group: Any = None, ddp: nn.Module | None = None) -> None:
        if group is None and ddp is not None:
            group = getattr(ddp, "process_group", None)
        self.group = group
        self.ddp = ddp
        initialised = dist.is_available() and dist.is_initialized()
        self.world_size = dist.get_world_size(group) if initialised else 1
        self.rank = dist.get_rank(group) if initialised else 0
        #: Collectives this object has issued (each ``all_gather`` / ``all_reduce`` once).
        self.collectives = 0

    def __repr__(self) -> str:
        return f"Comm(rank={self.rank}, world_size={self.world_size})"

    # -- DDP -------------------------------------------------------------------------
    def sync(self, on: bool) -> None:
        """Let DDP's reducer all-reduce the next backward pass (``on``) or not (``no_sync``).

        Must be set before the forward pass: DDP prepares its reducer there.
        """
        if self.ddp is not None:
            self.ddp.require_backward_grad_sync = on

    # -- collectives -------------------------------------------------------------------
    def sizes(self, n: int, device: torch.device) -> list[int]:
        """Every rank's ``n`` (its number of samples), in rank order."""
        if self.world_size == 1:
            return [n]
        mine = torch.tensor([n], dtype=torch.int64, device=device)
        out = [torch.empty_like(mine) for _ in range(self.world_size)]
        self.collectives += 1
        dist.all_gather(out, mine, group=self.group)
        return [int(t) for t in torch.cat(out).tolist()]

    def gather(self, tensors: Sequence[torch.Tensor], sizes: Sequence[int]) -> list[torch.Tensor]:
        """Each tensor's rows (dim 0) from every rank, concatenated in rank order.

        ``tensors`` share one dtype and device and have the same trailing shape on every
        rank; rank r holds ``sizes[r]`` rows of each. One ``all_gather`` of one flat buffer
        for all of them (padded to the longest rank's).
        """
        if self.world_size == 1:
            return list(tensors)
        per_row = [_numel(t.shape[1:]) for t in tensors]
        row_total = sum(per_row)
        flat = torch.cat([t.reshape(-1) for t in tensors]) if tensors else None
        assert flat is not None
        longest = max(sizes) * row_total
        buf = flat.new_zeros(longest)
        buf[: flat.numel()] = flat
        out = [torch.empty_like(buf) for _ in range(self.world_size)]
        self.collectives += 1
        dist.all_gather(out, buf, group=self.group)
        parts: list[list[torch.Tensor]] = [[] for _ in tensors]
        for r, n in enumerate(sizes):
            offset = 0
            for j, t in enumerate(tensors):
                k = per_row[j] * n
                parts[j].append(out[r][offset : offset + k].view(n, *t.shape[1:]))
                offset += k
        return [torch.cat(p) for p in parts]

    def average(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor by its mean over ranks, in place (DDP's gradient average)."""
        if self.world_size == 1 or not tensors:
            return
        groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
        for t in tensors:
            groups.setdefault((t.dtype, t.device), []).append(t)
        for group in groups.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            flat.div_(self.world_size)
            self.collectives += 1
            dist.all_reduce(flat, group=self.group)
            offset = 0
            for t in group:
                k = t.numel()
                t.copy_(flat[offset : offset + k].view_as(t))
                offset += k


def _numel(shape: torch.Size) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
