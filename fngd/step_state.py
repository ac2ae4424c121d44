"""``StepState``: what one FNGD step carries from ``prepare()`` through backward to ``step()``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

Pair = tuple[torch.Tensor, torch.Tensor]  # (input, grad_output) of one block call
Uses = list[Pair]  # every call of one block in one forward pass (a weight used twice: two)


class BlockLike(Protocol):
    """What a step's state knows of a block (``fngd.blocks.Block``): its name and index.

    A protocol, so that this module needs nothing of ``fngd.blocks``, which needs it.
    """

    name: str
    index: int


@dataclass(slots=True, eq=False)
class StepState:
    """One step's transient state, and nothing else.

    ``prepare()`` creates it when the batch's coefficients are known (else the first
    backward does); ``step()`` and ``discard()`` drop it, so nothing outlives a step.
    """

    #: The ids ``prepare()`` announced (host int64), checked against ``step()``'s.
    sample_ids: torch.Tensor | None = None
    #: Per block, ``N c`` as an (N, 1) column when known before backward, else None.
    scales: tuple[torch.Tensor | None, ...] | SharedScale | None = None
    #: Blocks whose weighted sum runs inside backward: the Python block function's, added
    #: as its backward runs, and the compiled block's, added as its forward runs (so a
    #: forward with gradients on but no backward before ``step()`` counts there too).
    summed: list[BlockLike] = field(default_factory=list)
    #: Per block, the (input, grad_output) pairs kept for ``step()`` to turn into gradients.
    stash: dict[BlockLike, list[Pair]] = field(default_factory=dict)
    #: Network scope with known coefficients: the stored coefficients ``c`` (N,), as looked
    #: up (the table's dtype) ...
    coefficients: torch.Tensor | None = None
    #: ... and the per-sample loss weights ``N c`` once ``loss_weights()`` asked for them.
    weights: torch.Tensor | None = None
    #: ``reweight()`` was called: the loss carries ``N c``, the blocks run plain ops.
    reweighted: bool = False
    #: Per stashed block, the backward pass (autograd's graph task) of its first pair ...
    passes: dict[BlockLike, int] = field(default_factory=dict)
    #: ... and the blocks with pairs from more than one backward pass (accumulation).
    accumulated: set[BlockLike] = field(default_factory=set)

    def keep(self, block: BlockLike, pair: Pair, backward_pass: int) -> None:
        """Stash ``pair`` of ``block`` for ``step()``, noting which backward pass made it."""
        uses = self.stash.get(block)
        if uses is None:
            self.stash[block] = [pair]
            self.passes[block] = backward_pass
            return
        uses.append(pair)
        if self.passes[block] != backward_pass:
            self.accumulated.add(block)

    @classmethod
    def known(
        cls,
        sample_ids: torch.Tensor | None,
        columns: torch.Tensor,
        known: np.ndarray | None,
        *,
        network: bool,
        dtype: torch.dtype,
        world: int = 1,
    ) -> StepState:
        """A step whose stored coefficients, as columns (N, rows, 1), are known before
        backward, for the rows ``known`` marks (None: all); the scales ``world N c`` in the
        parameters' ``dtype`` (``world``: DDP's ranks, whose weighted sums DDP averages)."""
        if network:  # one row, known (else no lookup): every block's
            c = columns.view(-1)
            return cls(
                sample_ids=sample_ids, scales=SharedScale(c, dtype, world), coefficients=c
            )
        scales = torch.mul(columns, len(columns) * world)
        if scales.dtype != dtype:
            scales = scales.to(dtype)
        rows = scales.unbind(1)
        if known is not None and not known.all():
            rows = tuple(s if k else None for s, k in zip(rows, known, strict=True))
        return cls(sample_ids=sample_ids, scales=rows)

    def loss_weights(self, dtype: torch.dtype, world: int = 1) -> torch.Tensor:
        """The per-sample loss weights ``world N c`` (N,) in ``dtype``, made on first use
        (network scope with known coefficients; ``world``: DDP averages the ranks')."""
        assert self.coefficients is not None
        if self.weights is None:
            c = self.coefficients
            self.weights = torch.mul(c, len(c) * world).to(dtype)
        return self.weights

    def reweighted_loss(
        self, losses: torch.Tensor, *, summed: bool, world: int = 1
    ) -> torch.Tensor:
        """``sum_i c_i l_i`` times ``world`` (and ``N`` for a ``summed`` loss) as one dot
        product: the mean (sum) of ``loss_weights() * losses`` in one autograd node."""
        weights = self.coefficients
        assert weights is not None
        factor = (len(weights) if summed else 1) * world
        if factor != 1:
            weights = weights * factor
        if weights.dtype != losses.dtype:
            weights = weights.to(losses.dtype)
        return losses @ weights

    @property
    def known_before_backward(self) -> bool:
        """Whether every block's coefficients are known (so none waits for ``step()``)."""
        if self.coefficients is not None:  # network scope
            return True
        scales = self.scales
        return isinstance(scales, tuple) and all(s is not None for s in scales)


class SharedScale:
    """Every block's scale in network scope: one (N, 1) column ``N c``, made on first use.

    A reweighted step never reads it (its blocks run plain ops), so it costs nothing there.
    Under DDP with ``world`` ranks the column is ``world N c``: DDP averages the ranks'
    weighted sums, and the global batch's direction is their sum.
    """

    __slots__ = ("coefficients", "dtype", "world", "_column")

    def __init__(self, coefficients: torch.Tensor, dtype: torch.dtype, world: int = 1) -> None:
        self.coefficients = coefficients
        self.dtype = dtype
        self.world = world
        self._column: torch.Tensor | None = None

    def __getitem__(self, index: int) -> torch.Tensor:
        column = self._column
        if column is None:
            c = self.coefficients
            column = torch.mul(c, len(c) * self.world).to(self.dtype).unsqueeze(-1)
            self._column = column
        return column


def block_uses(state: StepState, blocks: list[BlockLike]) -> dict[BlockLike, Uses]:
    """Each block's stashed pairs, all from one backward pass (the uses of its weight in one
    forward); pairs from two passes (gradient accumulation) are one clear error."""
    accumulated = sorted(b.name for b in blocks if b in state.accumulated)
    if accumulated:
        raise RuntimeError(
            f"module(s) {', '.join(map(repr, accumulated))} ran more than one backward pass "
            "before step() (gradient accumulation, which FNGD's per-batch solve does not "
            "support); call step() after every backward pass, or discard() after one that "
            "is not followed by step()"
        )
    return {b: state.stash[b] for b in blocks}
