"""The one interface the runner and the benchmarks drive every optimiser through."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from fngd.memory import tensor_bytes
from fngd.phases import UPDATE, phase


class Preconditioner(Protocol):
    """The one surface of FNGD, the built-in KFAC and the kfac-pytorch adapter.

    kfac-pytorch's pattern, plus an announcement of the batch before its backward pass:
    ``pre.prepare(sample_ids=ids); loss.backward(); pre.step(sample_ids=ids);
    optimizer.step()``. Preconditioners that need no sample ids accept and ignore them.
    """

    @property
    def mode(self) -> str | None:
        """What the last step did (FNGD: inversion / weighted_sum; KFAC: inverse / no_inverse)."""
        ...

    @property
    def phases(self) -> tuple[str, ...]:
        """The ``fngd.phases`` names its steps report, besides the common ones."""
        ...

    def prepare(self, sample_ids: torch.Tensor | None = None) -> None: ...

    def reweight(self, sample_ids: torch.Tensor | None = None) -> bool:
        """Make this step a plain backward of ``reweighted_loss``, if it can be one."""
        ...

    def reweighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        """The batch loss of per-sample ``losses`` with this step's weights."""
        ...

    def loss_weights(self, sample_ids: torch.Tensor | None = None) -> torch.Tensor | None:
        """Per-sample loss weights that make this step a plain backward, or None."""
        ...

    def step(self, sample_ids: torch.Tensor | None = None) -> None: ...

    def memory_usage(self) -> dict[str, int]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class BenchOptimizer:
    """A ``torch.optim`` optimiser, optionally behind a preconditioner, with its records.

    ``step`` runs the preconditioner (its own phases, ``phases``) and then the update inside
    the ``update`` phase, so every optimiser reports the same phase vocabulary.
    """

    def __init__(
        self,
        name: str,
        optimizer: torch.optim.Optimizer,
        *,
        impl: str = "torch",
        hparams: dict[str, Any] | None = None,
        preconditioner: Preconditioner | None = None,
        step_mode: Callable[[torch.optim.Optimizer], str | None] | None = None,
    ) -> None:
        self.name = name
        self.impl = impl
        self.optimizer = optimizer
        self.preconditioner = preconditioner
        self.hparams = dict(hparams or {})
        #: What the last step of an optimiser without a preconditioner did, read off its
        #: state (SOAP: whether it refreshed its eigenbasis); ``None``: one kind of step.
        self.step_mode = step_mode
        #: The preconditioner's own phases (none for a plain optimiser).
        self.phases: tuple[str, ...] = () if preconditioner is None else preconditioner.phases

    @property
    def mode(self) -> str | None:
        """What the last step did (FNGD: inversion / weighted_sum; KFAC: inverse / no_inverse;
        an optimiser's own, ``step_mode``)."""
        if self.preconditioner is not None:
            return self.preconditioner.mode
        return None if self.step_mode is None else self.step_mode(self.optimizer)

    def train(self) -> None:
        """Training mode, for an optimiser that has one (Schedule-Free's ``train()``: the
        parameters at the point gradients are taken); a no-op for the others."""
        self._switch("train")

    def eval(self) -> None:
        """Evaluation mode, for an optimiser that has one (Schedule-Free's ``eval()``: the
        averaged parameters it evaluates); a no-op for the others."""
        self._switch("eval")

    def _switch(self, mode: str) -> None:
        fn = getattr(self.optimizer, mode, None)
        if callable(fn):
            fn()

    def prepare(self, sample_ids: torch.Tensor | None = None) -> None:
        """Announce the next batch before its backward pass (FNGD then sums inside backward)."""
        if self.preconditioner is not None:
            self.preconditioner.prepare(sample_ids=sample_ids)

    def loss_weights(self, sample_ids: torch.Tensor | None = None) -> torch.Tensor | None:
        """Per-sample loss weights for this step (after ``prepare``), or None.

        FNGD in network scope with this batch's coefficients known returns ``w = N c``:
        backpropagate ``(w * per_sample_losses).mean()`` (``.sum()`` for a summed loss)
        and the step costs an SGD step. None: backpropagate the ordinary loss.
        """
        if self.preconditioner is None:
            return None
        return self.preconditioner.loss_weights(sample_ids=sample_ids)

    def reweight(self, sample_ids: torch.Tensor | None = None) -> bool:
        """Whether this step (after ``prepare``) is a plain backward of ``reweighted_loss``.

        True for FNGD in network scope with this batch's coefficients known: backpropagate
        ``reweighted_loss(per_sample_losses)`` and the step costs an SGD step. False:
        backpropagate the ordinary loss. Call it before the forward pass.
        """
        return self.preconditioner is not None and self.preconditioner.reweight(sample_ids)

    def reweighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        """``(w * losses).mean()`` with this step's weights ``w``, in one op; only after
        ``reweight`` returned True."""
        if self.preconditioner is None:
            raise RuntimeError(f"{self.name} has no per-sample loss weights")
        return self.preconditioner.reweighted_loss(losses)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, sample_ids: torch.Tensor | None = None) -> None:
        if self.preconditioner is not None:
            self.preconditioner.step(sample_ids=sample_ids)
        with phase(UPDATE):
            self.optimizer.step()

    def memory_usage(self) -> dict[str, int]:
        """Bytes of optimiser state by component (momentum, Adam moments, factors, tables)."""
        usage: dict[str, int] = {}
        for state in self.optimizer.state.values():
            for key, value in state.items():
                # a list of tensors: one per dimension (SOAP's and PSGD-Kron's factors)
                parts = value if isinstance(value, (list, tuple)) else (value,)
                size = sum(
                    tensor_bytes(t) for t in parts if isinstance(t, torch.Tensor) and t.numel() > 1
                )
                if size:
                    usage[key] = usage.get(key, 0) + size
        if self.preconditioner is not None:
            usage.update(self.preconditioner.memory_usage())
        return usage

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"optimizer": self.optimizer.state_dict()}
        if self.preconditioner is not None:
            state["preconditioner"] = self.preconditioner.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.preconditioner is not None and "preconditioner" in state:
            self.preconditioner.load_state_dict(state["preconditioner"])

    def __repr__(self) -> str:
        return f"BenchOptimizer(name={self.name!r}, impl={self.impl!r}, hparams={self.hparams!r})"
