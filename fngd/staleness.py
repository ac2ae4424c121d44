"""How stale reused coefficients are: stored against fresh directions on one probe batch.

FNGD reuses coefficients solved in an earlier epoch at other weights. On a probe batch at
the current weights, the direction the stored coefficients give, ``sum_i c_stored_i g_i``,
is compared with a fresh solve's: their cosine and the norm ratio ``||stored|| / ||fresh||``.

``FNGD.staleness(ids)`` returns the context manager, ``Staleness``, and hands it what it
works with: a way to swap the preconditioner's step state (so that the probe's backward
runs in a state of its own), the parameters whose ``.grad`` it keeps, and ``measure`` bound
to the ``Inversion`` that solves afresh and holds the stored coefficients, and the damping
a solve would use now. Nothing here knows ``FNGD`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from types import TracebackType
from typing import Any

import numpy as np
import torch

from fngd.blocks.base import Block
from fngd.inversion import NETWORK, Inversion
from fngd.sample_ids import check_batch
from fngd.step_state import Pair, StepState, block_uses

Result = dict[str, dict[str, Any]]

__all__ = ["Result", "Staleness", "compare", "measure", "unknown"]


def compare(stored: torch.Tensor, fresh: torch.Tensor) -> dict[str, Any]:
    """Cosine of the two directions and ``||stored|| / ||fresh||`` (float64)."""
    stored, fresh = stored.double(), fresh.double()
    ns, nf = stored.norm(), fresh.norm()
    cosine = torch.dot(stored, fresh) / (ns * nf)
    return {"cosine": float(cosine), "norm_ratio": float(ns / nf), "known": True}


def unknown() -> dict[str, Any]:
    """A key whose batch has no stored coefficient: nothing to compare."""
    return {"cosine": None, "norm_ratio": None, "known": False}


class Staleness:
    """``with pre.staleness(ids) as probe: loss.backward()``; then ``probe.result``.

    The backward inside is the probe's: it writes no ``.grad`` and leaves the
    preconditioner's tables, step count and mode as they were. On entry every parameter's
    ``.grad`` is set aside and ``swap`` gives the preconditioner an empty step state, in
    which every block keeps its (input, grad_output) pair; on exit ``swap`` puts the step
    back and hands over the probe's state, and the gradients return. On a clean exit
    ``result`` is ``measure(stash)``, per key ``{"cosine", "norm_ratio", "known"}``; after
    an exception it stays empty.
    """

    def __init__(
        self,
        swap: Callable[[StepState | None], StepState | None],
        params: list[torch.Tensor],
        measure: Callable[[StepState | None], Result],
    ) -> None:
        self._swap = swap
        self._params = params
        self._measure = measure
        #: key -> {"cosine": float | None, "norm_ratio": float | None, "known": bool}
        self.result: Result = {}
        self._saved: tuple[StepState | None, list[torch.Tensor | None]] | None = None

    def __enter__(self) -> Staleness:
        grads = [p.grad for p in self._params]
        for p in self._params:
            p.grad = None
        self._saved = (self._swap(StepState()), grads)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._saved is not None
        state, grads = self._saved
        probe = self._swap(state)
        for p, g in zip(self._params, grads, strict=True):
            p.grad = g
        if exc_type is None:
            self.result = self._measure(probe)


@torch.no_grad()
def measure(
    probe: StepState | None,
    *,
    inversion: Inversion,
    share: str,
    sample_ids: torch.Tensor | None,
    iteration: int | None,
    epoch: int,
    damping: float,
    world: int = 1,
) -> Result:
    """Stored against fresh directions for the probe batch whose pairs ``stash`` holds.

    Keys: each block's name and ``"network"`` (the concatenated directions) in layer scope,
    ``"network"`` in network scope; ``unknown()`` where some id (or the iteration) has no
    stored coefficient. ``world``: under DDP the stored coefficients are the global batch's,
    and ``world`` times them weighs this rank's probe batch as a fresh local solve does.
    """
    blocks = [] if probe is None else sorted(probe.stash, key=attrgetter("index"))
    if not blocks:
        return {}
    assert probe is not None
    pairs = block_uses(probe, blocks)
    n = pairs[blocks[0]][0][0].shape[0]
    if sample_ids is not None:
        check_batch(sample_ids, n)
    names = [b.name for b in blocks]
    fresh, _ = inversion.solve(inversion.grams(blocks, pairs, n), names, damping)
    found = inversion.store.lookup(share, sample_ids, iteration, n, epoch)
    stored, known = (None, np.zeros(inversion.num_rows, dtype=bool)) if found is None else found
    network = inversion.scope == "network"
    fresh_dirs, stored_dirs = {}, {}
    for j, b in enumerate(blocks):
        row = inversion.rows[b.index]
        fresh_dirs[b.name] = direction(b, pairs[b], fresh[0 if network else j])
        if stored is not None and known[row]:
            stored_dirs[b.name] = direction(b, pairs[b], stored[row] * world)
    result = {}
    if not network:
        for name in names:
            s = stored_dirs.get(name)
            result[name] = unknown() if s is None else compare(s, fresh_dirs[name])
    whole = torch.cat([fresh_dirs[k] for k in names])
    if len(stored_dirs) == len(names):
        result[NETWORK] = compare(torch.cat([stored_dirs[k] for k in names]), whole)
    else:
        result[NETWORK] = unknown()
    return result


def direction(block: Block, uses: list[Pair], coeffs: torch.Tensor) -> torch.Tensor:
    """``sum_i c_i g_i`` of ``block`` (weight, then bias), flattened, in float64."""
    scale = (coeffs * len(coeffs)).unsqueeze(-1).to(uses[0][1].dtype)
    grads = block.weighted_grads_of(uses, scale)
    return torch.cat([g.flatten() for g in grads if g is not None]).double()
