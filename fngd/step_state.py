"""``StepState``: what one FNGD step carries from ``prepare()`` through backward to ``step()``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from fngd.blocks.base import Block

Pair = tuple[torch.Tensor, torch.Tensor]  # (input, grad_output) of one block call


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
    summed: list[Block] = field(default_factory=list)
    #: Per block, the (input, grad_output) pairs kept for ``step()`` to turn into gradients.
    stash: dict[Block, list[Pair]] = field(default_factory=dict)
    #: Network scope with known coefficients: the stored coefficients ``c`` (N,), as looked
    #: up (the table's dtype) ...
    coefficients: torch.Tensor | None = None
    #: ... and the per-sample loss weights ``N c`` once ``loss_weights()`` asked for them.
    weights: torch.Tensor | None = None
    #: ``reweight()`` was called: the loss carries ``N c``, the blocks run plain ops.
    reweighted: bool = False


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
