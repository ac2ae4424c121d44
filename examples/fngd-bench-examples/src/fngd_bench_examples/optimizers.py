"""``lion``: the Lion optimiser (sign of an interpolated momentum) from pytorch-optimizer.

An optimiser from a kept library, registered with its defaults and the space
``fngd-bench tune`` searches, so it is timed, recorded, tuned and reported like the
suite's own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fngd.optimizers import OptimizerSpec, Range


def make_lion(
    model: nn.Module,
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Lion (pytorch-optimizer), decoupled weight decay."""
    from pytorch_optimizer import Lion

    return Lion(model.parameters(), lr=lr, betas=tuple(betas), weight_decay=weight_decay)


LION: Any = OptimizerSpec(
    factory=make_lion,
    # Lion's authors: a learning rate 3-10x below AdamW's, weight decay 3-10x above
    defaults={"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0},
    space={
        "lr": Range(1e-5, 1e-2),
        "weight_decay": Range(1e-4, 1.0),
        "warmup_fraction": Range(0.0, 0.2, log=False),
    },
    note="Lion, sign of interpolated momentum (pytorch-optimizer)",
)
