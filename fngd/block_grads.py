"""The blocks' gradients as ``step()`` writes them into ``.grad``, and their finite check.

A block whose coefficients were not known before the backward pass left its (input,
grad_output) pair to ``step()``; these turn the pair into the block's gradient -- the
weighted sum ``sum_i s_i g_i`` with per-sample scales ``s = N c``, or the plain gradient
(unit scale) -- and add it to ``.grad`` as autograd accumulates.
"""

from __future__ import annotations

import torch

from fngd.blocks.base import Block
from fngd.solve import NonFiniteGradientError
from fngd.step_state import Pair

__all__ = ["check_finite", "write_plain", "write_weighted"]


@torch.no_grad()
def write_weighted(
    blocks: list[Block], uses: dict[Block, list[Pair]], scales: torch.Tensor, rows: list[int]
) -> None:
    """Each block's weighted sum with the scales (rows, N, 1) of its table row."""
    for b in blocks:
        dtype = uses[b][0][1].dtype
        b.accumulate(b.weighted_grads_of(uses[b], scales[rows[b.index]].to(dtype)))


@torch.no_grad()
def write_plain(stash: dict[Block, list[Pair]]) -> None:
    """Each stashed pair's plain (unit-scale) weight gradient, added to ``.grad``."""
    for b, pairs in stash.items():
        for x, grad_out in pairs:
            ones = grad_out.new_ones(grad_out.shape[0], 1)
            b.accumulate(b.weighted_grads(x, grad_out, ones))


def check_finite(blocks: list[Block]) -> None:
    """``NonFiniteGradientError`` naming every block whose gradient has a NaN or inf.

    A sum is finite iff every element is (short of overflow), and summing is far cheaper
    than ``isfinite().all()`` on the CPU; one synchronisation for all blocks.
    """
    zero = torch.zeros((), device=blocks[0].module.weight.device)
    sums = torch.stack(
        [sum((p.grad.float().sum() for p in b.leaves if p.grad is not None), zero)
         for b in blocks]
    )
    flags = torch.isfinite(sums).cpu()
    bad = [b.name for b, ok in zip(blocks, flags.tolist(), strict=True) if not ok]
    if bad:
        raise NonFiniteGradientError(
            f"non-finite gradient (NaN or inf) in block(s) {', '.join(bad)}"
        )
