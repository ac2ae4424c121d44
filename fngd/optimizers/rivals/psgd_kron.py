"""``psgd-kron``: PSGD with Kronecker-factored preconditioners (Li, 2015; Kron, Walters
2024), from pytorch-optimizer's ``Kron``.

Its preconditioner is fitted on a step with a probability that starts at 1 and decays
to 0.03 after 500 steps (the library's schedule); the steps that fit it are their own mode,
``precondition``, timed apart from the others (``no_precondition``). It needs
``opt_einsum``: without it ``torch.einsum`` contracts Kron's many-operand expressions in
the order written, which measured 300x slower on mlp-digits' MLP, so its absence is an
error rather than a slow rival.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fngd.optimizers.base import BenchOptimizer
from fngd.optimizers.plugins import PluginError
from fngd.optimizers.rivals.common import impl, library, rival

__all__ = ["PSGD_KRON", "build", "mode"]

DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "momentum": 0.9,
    "weight_decay": 0.0,
    # None: the library's schedule (1.0 for 500 steps, then down to 0.03)
    "pre_conditioner_update_probability": None,
    "max_size_triangular": 8192,
}


def mode(opt: torch.optim.Optimizer) -> str | None:
    """Whether Kron's last step fitted its preconditioner (the library zeroes its counter
    on a step that does)."""
    group = opt.param_groups[0]
    if "update_counter" not in group:
        return None
    return "precondition" if group["update_counter"] == 0 else "no_precondition"


def build(model: nn.Module, **hp: Any) -> BenchOptimizer:
    po = library("pytorch_optimizer", "psgd-kron", "pytorch-optimizer")
    library("opt_einsum", "psgd-kron", "opt_einsum")
    if not torch.backends.opt_einsum.is_available():  # installed, yet torch does not use it
        raise PluginError(
            "psgd-kron: torch.einsum is not using opt_einsum; without it Kron's expressions "
            "are contracted in the order written, about 300x slower"
        )
    opt = po.Kron(
        model.parameters(),
        lr=hp["lr"],
        momentum=hp["momentum"],
        weight_decay=hp["weight_decay"],
        pre_conditioner_update_probability=hp["pre_conditioner_update_probability"],
        max_size_triangular=hp["max_size_triangular"],
    )
    return BenchOptimizer(
        "psgd-kron", opt, impl=impl("pytorch-optimizer"), hparams=hp, step_mode=mode
    )


PSGD_KRON = rival(
    "psgd-kron",
    build,
    DEFAULTS,
    "PSGD with Kronecker-factored preconditioners (pytorch-optimizer Kron)",
)
