"""``soap``: SOAP (Vyas et al., 2024), Adam run in the eigenbasis of Shampoo's
preconditioner, from pytorch-optimizer.

The eigenbasis is refreshed (a QR step per factor) every ``precondition_frequency`` steps:
those steps are their own mode, ``eigenbasis``, timed apart from the others (``adam``) as
KFAC's inverse steps are; its first step only builds the factors (``init``), as the method
does. Defaults: the paper's (betas 0.95, 0.95; frequency 10).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fngd.optimizers.base import BenchOptimizer
from fngd.optimizers.rivals.common import impl, library, rival

__all__ = ["SOAP", "build", "mode"]

DEFAULTS: dict[str, Any] = {
    "lr": 3e-3,
    "betas": (0.95, 0.95),
    "weight_decay": 0.01,
    "eps": 1e-8,
    "precondition_frequency": 10,
    "max_precondition_dim": 10000,
}


def mode(opt: torch.optim.Optimizer) -> str | None:
    """What SOAP's last step did, read off its step count: ``init`` (the first: factors
    only), ``eigenbasis`` (the factors' eigenbases refreshed) or ``adam``."""
    group = opt.param_groups[0]
    step = int(group.get("step", 0))
    if step == 0:
        return None
    if step == 1:
        return "init"
    done = step - 1  # the library's own count of updates
    return "eigenbasis" if done % int(group["precondition_frequency"]) == 0 else "adam"


def build(model: nn.Module, **hp: Any) -> BenchOptimizer:
    po = library("pytorch_optimizer", "soap", "pytorch-optimizer")
    opt = po.SOAP(
        model.parameters(),
        lr=hp["lr"],
        betas=tuple(hp["betas"]),
        weight_decay=hp["weight_decay"],
        eps=hp["eps"],
        precondition_frequency=hp["precondition_frequency"],
        max_precondition_dim=hp["max_precondition_dim"],
    )
    return BenchOptimizer("soap", opt, impl=impl("pytorch-optimizer"), hparams=hp, step_mode=mode)


SOAP = rival("soap", build, DEFAULTS, "SOAP: Adam in Shampoo's eigenbasis (pytorch-optimizer)")
