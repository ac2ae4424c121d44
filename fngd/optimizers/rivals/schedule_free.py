"""``sf-adamw``: Schedule-Free AdamW (Defazio et al., 2024), from the authors' package
``schedulefree``.

Schedule-Free replaces the learning-rate schedule by an average of the iterates, so its
label runs a constant rate (``bench.labels``: ``schedule="constant"``, after an optional
warm-up), whatever schedule the workload gives the others. It takes gradients at one point
and is evaluated at another: the runner calls ``BenchOptimizer.eval()`` before every
evaluation and ``train()`` after it. Models with BatchNorm would need their running
statistics recomputed at the evaluation point (the package's advice); the runner does not
do that, so on such a model sf-adamw's evaluations use the training point's statistics.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fngd.optimizers.base import BenchOptimizer
from fngd.optimizers.rivals.common import impl, library, rival

__all__ = ["SF_ADAMW", "build"]

DEFAULTS: dict[str, Any] = {
    "lr": 2.5e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0.0,
    "r": 0.0,
    "weight_lr_power": 2.0,
}


def build(model: nn.Module, **hp: Any) -> BenchOptimizer:
    sf = library("schedulefree", "sf-adamw", "schedulefree")
    opt = sf.AdamWScheduleFree(
        model.parameters(),
        lr=hp["lr"],
        betas=tuple(hp["betas"]),
        eps=hp["eps"],
        weight_decay=hp["weight_decay"],
        r=hp["r"],
        weight_lr_power=hp["weight_lr_power"],
    )
    opt.train()  # it starts in evaluation mode, and refuses to step there
    return BenchOptimizer("sf-adamw", opt, impl=impl("schedulefree"), hparams=hp)


SF_ADAMW = rival("sf-adamw", build, DEFAULTS, "Schedule-Free AdamW (schedulefree), constant rate")
