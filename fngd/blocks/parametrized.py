"""Gradients of a parametrised tensor, written to the parameters it is computed from.

With ``torch.nn.utils.parametrize`` (``parametrizations.weight_norm``, ``spectral_norm``,
``orthogonal`` or a user's own), ``module.weight`` is computed from ``original`` (or
``original0``, ``original1``, ...) at every access. A block computes the natural gradient
``G`` of the computed weight; the parameters that train receive ``J^T G``, ``J`` the
parametrisation's Jacobian at the weights of the step -- what autograd would give them if
``G`` had come out of backward, which is how the weighted-sum phase inside backward does
it.

``step()`` writes ``G`` after the backward pass, so the parametrisation is evaluated again:
in eval mode, so that a parametrisation with state stays where the forward left it
(``spectral_norm`` runs its power iteration only in training; in eval it uses the vectors
that iteration left, which are the ones the forward used).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["grads_through", "refusal"]


def grads_through(
    module: nn.Module, name: str, grad: torch.Tensor
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(parameter, J^T grad)`` for each trainable parameter ``module.<name>`` is made of."""
    chain = module.parametrizations[name]
    originals = [p for p in chain.parameters() if p.requires_grad]
    modes = [(m, m.training) for m in chain.modules()]
    try:
        chain.eval()
        with torch.enable_grad():
            computed = getattr(module, name)
            grads = torch.autograd.grad(
                computed, originals, grad.to(computed.dtype), allow_unused=True
            )
    finally:
        for m, training in modes:
            m.training = training
    for p, g in zip(originals, grads, strict=True):
        if g is not None:
            yield p, g


def refusal(name: str, module: nn.Module) -> str | None:
    """Why ``module`` cannot be a block although its type is one, as one error's text; None
    when it can.

    A weight that is neither a parameter nor a parametrisation is computed somewhere FNGD
    cannot see (the deprecated hook-based ``torch.nn.utils.weight_norm`` and
    ``spectral_norm``, which set ``module.weight`` in a forward pre-hook): FNGD could not
    write its gradient anywhere that trains.
    """
    for tensor in ("weight", "bias"):
        if (
            tensor not in module._parameters
            and isinstance(getattr(module, tensor, None), torch.Tensor)
            and not parametrize.is_parametrized(module, tensor)
        ):
            return (
                f"module {name!r} ({type(module).__name__}): its {tensor} is not a parameter "
                "but a tensor set by a hook (the deprecated torch.nn.utils.weight_norm or "
                "spectral_norm?); FNGD cannot write its gradient. Use "
                "torch.nn.utils.parametrizations.weight_norm / spectral_norm, or add the "
                "module to skip_layers"
            )
    return None
