"""Stored coefficients ``c`` for reuse in later epochs, matched by sample id or iteration.

Values live on the parameters' device in one (blocks x slots) tensor per table, so a
lookup is one gather; which slots are known (and from which epoch) lives on the host, so
deciding the phase never synchronises the GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _valid(stored_epoch: np.ndarray, epoch: int, refresh_epochs: int | None) -> np.ndarray:
    known = stored_epoch >= 0
    if refresh_epochs is None:
        return known
    return known & (stored_epoch // refresh_epochs == epoch // refresh_epochs)


class SampleTable:
    """Coefficients per (block, dataset sample id)."""

    def __init__(self, num_blocks: int, refresh_epochs: int | None = None) -> None:
        self.num_blocks = num_blocks
        self.refresh_epochs = refresh_epochs
        self.values: torch.Tensor | None = None  # (blocks, capacity)
        self.stored_epoch = np.full(0, -1, dtype=np.int64)

    def lookup(self, ids: torch.Tensor, epoch: int) -> torch.Tensor | None:
        """(blocks, N) coefficients for ``ids`` if every one is known and fresh, else None."""
        values = self.values
        if values is None or len(ids) == 0:
            return None
        idx = ids.numpy()
        if idx.max() >= self.stored_epoch.size:
            return None
        stored = self.stored_epoch[idx]
        if self.refresh_epochs is None:
            if stored.min() < 0:
                return None
        elif not _valid(stored, epoch, self.refresh_epochs).all():
            return None
        return values.index_select(1, ids.to(values.device, non_blocking=True))

    def store(self, ids: torch.Tensor, coeffs: torch.Tensor, epoch: int) -> None:
        idx = ids.numpy()
        need = int(idx.max()) + 1 if idx.size else 0
        if self.values is None:
            self.values = coeffs.new_zeros(self.num_blocks, max(need, 1))
        if need > self.values.shape[1]:
            grown = coeffs.new_zeros(self.num_blocks, max(need, 2 * self.values.shape[1]))
            grown[:, : self.values.shape[1]] = self.values
            self.values = grown
        if need > self.stored_epoch.size:
            grown_epoch = np.full(self.values.shape[1], -1, dtype=np.int64)
            grown_epoch[: self.stored_epoch.size] = self.stored_epoch
            self.stored_epoch = grown_epoch
        self.values[:, ids.to(self.values.device)] = coeffs.to(self.values.dtype)
        self.stored_epoch[idx] = epoch

    def nbytes(self) -> int:
        if self.values is None:
            return 0
        return self.values.numel() * self.values.element_size()

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values, "stored_epoch": torch.from_numpy(self.stored_epoch.copy())}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        values = state["values"]
        self.values = None if values is None else values.to(device or values.device)
        self.stored_epoch = state["stored_epoch"].numpy().astype(np.int64).copy()


class IterationTable:
    """Coefficients per iteration index within the epoch: batch k reuses batch k's."""

    def __init__(self, num_blocks: int, refresh_epochs: int | None = None) -> None:
        self.num_blocks = num_blocks
        self.refresh_epochs = refresh_epochs
        self.values: dict[int, torch.Tensor] = {}
        self.stored_epoch: dict[int, int] = {}

    def lookup(self, iteration: int, n: int | None, epoch: int) -> torch.Tensor | None:
        c = self.values.get(iteration)
        if c is None or (n is not None and c.shape[1] != n):
            return None
        stored = np.array([self.stored_epoch[iteration]])
        return c if _valid(stored, epoch, self.refresh_epochs)[0] else None

    def store(self, iteration: int, coeffs: torch.Tensor, epoch: int) -> None:
        self.values[iteration] = coeffs.detach().clone()
        self.stored_epoch[iteration] = epoch

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.values.values())

    def state_dict(self) -> dict[str, Any]:
        return {"values": dict(self.values), "stored_epoch": dict(self.stored_epoch)}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        self.values = {int(k): v.to(device or v.device) for k, v in state["values"].items()}
        self.stored_epoch = {int(k): int(v) for k, v in state["stored_epoch"].items()}
