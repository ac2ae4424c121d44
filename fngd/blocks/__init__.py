"""Per-module block types (one small class per nn.Module type, as in kfac-pytorch)."""

from __future__ import annotations

from torch import nn

from fngd.blocks import conv2d
from fngd.blocks.base import Block, BlockOwner
from fngd.blocks.conv2d import Conv2dBlock
from fngd.blocks.linear import LinearBlock

__all__ = ["Block", "BlockOwner", "Conv2dBlock", "LinearBlock", "block_type"]


def block_type(module: nn.Module) -> type[Block] | None:
    """The block class for ``module``, or None when it keeps its plain gradient."""
    if isinstance(module, nn.Linear):
        return LinearBlock
    if isinstance(module, nn.Conv2d) and conv2d.supported(module):
        return Conv2dBlock
    return None
