"""Dense float64 references built from per-sample gradients (torch.func), for the tests."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap


def per_sample_block_grads(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    per_sample_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    block_modules: list[str],
) -> dict[str, torch.Tensor]:
    """name -> G (N, d): row i is the flattened [dW_i, db_i] of module ``name``."""
    model = copy.deepcopy(model)
    for module in model.modules():  # a preconditioner's patched forward, if any
        module.__dict__.pop("forward", None)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return per_sample_loss(out, yi.unsqueeze(0)).sum()

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    out = {}
    for name in block_modules:
        parts = [grads[f"{name}.weight"].flatten(1)]
        if f"{name}.bias" in grads:
            parts.append(grads[f"{name}.bias"].flatten(1))
        out[name] = torch.cat(parts, dim=1)
    return out


def natural_gradient(g: torch.Tensor, damping: float, reduction: str = "mean") -> torch.Tensor:
    """``(G^T G / N + damping I)^-1 gbar`` with a dense d x d solve (G: N x d)."""
    n, d = g.shape
    fisher = g.T @ g / n
    gbar = g.mean(0)
    nat = torch.linalg.solve(fisher + damping * torch.eye(d, dtype=g.dtype), gbar)
    return nat * n if reduction == "sum" else nat


def block_grad(model: nn.Module, name: str) -> torch.Tensor:
    module = model.get_submodule(name)
    parts = [module.weight.grad.flatten()]
    if module.bias is not None:
        parts.append(module.bias.grad.flatten())
    # match the (N, d) layout above: weight flattened, then bias
    return torch.cat(parts)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def network_natural_gradient(
    per_sample: dict[str, torch.Tensor], damping: float, reduction: str = "mean"
) -> dict[str, torch.Tensor]:
    """Dense damped NGD of the whole parameter vector (every block's G stacked), per block."""
    names = list(per_sample)
    nat = natural_gradient(torch.cat([per_sample[k] for k in names], dim=1), damping, reduction)
    return dict(zip(names, nat.split([per_sample[k].shape[1] for k in names]), strict=True))


def network_coefficients(per_sample: dict[str, torch.Tensor], damping: float) -> torch.Tensor:
    """``c = (sum_b K_b + N damping I)^-1 1`` of the per-sample losses (float64)."""
    g = torch.cat(list(per_sample.values()), dim=1)
    n = g.shape[0]
    eye = torch.eye(n, dtype=g.dtype)
    return torch.linalg.solve(g @ g.T + n * damping * eye, torch.ones(n, dtype=g.dtype))
