"""Whether a ``torch.func`` transform (grad, vmap, jacrev, ...) is running.

Under a transform, FNGD's blocks run their module's plain op and KFAC's hooks record nothing:
the transform then sees ordinary differentiable ops (so per-sample gradients, Jacobians or
Fisher diagnostics match a plain model's), and no tensor of the transform leaks into a
preconditioner's next step.
"""

from __future__ import annotations

from torch._C import _are_functorch_transforms_active

__all__ = ["transforms_active"]

#: ``transforms_active() -> bool``; the C function itself, as it runs on every block forward.
transforms_active = _are_functorch_transforms_active
