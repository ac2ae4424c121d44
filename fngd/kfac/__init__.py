"""The built-in KFAC preconditioner (eigen method, kfac-pytorch's conventions)."""

from __future__ import annotations

from fngd.kfac.block import KFACBlock
from fngd.kfac.layers import ModuleHelper, find_layers
from fngd.kfac.preconditioner import KFAC

__all__ = ["KFAC", "KFACBlock", "ModuleHelper", "find_layers"]
