"""Stored coefficients ``c`` for reuse in later epochs, matched by sample id or iteration.

Values live on the parameters' device in one (blocks x slots) tensor per table, so a
lookup is one gather (the sample table's slots follow the ids seen, not the largest id);
which (block, slot) pairs are known, and from which epoch, lives on the host, so deciding
the phase never synchronises the GPU. Validity is kept per block: a
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


#: The table is dense (row = sample id) while the largest id seen is under
#: ``_SPARSE_ABOVE`` x the ids seen + ``_FLOOR``, and turns dense again, from sparse, once
#: it is under ``_DENSE_BELOW`` x them + ``_FLOOR``: the gap between the two keeps the ids
#: seen at least doubling between the (one-gather) conversions to dense.
_SPARSE_ABOVE = 4
_DENSE_BELOW = 2
_FLOOR = 1024


def _fits(largest: int, seen: int, spread: int) -> bool:
    """Whether a dense table of ``largest + 1`` rows stays within ``spread`` x ``seen``."""
    return largest < spread * seen + _FLOOR


class SampleTable:
    """Coefficients per (block, dataset sample id), in rows for the samples seen.

    Held row-major, (capacity, blocks), so that a batch's lookup gathers whole rows, the
    cheapest gather there is; ``values`` is the (blocks, capacity) view, and
    ``stored_epoch`` (host, (blocks, capacity)) says which (block, row) is known and from
    which epoch. Rows grow by doubling.

    Dense while the ids seen are dense from 0 (``_fits``): row = sample id, and a later
    epoch's lookup is one ``index_select`` (``lookup_known``). Sparse otherwise (one id of
    10**9 among a few): rows are handed out as ids arrive, and ``sample_ids`` (sorted, host)
    with ``rows`` maps an id to its row by ``np.searchsorted``; memory then follows the ids
    seen, not the largest one. Turning sparse costs nothing (rows stay put); turning dense
    again is one gather of the table into id order. A sparse store of new ids inserts them
    into the sorted index, a host copy of it (8 bytes an id and row); a later epoch's sparse
    lookup is a ``searchsorted`` and a gather (about 85 us for 128 of 50,000 ids on one CPU
    thread, against 6 us for the dense one).
    """

    def __init__(self, num_blocks: int, refresh_epochs: int | None = None) -> None:
        self.num_blocks = num_blocks
        self.refresh_epochs = refresh_epochs
        self._by_sample: torch.Tensor | None = None  # (capacity, blocks)
        self.stored_epoch = np.full((num_blocks, 0), -1, dtype=np.int64)
        self.sample_ids: np.ndarray | None = None  # sparse: the ids seen, sorted
        self.rows: np.ndarray | None = None  # sparse: each sorted id's row
        self._seen = 0  # distinct ids stored
        self._used = 0  # rows handed out (sparse)
        self._largest = -1  # the largest id stored
        self._all_known = np.ones(num_blocks, dtype=bool)
        self._known_cache: np.ndarray | None = None
        self._prefix_cache: torch.Tensor | None = None  # see known_columns

    @property
    def sparse(self) -> bool:
        """Whether ids map to rows through ``sample_ids`` (else row = id)."""
        return self.sample_ids is not None

    @property
    def values(self) -> torch.Tensor | None:
        """The coefficients, (blocks, capacity); None before the first store."""
        return None if self._by_sample is None else self._by_sample.t()

    @property
    def all_blocks_known(self) -> np.ndarray:
        """Per row: whether every block has a coefficient (recomputed after a store)."""
        if self._known_cache is None:
            self._known_cache = (self.stored_epoch >= 0).all(axis=0)
        return self._known_cache

    @property
    def known_columns(self) -> torch.Tensor | None:
        """Rows ``0..k-1`` as (k, blocks, 1), for the longest run of them every block
        knows, or None (also with ``refresh_epochs``, whose validity depends on the epoch,
        and for a sparse table, whose rows are not ids).

        Once every sample of a dataset is stored, this is the whole table: a lookup is then
        one ``index_select`` on it (``lookup_known``), whose own bounds check stands in for
        the host-side checks (they cost more than the gather on a cold cache, after a
        backward pass). Recomputed after a store.
        """
        table = self._by_sample
        if self._prefix_cache is None and table is not None and self.refresh_epochs is None:
            if self.sample_ids is not None:
                return None
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

    def _find(self, idx: np.ndarray) -> np.ndarray:
        """Each id's row, -1 where it has none."""
        if self.sample_ids is None:
            inside = (idx >= 0) & (idx < self.stored_epoch.shape[1])
            return np.where(inside, idx, -1)
        keys = self.sample_ids
        if not keys.size:
            return np.full(idx.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(keys, idx), keys.size - 1)
        return np.where(keys[pos] == idx, self.rows[pos], -1)

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
        row = self._find(ids.numpy())
        if row.min() < 0:
            return None
        if self.refresh_epochs is None and self.all_blocks_known[row].all():
            known = self._all_known  # the common case, without a (blocks x N) gather
        else:
            known = _valid(self.stored_epoch[:, row], epoch, self.refresh_epochs).all(axis=1)
            if not known.any():
                return None
        rows = ids if self.sample_ids is None else torch.from_numpy(row)
        return table.index_select(0, rows.to(table.device, non_blocking=True)).t(), known

    def _rows_for(self, idx: np.ndarray) -> np.ndarray:
        """Each id's row, handing out rows to the ids not seen (and changing form by
        ``_fits`` when the ids seen ask for it)."""
        row = self._find(idx)
        unseen = row < 0
        if self.sample_ids is None and not unseen.all():  # dense: a row may be unknown
            unseen |= ~(self.stored_epoch[:, np.maximum(row, 0)] >= 0).any(axis=0)
        new = np.unique(idx[unseen])
        if not new.size:
            return row
        seen = self._seen + new.size
        largest = max(int(new[-1]), self._largest)
        if self.sample_ids is None and not _fits(largest, seen, _SPARSE_ABOVE):
            self._to_sparse()
        elif self.sample_ids is not None and _fits(largest, seen, _DENSE_BELOW):
            self._to_dense()
        self._seen, self._largest = seen, largest
        if self.sample_ids is None:
            self._reserve(largest + 1)
            return idx
        at = np.searchsorted(self.sample_ids, new)
        new_rows = np.arange(self._used, self._used + new.size, dtype=np.int64)
        self.sample_ids = np.insert(self.sample_ids, at, new)
        self.rows = np.insert(self.rows, at, new_rows)
        self._used += new.size
        self._reserve(self._used)
        return self._find(idx)

    def _to_sparse(self) -> None:
        """Rows stay where they are: row = id for the ids seen so far."""
        self.sample_ids = np.flatnonzero((self.stored_epoch >= 0).any(axis=0)).astype(np.int64)
        self.rows = self.sample_ids.copy()
        self._used = int(self.sample_ids[-1]) + 1 if self.sample_ids.size else 0

    def _to_dense(self) -> None:
        """One gather of the rows into id order."""
        assert self.sample_ids is not None and self.rows is not None
        keys, rows = self.sample_ids, self.rows
        size = int(keys[-1]) + 1 if keys.size else 0
        epoch = np.full((self.num_blocks, size), -1, dtype=np.int64)
        epoch[:, keys] = self.stored_epoch[:, rows]
        if self._by_sample is not None:
            table = self._by_sample
            dense = table.new_zeros(max(size, 1), self.num_blocks)
            dense[torch.from_numpy(keys).to(table.device)] = table[
                torch.from_numpy(rows).to(table.device)
            ]
            self._by_sample = dense
        self.stored_epoch = epoch
        self.sample_ids = self.rows = None
        self._used = 0

    def _reserve(self, need: int) -> None:
        """Room for ``need`` rows in the host bookkeeping (the values follow in ``store``)."""
        capacity = self.stored_epoch.shape[1]
        if need > capacity:
            grown = np.full((self.num_blocks, max(need, 2 * capacity)), -1, dtype=np.int64)
            grown[:, :capacity] = self.stored_epoch
            self.stored_epoch = grown

    def store(self, ids: torch.Tensor, coeffs: torch.Tensor, epoch: int, blocks: list[int]) -> None:
        """Store rows ``blocks`` of ``coeffs`` (blocks, N) for ``ids``."""
        idx = ids.numpy()
        if idx.size and idx.min() < 0:
            raise ValueError("sample ids must be non-negative dataset indices")
        row = self._rows_for(idx) if idx.size else idx
        capacity = self.stored_epoch.shape[1]
        table = self._by_sample
        if table is None:
            table = coeffs.new_zeros(max(capacity, 1), self.num_blocks)
        if capacity > table.shape[0]:
            grown = coeffs.new_zeros(capacity, self.num_blocks)
            grown[: table.shape[0]] = table
            table = grown
        if torch.promote_types(table.dtype, coeffs.dtype) != table.dtype:
            table = table.to(coeffs.dtype)  # a model cast to float64 keeps its coefficients so
        self._by_sample = table
        self._reserve(table.shape[0])
        block_rows = torch.tensor(blocks, device=table.device)
        cols = (ids if self.sample_ids is None else torch.from_numpy(row)).to(table.device)
        table[cols.unsqueeze(1), block_rows.unsqueeze(0)] = coeffs[block_rows].t().to(table.dtype)
        self.stored_epoch[np.ix_(blocks, row)] = epoch
        self._known_cache = self._prefix_cache = None

    def nbytes(self) -> int:
        """Everything held: the values, ``stored_epoch``, the sparse index and the per-row
        known flags a lookup builds (counted as held: every later-epoch lookup has them)."""
        host = self.stored_epoch.nbytes + self.stored_epoch.shape[1]  # + one bool per row
        if self.sample_ids is not None and self.rows is not None:
            host += self.sample_ids.nbytes + self.rows.nbytes
        return tensor_bytes(self.values) + host

    def state_dict(self) -> dict[str, Any]:
        """``values`` and ``stored_epoch`` (blocks, capacity); a sparse table adds its
        ``sample_ids`` and ``rows``. A state without them (a dense table's) loads dense."""
        state: dict[str, Any] = {
            "values": self.values,
            "stored_epoch": torch.from_numpy(self.stored_epoch.copy()),
        }
        if self.sample_ids is not None and self.rows is not None:
            state["sample_ids"] = torch.from_numpy(self.sample_ids.copy())
            state["rows"] = torch.from_numpy(self.rows.copy())
        return state

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        values = state["values"]  # (blocks, capacity)
        self._by_sample = (
            None if values is None else values.to(device or values.device).t().contiguous()
        )
        stored = state["stored_epoch"].detach().cpu().numpy().astype(np.int64)
        # (blocks, capacity); explicit capacity, as reshape(0, -1) is ambiguous for no blocks
        capacity = stored.size // self.num_blocks if self.num_blocks else 0
        self.stored_epoch = stored.reshape(self.num_blocks, capacity).copy()
        seen = (self.stored_epoch >= 0).any(axis=0)
        if state.get("sample_ids") is None:
            self.sample_ids = self.rows = None
            self._seen, self._used = int(seen.sum()), 0
            self._largest = int(np.flatnonzero(seen)[-1]) if seen.any() else -1
        else:
            self.sample_ids = state["sample_ids"].cpu().numpy().astype(np.int64).copy()
            self.rows = state["rows"].cpu().numpy().astype(np.int64).copy()
            self._seen = int(self.sample_ids.size)
            self._used = int(self.rows.max()) + 1 if self.rows.size else 0
            self._largest = int(self.sample_ids[-1]) if self.sample_ids.size else -1
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
        elif torch.promote_types(old.dtype, coeffs.dtype) != old.dtype:
            old = old.to(coeffs.dtype)  # a model cast to float64 keeps its coefficients so
        old[blocks] = coeffs[blocks]
        self.values[iteration] = old
        self.stored_epoch[iteration][blocks] = epoch

    def nbytes(self) -> int:
        """The values and each iteration's stored epochs."""
        return tensor_bytes(self.values) + sum(e.nbytes for e in self.stored_epoch.values())

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
