"""Per-module block types (one small class per nn.Module type, as in kfac-pytorch)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from fngd.blocks import conv2d
from fngd.blocks.base import Block, BlockOwner
from fngd.blocks.conv2d import Conv2dBlock
from fngd.blocks.linear import LinearBlock

__all__ = ["Block", "BlockOwner", "Conv2dBlock", "LinearBlock", "block_type", "find"]


def block_type(module: nn.Module) -> type[Block] | None:
    """The block class for ``module``, or None when it keeps its plain gradient."""
    if isinstance(module, nn.Linear):
        return LinearBlock
    if isinstance(module, nn.Conv2d) and conv2d.supported(module):
        return Conv2dBlock
    return None


def find(
    model: nn.Module, skip_layers: Iterable[str] = ()
) -> list[tuple[str, nn.Module, type[Block]]]:
    """``(name, module, block class)`` of every module of ``model`` that becomes a block:
    of a block type, with a trainable weight, and not matched by ``skip_layers`` (regular
    expressions searched in module names or matching class names in full)."""
    patterns = list(skip_layers)
    return [
        (name, module, cls)
        for name, module in model.named_modules()
        if (cls := block_type(module)) is not None
        and not _matches(patterns, name, module)
        and module.weight.requires_grad
    ]


def _matches(patterns: list[str], name: str, module: nn.Module) -> bool:
    cls = type(module).__name__
    return any(re.search(p, name) or re.fullmatch(p, cls) for p in patterns)
