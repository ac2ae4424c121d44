"""FNGD's step under ``DistributedDataParallel``: who reduces its gradients, DDP or FNGD.

``prepare()`` must decide it before the forward pass, because DDP sets its reducer up there:

- every block's coefficients are known (weighted-sum phase): the blocks return their
  weighted gradients from backward and DDP all-reduces them, as it does SGD's;
- some block must invert: DDP's reducer is off (``no_sync``), the gradients exist only
  after ``step()`` has solved, and ``step()`` averages every gradient in one all-reduce.

After the step (or a failed one, or ``discard()``) the reducer is on again, for whatever
runs next without FNGD.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from fngd.distributed import Comm
from fngd.phases import FNGD_WEIGHTED_SUM, phase
from fngd.step_state import StepState

__all__ = ["DDPStep"]


class DDPStep:
    """One DDP model's reducer switch, step by step; ``comm`` holds the model."""

    def __init__(self) -> None:
        self.prepared = False  # prepare() ran for the coming step
        self.unsynced = False  # this step's backward runs without DDP's reducer

    def prepare(self, comm: Comm, known_before_backward: bool) -> None:
        """DDP reduces the coming backward pass iff no block waits for ``step()``."""
        self.prepared = True
        self.unsynced = not known_before_backward
        comm.sync(known_before_backward)

    def check(self, comm: Comm, state: StepState | None) -> None:
        """``prepare()`` ran, and a step DDP reduced left nothing to ``step()``."""
        if not self.prepared:
            self.end(comm)
            raise RuntimeError(
                "under DistributedDataParallel FNGD needs prepare(sample_ids) before every "
                "forward pass: it decides there whether DDP reduces the backward pass"
            )
        if not self.unsynced and state is not None and state.stash:
            names = ", ".join(sorted(b.name for b in state.stash))
            self.end(comm)
            raise RuntimeError(
                f"block(s) {names} left their gradient to step() in a step DDP reduced "
                "(a module run twice, a batch of another size than prepared, or reweight() "
                "after the forward pass); under DistributedDataParallel each block must run "
                "once per step, on the prepared batch"
            )

    def finish(self, comm: Comm, params: Iterable[torch.Tensor]) -> None:
        """A step done: average the gradients if DDP's reducer was off, then switch it on."""
        if self.unsynced:  # average every gradient here, once
            with phase(FNGD_WEIGHTED_SUM), torch.no_grad():
                comm.average([p.grad for p in params if p.grad is not None])
        self.end(comm)

    def end(self, comm: Comm) -> None:
        """DDP's reducer on again."""
        self.prepared = self.unsynced = False
        comm.sync(True)
