"""Sample ids as FNGD keeps them: checked once, where they enter, in one form.

Every public method that takes ``sample_ids`` (``prepare``, ``reweight``, ``loss_weights``,
``step``, ``staleness``) passes them through ``checked`` first; everything behind it sees
one form only: a 1-D int64 tensor on the host (the coefficient tables' keys live there, so
that deciding a step's phase never synchronises a GPU). A mistake is one error that names
the argument and what was given, not an index error deep in a table: float ids are refused,
not truncated; ids must be 1-D dataset indices (non-negative), one per sample of the batch
where the batch is known (``check_batch``).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_batch", "checked"]


def checked(sample_ids: Any, batch: int | None = None) -> torch.Tensor:
    """``sample_ids`` as a host int64 1-D tensor, or one ``TypeError``/``ValueError``.

    Anything ``torch.as_tensor`` reads as integers is accepted (a tensor on any device, a
    NumPy array, a list); the loaders' own ids (host int64, 1-D) are returned as they are.
    ``batch``, when known, is the number of samples the ids must match.
    """
    ids = sample_ids
    if not (
        isinstance(ids, torch.Tensor) and ids.is_cpu and ids.dtype is torch.int64
    ):
        ids = _as_int64(sample_ids)
    if ids.ndim != 1:
        raise ValueError(
            f"sample_ids: expected a 1-D tensor of ids, one per sample, got shape "
            f"{tuple(ids.shape)}"
        )
    if len(ids) and ids.numpy().min() < 0:
        raise ValueError(
            f"sample_ids: expected non-negative dataset indices, got {int(ids.min())}"
        )
    if batch is not None:
        check_batch(ids, batch)
    return ids


def check_batch(ids: torch.Tensor, batch: int) -> None:
    """One id per sample: ``ids`` (already ``checked``) against a batch of ``batch``."""
    if len(ids) != batch:
        raise ValueError(f"sample_ids: {len(ids)} ids for a batch of {batch}")


def _as_int64(sample_ids: Any) -> torch.Tensor:
    try:
        ids = sample_ids if isinstance(sample_ids, torch.Tensor) else torch.as_tensor(sample_ids)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"sample_ids: expected integer ids, got {type(sample_ids).__name__}"
        ) from None
    if ids.numel() == 0 and ids is not sample_ids:  # ``[]``: no ids, whatever dtype it reads as
        return ids.to(torch.int64)
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype is torch.bool:
        raise TypeError(
            f"sample_ids: expected integer ids, got {str(ids.dtype).removeprefix('torch.')} "
            "tensor"
        )
    return ids.detach().to("cpu", torch.int64)
