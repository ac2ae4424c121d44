"""Bytes held by optimiser state, for the ``memory`` records."""

from __future__ import annotations

from typing import Any

import torch


def tensor_bytes(tensors: Any) -> int:
    """Bytes held by the tensors found (recursively) in ``tensors``; anything else counts 0."""
    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    if isinstance(tensors, dict):
        return sum(tensor_bytes(v) for v in tensors.values())
    if isinstance(tensors, (list, tuple)):
        return sum(tensor_bytes(v) for v in tensors)
    return 0
