"""Stored coefficients ``c`` for reuse in later epochs, matched by sample id or iteration.

Values live on the parameters' device in one (blocks x slots) tensor per table, so a
lookup is one gather; which (block, slot) pairs are known, and from which epoch, lives on
the host, so deciding the phase never synchronises the GPU. Validity is kept per block: a
block that did not run when an id was first seen (a branch not taken) has no coefficient
for it and inverts when it does run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fngd.memory import tensor_bytes


def _valid(stored_epoch: np.ndarray, epoch: int, refresh_epochs: int | None) -> np.ndarray:
    known = stored_epoch >= 0
    if refresh_epochs is None:
        return known
    return known & (stored_epoch // refresh_epochs == epoch // refresh_epochs)


Lookup = tuple[torch.Tensor, np.ndarray] | None


class SampleTable:
    """Coefficients per (block, dataset sample id).

    Held sample-major, (capacity, blocks), so that a batch's lookup gathers whole rows,
    the cheapest gather there is; ``values`` is the (blocks, capacity) view.
    """

    def __init__(self, num_blocks: int, refresh_epochs: int | None = None) -> None:
        self.num_blocks = num_blocks
        self.refresh_epochs = refresh_epochs
        self._by_sample: torch.Tensor | None = None  # (capacity, blocks)
        self.stored_epoch = np.full((num_blocks, 0), -1, dtype=np.int64)
        self._all_known = np.ones(num_blocks, dtype=bool)
        self._known_cache: np.ndarray | None = None
        self._prefix_cache: torch.Tensor | None = None  # see known_columns

    @property
    def values(self) -> torch.Tensor | None:
        """The coefficients, (blocks, capacity); None before the first store."""
        return None if self._by_sample is None else self._by_sample.t()

    @property
    def all_blocks_known(self) -> np.ndarray:
        """Per slot: whether every block has a coefficient (recomputed after a store)."""
        if self._known_cache is None:
            self._known_cache = (self.stored_epoch >= 0).all(axis=0)
        return self._known_cache

    @property
    def known_columns(self) -> torch.Tensor | None:
        """Slots ``0..k-1`` as (k, blocks, 1), for the longest run of them every block
        knows, or None (also with ``refresh_epochs``, whose validity depends on the epoch).

        Once every sample of a dataset is stored, this is the whole table: a lookup is then
        one ``index_select`` on it (``lookup_known``), whose own bounds check stands in for
        the host-side checks (they cost more than the gather on a cold cache, after a
        backward pass). Recomputed after a store.
        """
        table = self._by_sample
        if self._prefix_cache is None and table is not None and self.refresh_epochs is None:
            known = self.all_blocks_known
            k = int(known.argmin()) if not known.all() else known.size
            if k:
                self._prefix_cache = table[:k].unsqueeze(-1)
        return self._prefix_cache

    def lookup_known(self, ids: torch.Tensor) -> torch.Tensor | None:
        """Coefficients as sample-major columns (N, blocks, 1) for ``ids`` when every id
        lies in the known prefix (on the CPU, where a failed bounds check raises), else
        None: then ``lookup`` decides. One gather, the whole cost of a later epoch's
        lookup; columns, because that is how a step scales its rows."""
        columns = self.known_columns
        if columns is None or not columns.is_cpu:
            return None
        try:
            return columns.index_select(0, ids)
        except (IndexError, RuntimeError):
            return None  # an id beyond the prefix (or negative)

    def lookup(self, ids: torch.Tensor, epoch: int) -> Lookup:
        """``(coefficients (blocks, N), known (blocks,))`` for ``ids`` (host int64); None if
        none is known.

        A block is known when every id has a fresh coefficient for it.
        """
        table = self._by_sample
        if table is None or len(ids) == 0:
            return None
        fast = self.lookup_known(ids)
        if fast is not None:
            return fast.squeeze(-1).t(), self._all_known
        idx = ids.numpy()
        if idx.min() < 0 or idx.max() >= self.stored_epoch.shape[1]:
            return None
        if self.refresh_epochs is None and self.all_blocks_known[idx].all():
            known = self._all_known  # the common case, without a (blocks x N) gather
        else:
            known = _valid(self.stored_epoch[:, idx], epoch, self.refresh_epochs).all(axis=1)
            if not known.any():
                return None
        return table.index_select(0, ids.to(table.device, non_blocking=True)).t(), known

    def store(
        self, ids: torch.Tensor, coeffs: torch.Tensor, epoch: int, blocks: list[int]
    ) -> None:
        """Store rows ``blocks`` of ``coeffs`` (blocks, N) for ``ids``."""
        idx = ids.numpy()
        if idx.size and idx.min() < 0:
            raise ValueError("sample ids must be non-negative dataset indices")
        need = int(idx.max()) + 1 if idx.size else 0
        table = self._by_sample
        if table is None:
            table = coeffs.new_zeros(max(need, 1), self.num_blocks)
        if need > table.shape[0]:
            grown = coeffs.new_zeros(max(need, 2 * table.shape[0]), self.num_blocks)
            grown[: table.shape[0]] = table
            table = grown
        self._by_sample = table
        capacity = table.shape[0]
        if capacity > self.stored_epoch.shape[1]:
            grown_epoch = np.full((self.num_blocks, capacity), -1, dtype=np.int64)
            grown_epoch[:, : self.stored_epoch.shape[1]] = self.stored_epoch
            self.stored_epoch = grown_epoch
        rows = torch.tensor(blocks, device=table.device)
        cols = ids.to(table.device)
        table[cols.unsqueeze(1), rows.unsqueeze(0)] = coeffs[rows].t().to(table.dtype)
        self.stored_epoch[np.ix_(blocks, idx)] = epoch
        self._known_cache = self._prefix_cache = None

    def nbytes(self) -> int:
        return tensor_bytes(self.values)

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values, "stored_epoch": torch.from_numpy(self.stored_epoch.copy())}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        values = state["values"]  # (blocks, capacity)
        self._by_sample = (
            None if values is None else values.to(device or values.device).t().contiguous()
        )
        stored = state["stored_epoch"].detach().cpu().numpy().astype(np.int64)
        # (blocks, capacity); explicit capacity, as reshape(0, -1) is ambiguous for no blocks
        capacity = stored.size // self.num_blocks if self.num_blocks else 0
        self.stored_epoch = stored.reshape(self.num_blocks, capacity).copy()
        self._known_cache = self._prefix_cache = None


class IterationTable:
    """Coefficients per iteration index within the epoch: batch k reuses batch k's."""

    def __init__(self, num_blocks: int, refresh_epochs: int | None = None) -> None:
        self.num_blocks = num_blocks
        self.refresh_epochs = refresh_epochs
        self.values: dict[int, torch.Tensor] = {}
        self.stored_epoch: dict[int, np.ndarray] = {}

    def lookup(self, iteration: int, n: int | None, epoch: int) -> Lookup:
        c = self.values.get(iteration)
        if c is None or (n is not None and c.shape[1] != n):
            return None
        known = _valid(self.stored_epoch[iteration], epoch, self.refresh_epochs)
        return (c, known) if known.any() else None

    def store(self, iteration: int, coeffs: torch.Tensor, epoch: int, blocks: list[int]) -> None:
        old = self.values.get(iteration)
        if old is None or old.shape != coeffs.shape:
            old = torch.zeros_like(coeffs)
            self.stored_epoch[iteration] = np.full(self.num_blocks, -1, dtype=np.int64)
        old[blocks] = coeffs[blocks]
        self.values[iteration] = old
        self.stored_epoch[iteration][blocks] = epoch

    def nbytes(self) -> int:
        return tensor_bytes(self.values)

    def state_dict(self) -> dict[str, Any]:
        return {
            "values": dict(self.values),
            "stored_epoch": {k: torch.from_numpy(v.copy()) for k, v in self.stored_epoch.items()},
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        self.values = {int(k): v.to(device or v.device) for k, v in state["values"].items()}
        self.stored_epoch = {
            int(k): torch.as_tensor(v).cpu().numpy().astype(np.int64).copy()
            for k, v in state["stored_epoch"].items()
        }


class CoefficientStore:
    """Both tables behind one lookup and one store; the ``share`` given picks the table.

    ``share="sample"``: the ``SampleTable`` (by dataset sample id); ``"iteration"``: the
    ``IterationTable`` (by iteration index within the epoch); ``"none"``: nothing is kept,
    every step inverts. ``rows``: the tables' rows, one per block (layer scope) or one for
    the network. The share is an argument, not a copy: the preconditioner's is the one.
    """

    def __init__(self, rows: int, refresh_epochs: int | None = None) -> None:
        self.rows = rows
        self.refresh_epochs = refresh_epochs
        self.reset()

    def reset(self) -> None:
        """Forget every stored coefficient."""
        self.sample_table = SampleTable(self.rows, self.refresh_epochs)
        self.iteration_table = IterationTable(self.rows, self.refresh_epochs)

    def lookup(
        self,
        share: str,
        ids: torch.Tensor | None,
        iteration: int | None,
        n: int | None,
        epoch: int,
    ) -> Lookup:
        """``(coefficients (rows, N), known (rows,))`` of a batch; None if none is known.

        ``ids``: the batch's (``fngd.sample_ids.checked``), needed by ``share="sample"``;
        ``iteration``: its index within the epoch, needed by ``"iteration"``.
        """
        if share == "none" or not self.rows:
            return None
        if share == "iteration":
            assert iteration is not None
            return self.iteration_table.lookup(iteration, n, epoch)
        if ids is None:
            raise ValueError(
                'share="sample" needs sample_ids (dataset indices of the batch) at every step'
            )
        return self.sample_table.lookup(ids, epoch)

    def columns(
        self, share: str, ids: torch.Tensor | None, iteration: int | None, epoch: int
    ) -> tuple[torch.Tensor, np.ndarray | None] | None:
        """A batch's coefficients as sample-major columns (N, rows, 1), how a step scales
        its rows, and which rows are known (None: all); None if none is.

        A later epoch's common case is one gather (``SampleTable.lookup_known``).
        """
        if share == "sample" and self.rows and ids is not None and len(ids):
            fast = self.sample_table.lookup_known(ids)
            if fast is not None:
                return fast, None
        found = self.lookup(share, ids, iteration, None if ids is None else len(ids), epoch)
        return None if found is None else (found[0].t().unsqueeze(-1), found[1])

    def store(
        self,
        share: str,
        coeffs: torch.Tensor,
        ids: torch.Tensor | None,
        iteration: int | None,
        epoch: int,
        rows: list[int],
    ) -> None:
        """Rows ``rows`` of ``coeffs`` (rows, N) for the batch's ``ids`` or ``iteration``."""
        if share == "sample":
            assert ids is not None
            self.sample_table.store(ids, coeffs, epoch, rows)
        elif share == "iteration":
            assert iteration is not None
            self.iteration_table.store(iteration, coeffs, epoch, rows)

    def nbytes(self) -> int:
        return self.sample_table.nbytes() + self.iteration_table.nbytes()

    def state_dict(self) -> dict[str, Any]:
        return {
            "sample_table": self.sample_table.state_dict(),
            "iteration_table": self.iteration_table.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        self.sample_table.load_state_dict(state["sample_table"], device)
        self.iteration_table.load_state_dict(state["iteration_table"], device)
