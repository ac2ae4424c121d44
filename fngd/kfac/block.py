"""One KFAC block: running Kronecker factors, their eigendecompositions, the preconditioner.

Follows kfac-pytorch's eigen method (``kfac/layers/base.py``, ``kfac/layers/eigen.py``):

- each factor update averages this step's batch factors (over the module's calls since the
  last update), then ``F <- decay * F + (1 - decay) * F_batch``; the first update starts
  from the identity, so after it ``F = decay * I + (1 - decay) * F_batch``;
- the eigendecompositions are ``eigh`` in (at least) float32, stored in ``inv_dtype``,
  eigenvalues clamped at 0;
- the preconditioned gradient is ``Q_G [(Q_Gᵀ grad Q_A) / (d_G d_Aᵀ + damping)] Q_Aᵀ``,
  with ``1 / (d_G d_Aᵀ + damping)`` optionally formed once per inverse update
  (kfac-pytorch's ``compute_eigenvalue_outer_product``, on by default there).
"""

from __future__ import annotations

from typing import Any

import torch

from fngd.kfac.layers import ModuleHelper
from fngd.memory import tensor_bytes

EIGEN_KEYS = ("qa", "da", "qg", "dg", "dgda")


class KFACBlock:
    """The KFAC state of one module (weight and bias as one block)."""

    def __init__(
        self,
        helper: ModuleHelper,
        *,
        factor_dtype: torch.dtype | None = None,
        inv_dtype: torch.dtype = torch.float32,
        prediv_eigenvalues: bool = True,
        g_scale: float = 1.0,
    ) -> None:
        self.helper = helper
        #: Factor of every batch G (under DDP ``1 / world**2``: the ranks' output gradients
        #: carry their local mean's ``1 / n``, the concatenated batch's ``1 / (world n)``).
        self.g_scale = g_scale
        self.factor_dtype = factor_dtype
        self.inv_dtype = inv_dtype
        self.prediv_eigenvalues = prediv_eigenvalues
        # Running averages.
        self.a_factor: torch.Tensor | None = None
        self.g_factor: torch.Tensor | None = None
        # Batch factors summed over the module's calls since the last update.
        self._a_batch: torch.Tensor | None = None
        self._g_batch: torch.Tensor | None = None
        self._a_count = 0
        self._g_count = 0
        # Eigendecompositions; ``dgda`` replaces ``dg``/``da`` when pre-divided.
        self.qa: torch.Tensor | None = None
        self.da: torch.Tensor | None = None
        self.qg: torch.Tensor | None = None
        self.dg: torch.Tensor | None = None
        self.dgda: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"KFACBlock({self.helper.name!r}, A={self.helper.a_dim}, G={self.helper.g_dim})"

    @property
    def name(self) -> str:
        return self.helper.name

    def _dtype(self, t: torch.Tensor) -> torch.dtype:
        # kfac-pytorch keeps the activations' dtype; never accumulate below float32.
        if self.factor_dtype is not None:
            return self.factor_dtype
        return torch.promote_types(t.dtype, torch.float32)

    # -- factors -----------------------------------------------------------------------
    def add_input(self, x: torch.Tensor) -> None:
        """Add one call's A (from the module input) to this step's batch factor."""
        a = self.helper.a_factor(x.to(self._dtype(x)))
        self._a_batch = a if self._a_batch is None else self._a_batch + a
        self._a_count += 1

    def add_grad_output(self, g: torch.Tensor) -> None:
        """Add one call's G (from the gradient w.r.t. the module output)."""
        gg = self.helper.g_factor(g.to(self._dtype(g)))
        if self.g_scale != 1.0:
            gg = gg * self.g_scale
        self._g_batch = gg if self._g_batch is None else self._g_batch + gg
        self._g_count += 1

    @staticmethod
    def _running(old: torch.Tensor | None, new: torch.Tensor, decay: float) -> torch.Tensor:
        if old is None:
            old = torch.eye(new.shape[0], dtype=new.dtype, device=new.device)
        return decay * old + (1 - decay) * new

    def update_a_factor(self, decay: float) -> None:
        """Fold the batch A into the running average (no-op when nothing was added)."""
        if self._a_batch is None:
            return
        batch = self._a_batch / self._a_count if self._a_count > 1 else self._a_batch
        self.a_factor = self._running(self.a_factor, batch, decay)
        self._a_batch, self._a_count = None, 0

    def update_g_factor(self, decay: float) -> None:
        """Fold the batch G into the running average (no-op when nothing was added)."""
        if self._g_batch is None:
            return
        batch = self._g_batch / self._g_count if self._g_count > 1 else self._g_batch
        self.g_factor = self._running(self.g_factor, batch, decay)
        self._g_batch, self._g_count = None, 0

    def reset_batch(self) -> None:
        self._a_batch = self._g_batch = None
        self._a_count = self._g_count = 0

    # -- eigendecompositions -----------------------------------------------------------
    @property
    def has_factors(self) -> bool:
        return self.a_factor is not None and self.g_factor is not None

    @property
    def has_eigen(self) -> bool:
        if self.qa is None or self.qg is None:
            return False
        return self.dgda is not None or (self.da is not None and self.dg is not None)

    def _eigh(self, factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # kfac-pytorch decomposes in float32 whatever inv_dtype is; float64 stays float64
        # here so that a float64 run is float64 throughout.
        work = torch.promote_types(self.inv_dtype, torch.float32)
        d, q = torch.linalg.eigh(factor.to(work))
        return d.to(self.inv_dtype).clamp(min=0.0), q.to(self.inv_dtype)

    def compute_eigen(self, damping: float) -> None:
        """Eigendecompose A and G (both must exist)."""
        assert self.a_factor is not None and self.g_factor is not None
        da, self.qa = self._eigh(self.a_factor)
        dg, self.qg = self._eigh(self.g_factor)
        if self.prediv_eigenvalues:
            self.dgda = 1 / (torch.outer(dg, da) + damping)
            self.da = self.dg = None
        else:
            self.da, self.dg = da, dg
            self.dgda = None

    # -- preconditioning ---------------------------------------------------------------
    def precondition(self, grad: torch.Tensor, damping: float) -> torch.Tensor:
        """``Q_G [(Q_Gᵀ grad Q_A) / (d_G d_Aᵀ + damping)] Q_Aᵀ`` in ``grad``'s dtype."""
        assert self.qa is not None and self.qg is not None
        v = self.qg.T @ grad.to(self.qa.dtype) @ self.qa
        if self.dgda is not None:
            v = v * self.dgda
        else:
            assert self.dg is not None and self.da is not None
            v = v / (torch.outer(self.dg, self.da) + damping)
        return (self.qg @ v @ self.qa.T).to(grad.dtype)

    # -- bookkeeping -------------------------------------------------------------------
    def memory_usage(self) -> dict[str, int]:
        return {
            "factors": tensor_bytes([self.a_factor, self.g_factor]),
            "eigen": tensor_bytes([self.qa, self.da, self.qg, self.dg, self.dgda]),
        }

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        """Factors ("A", "G", as kfac-pytorch) and the eigendecompositions in use."""
        state: dict[str, torch.Tensor | None] = {"A": self.a_factor, "G": self.g_factor}
        for key in EIGEN_KEYS:
            state[key] = getattr(self, key)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Load onto the module's device; True when eigendecompositions were included."""
        if "A" not in state or "G" not in state:
            raise KeyError("KFAC block state must contain 'A' and 'G'")
        device = self.helper.weight.device

        def to(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        self.a_factor, self.g_factor = to(state["A"]), to(state["G"])
        for key in EIGEN_KEYS:
            setattr(self, key, to(state.get(key)))
        return self.has_eigen
