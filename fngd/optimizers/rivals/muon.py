"""``muon``: Muon (Jordan et al., 2024) on the weight matrices, AdamW on the rest.

Muon orthogonalises each weight matrix's momentum by Newton-Schulz iterations. Which
parameters take it is the literature's rule: every weight of two or more dimensions, a
convolution's kernel as its ``(out_channels, in_channels x kernel)`` matrix (the library's
flattened view, as the CIFAR-10 speed runs do), except embeddings (``nn.Embedding``) and the
output layer, taken to be the last ``nn.Linear`` in module order; those, biases and norms
take AdamW. The update is scaled to AdamW's size (Moonlight's ``0.2 sqrt(max(out, in))``,
``use_adjusted_lr``), so one learning rate and one weight decay serve both parts and the
space is AdamW's. The records keep the share of the trainable numbers Muon updates
(``muon_fraction``).

pytorch-optimizer's ``Muon`` (one optimiser over both parts) rather than ``torch.optim.Muon``,
which takes two-dimensional parameters only and would leave a CNN's kernels to AdamW.

Newton-Schulz runs in bfloat16 on a GPU, as both libraries run it, and in float32 elsewhere:
a CPU without bfloat16 matrix units emulates it, which measured 48 ms a step on mlp-digits'
MLP against 1.4 ms for AdamW, a cost of the emulation, not of Muon. The records keep which
(``ns_dtype``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fngd.optimizers.base import BenchOptimizer
from fngd.optimizers.rivals.common import impl, library, rival

__all__ = ["MUON", "build", "split"]

DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.1,  # Moonlight's, on both parts
    "momentum": 0.95,
    "nesterov": True,
    "ns_steps": 5,
    "betas": (0.9, 0.95),  # the AdamW part's
    "eps": 1e-8,
}


def split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(Muon's parameters, AdamW's)`` of ``model``'s trainable ones (the rule above)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    kept = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    if linears:
        kept |= {id(p) for p in linears[-1].parameters()}
    matrices, rest = [], []
    for p in model.parameters():
        if p.requires_grad:
            (matrices if p.ndim >= 2 and id(p) not in kept else rest).append(p)
    return matrices, rest


def ns_dtype(params: list[nn.Parameter]) -> torch.dtype:
    """Newton-Schulz's dtype: bfloat16 on a GPU (the libraries' choice), float32 elsewhere."""
    return torch.bfloat16 if params and params[0].is_cuda else torch.float32


def _muon_class(po: Any) -> type:
    """pytorch-optimizer's ``Muon`` with its own Newton-Schulz (the library's function) run in
    each group's ``ns_dtype``; with bfloat16 it is the library's step."""
    from pytorch_optimizer.optimizer.utils.matrix import zero_power_via_newton_schulz_5

    class Muon(po.Muon):
        @staticmethod
        def _orthogonalize(
            group: dict[str, Any], updates: list[torch.Tensor]
        ) -> list[torch.Tensor]:
            return [
                zero_power_via_newton_schulz_5(
                    u.reshape(u.size(0), -1),
                    num_steps=group["ns_steps"],
                    weights=group["ns_coeffs"],
                    dtype=group["ns_dtype"],
                )
                for u in updates
            ]

    return Muon


def build(model: nn.Module, **hp: Any) -> BenchOptimizer:
    po = library("pytorch_optimizer", "muon", "pytorch-optimizer")
    matrices, rest = split(model)
    dtype = ns_dtype(matrices)
    groups: list[dict[str, Any]] = []
    if matrices:
        groups.append({"params": matrices, "use_muon": True, "ns_dtype": dtype})
    if rest:
        groups.append({"params": rest, "use_muon": False})
    opt = _muon_class(po)(
        groups,
        lr=hp["lr"],
        momentum=hp["momentum"],
        weight_decay=hp["weight_decay"],
        nesterov=hp["nesterov"],
        ns_steps=hp["ns_steps"],
        use_adjusted_lr=True,
        adamw_lr=hp["lr"],
        adamw_betas=tuple(hp["betas"]),
        adamw_wd=hp["weight_decay"],
        adamw_eps=hp["eps"],
    )
    total = sum(p.numel() for p in (*matrices, *rest))
    share = sum(p.numel() for p in matrices) / total if total else 0.0
    record = {**hp, "muon_fraction": share, "ns_dtype": str(dtype).removeprefix("torch.")}
    return BenchOptimizer("muon", opt, impl=impl("pytorch-optimizer"), hparams=record)


MUON = rival(
    "muon",
    build,
    DEFAULTS,
    "Muon on weight matrices (conv kernels flattened), AdamW on embeddings, output layer, "
    "biases and norms (pytorch-optimizer)",
)
