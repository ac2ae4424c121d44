"""Per-module block types (one small class per nn.Module type, as in kfac-pytorch), and the
one decision of which modules become blocks and, for every other one, why not.

``decide`` is that decision; ``find`` (the blocks ``FNGD`` makes) and ``FNGD.coverage()``
(``fngd.coverage``: every parameter, preconditioned or the reason) both read it, so what
is preconditioned and what is said to be can never differ.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from fngd.blocks.base import Block, BlockOwner
from fngd.blocks.conv import Conv1dBlock, Conv2dBlock
from fngd.blocks.linear import LinearBlock
from fngd.blocks.parametrized import refusal

__all__ = [
    "Block",
    "BlockOwner",
    "Conv1dBlock",
    "Conv2dBlock",
    "Decision",
    "LinearBlock",
    "block_type",
    "decide",
    "find",
    "inside_fused_attention",
    "owned",
]

#: Why a module inside ``nn.MultiheadAttention`` (its ``out_proj``) keeps the plain gradient.
FUSED_ATTENTION = (
    "fused attention: F.multi_head_attention_forward uses the weights directly and its "
    "out_proj module never runs, so no preconditioner sees their inputs: no block"
)
_NORMS = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def block_type(module: nn.Module) -> type[Block] | None:
    """The block class for ``module``'s type, or None when its type keeps the plain gradient."""
    if isinstance(module, nn.Linear):
        return LinearBlock
    if isinstance(module, nn.Conv2d):
        return Conv2dBlock
    if isinstance(module, nn.Conv1d):
        return Conv1dBlock
    return None


def type_reason(module: nn.Module) -> str:
    """Why a module of a type with no block keeps the plain gradient."""
    if isinstance(module, nn.MultiheadAttention):
        return FUSED_ATTENTION
    if isinstance(module, nn.Embedding | nn.EmbeddingBag):
        return "embedding: no block type (its per-sample gradient is a scatter of rows)"
    if isinstance(module, _NORMS):
        return "normalisation layer: no block type"
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "transposed convolution: no block type"
    if isinstance(module, nn.Conv3d):
        return "Conv3d: no block type"
    return f"{type(module).__name__}: no block type"


@dataclass(frozen=True)
class Decision:
    """One module that holds trainable parameters: its block class, or why it has none."""

    name: str
    module: nn.Module
    block: type[Block] | None
    reason: str | None = None


def owned(module: nn.Module) -> list[torch.Tensor]:
    """The trainable parameters ``module`` holds itself: its own and those its
    parametrisations compute its tensors from (not its children's)."""
    params = [p for p in module._parameters.values() if p is not None]
    if parametrize.is_parametrized(module):
        params += list(module.parametrizations.parameters())
    return [p for p in params if p.requires_grad]


def decide(model: nn.Module, skip_layers: Iterable[str] = ()) -> list[Decision]:
    """Every module of ``model`` that holds trainable parameters, in module order, with its
    block class or the reason it keeps the plain gradient.

    A module becomes a block when its type has one (``block_type``), its weight trains, it
    is not matched by ``skip_layers`` (regular expressions searched in module names or
    matching class names in full), no other module uses its weight (a tied weight's
    gradient would be a mix of plain and natural parts), and its forward runs as a module
    (not inside ``nn.MultiheadAttention``). A weight set by a hook (the deprecated
    ``torch.nn.utils.weight_norm``) is one ``ValueError``: FNGD cannot train it.
    """
    patterns = list(skip_layers)
    modules = [
        (name, module)
        for name, module in model.named_modules()
        if not isinstance(module, parametrize.ParametrizationList)
        and ".parametrizations." not in f".{name}."
        and owned(module)
    ]
    users: dict[int, list[str]] = {}
    for name, module in modules:
        for p in owned(module):
            users.setdefault(id(p), []).append(name)
    fused = inside_fused_attention(model)
    decisions = []
    for name, module in modules:
        cls = block_type(module)
        reason = None
        if name in fused:
            reason = FUSED_ATTENTION
        elif cls is None:
            reason = type_reason(module)
        elif _matches(patterns, name, module):
            reason = "matched by skip_layers"
        elif (refused := refusal(name, module)) is not None:
            raise ValueError(refused)
        elif not _weight_trains(module):
            reason = "its weight is frozen (requires_grad=False): no block"
        elif shared := sorted({n for p in owned(module) for n in users[id(p)] if n != name}):
            reason = f"a parameter shared with {', '.join(map(repr, shared))}: no block"
        decisions.append(Decision(name, module, None if reason else cls, reason))
    return decisions


def find(
    model: nn.Module, skip_layers: Iterable[str] = ()
) -> list[tuple[str, nn.Module, type[Block]]]:
    """``(name, module, block class)`` of every module of ``model`` that becomes a block
    (``decide``)."""
    return [(d.name, d.module, d.block) for d in decide(model, skip_layers) if d.block]


def _weight_trains(module: nn.Module) -> bool:
    """Whether the weight trains, read without computing a parametrised one (whose
    parametrisation may have state, as ``spectral_norm``'s power iteration)."""
    weight = module._parameters.get("weight")
    if weight is not None:
        return weight.requires_grad
    if parametrize.is_parametrized(module, "weight"):
        return any(p.requires_grad for p in module.parametrizations.weight.parameters())
    return False


def inside_fused_attention(model: nn.Module) -> set[str]:
    """Names of the modules inside an ``nn.MultiheadAttention`` (its ``out_proj``)."""
    inside: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            prefix = f"{name}." if name else ""
            inside.update(f"{prefix}{n}" for n, _ in module.named_modules() if n)
    return inside


def _matches(patterns: list[str], name: str, module: nn.Module) -> bool:
    cls = type(module).__name__
    return any(re.search(p, name) or re.fullmatch(p, cls) for p in patterns)
