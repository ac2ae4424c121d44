"""Per-module helpers: which modules KFAC preconditions and how their factors are formed.

Everything here follows kfac-pytorch (``kfac/layers/modules.py``, ``kfac/layers/register.py``)
so that the built-in KFAC and kfac-pytorch precondition with the same matrices:

- one block per ``nn.Linear`` / ``nn.Conv2d``, weight and bias together: the gradient matrix
  is ``[W.grad.view(out, -1), b.grad[:, None]]`` and the bias is a column of ones appended
  to the layer input;
- ``A = E[a aᵀ]`` over every input row, ``G = E[g gᵀ]`` over every output-gradient row,
  where ``g`` is the gradient w.r.t. the layer output exactly as autograd delivers it: for a
  mean loss it already carries the ``1/N`` of the mean and kfac-pytorch does not undo it;
- a Linear applied to ``(N, T, d)`` (or any ``(..., d)``) input counts each of the ``N*T``
  rows as a sample, with no further scaling;
- a Conv2d's rows are its unfolded patches (one per output position) and kfac-pytorch divides
  both the patches and the output gradients by the spatial size ``S = out_h * out_w`` before
  averaging over ``N*S`` rows, so ``A = Σ a aᵀ / (N S³)`` and ``G = Σ g gᵀ / (N S³)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from fngd.blocks import decide, inside_fused_attention


def second_moment(rows: torch.Tensor, *, append_ones: bool, divisor: float = 1.0) -> torch.Tensor:
    """``[rows, 1]ᵀ [rows, 1] / (M * divisor)`` for ``M`` rows, symmetrised.

    The column of ones is handled blockwise (its products are the column sums and ``M``) so
    the activations are never copied just to append it. Dividing the small result by
    ``divisor`` equals kfac-pytorch's dividing every row by ``sqrt(divisor)`` first.
    """
    m, d = rows.shape
    gram = rows.T @ rows
    if append_ones:
        full = rows.new_empty(d + 1, d + 1)
        full[:d, :d] = gram
        sums = rows.sum(0)
        full[:d, d] = sums
        full[d, :d] = sums
        full[d, d] = m
        gram = full
    gram = gram / (m * divisor)
    # As kfac-pytorch: a GEMM of xᵀx is not bitwise symmetric, eigh reads one triangle.
    return (gram + gram.T) / 2


class ModuleHelper:
    """A preconditioned module: its factor inputs, and its gradient as one matrix."""

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.module!r})"

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight  # type: ignore[return-value]

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.module, "bias", None)

    @property
    def has_bias(self) -> bool:
        return self.bias is not None

    @property
    def a_dim(self) -> int:
        """Side of A: the weight's fan-in, plus one for the bias."""
        return self.weight[0].numel() + int(self.has_bias)

    @property
    def g_dim(self) -> int:
        """Side of G: the number of outputs (features or channels)."""
        return self.weight.shape[0]

    def a_factor(self, x: torch.Tensor) -> torch.Tensor:
        """This batch's A from the module input ``x`` (already in the factor dtype)."""
        raise NotImplementedError

    def g_factor(self, g: torch.Tensor) -> torch.Tensor:
        """This batch's G from the gradient ``g`` w.r.t. the module output."""
        raise NotImplementedError

    def grad_matrix(self) -> torch.Tensor | None:
        """``[W.grad.view(out, -1), b.grad[:, None]]``, or None before any backward."""
        w = self.weight.grad
        if w is None:
            return None
        grad = w.reshape(w.shape[0], -1)
        bias = self.bias
        if bias is not None:
            if bias.grad is None:
                return None
            grad = torch.cat([grad, bias.grad.reshape(-1, 1)], dim=1)
        return grad

    def set_grad(self, matrix: torch.Tensor) -> None:
        """Write a gradient matrix back into ``.grad`` in place (keeps optimiser aliases)."""
        w = self.weight.grad
        bias = self.bias
        assert w is not None
        if bias is not None:
            assert bias.grad is not None
            w.copy_(matrix[:, :-1].reshape(w.shape))
            bias.grad.copy_(matrix[:, -1])
        else:
            w.copy_(matrix.reshape(w.shape))


class LinearHelper(ModuleHelper):
    """``nn.Linear`` on ``(..., in_features)``: every leading index is one row."""

    def a_factor(self, x: torch.Tensor) -> torch.Tensor:
        return second_moment(x.reshape(-1, x.shape[-1]), append_ones=self.has_bias)

    def g_factor(self, g: torch.Tensor) -> torch.Tensor:
        return second_moment(g.reshape(-1, g.shape[-1]), append_ones=False)


class Conv2dHelper(ModuleHelper):
    """``nn.Conv2d`` (groups=1): rows are unfolded patches, scaled by the spatial size."""

    module: nn.Conv2d

    def _patches(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(N*S, C*kh*kw)`` patches in the weight's ``(C, kh, kw)`` order, and ``S``."""
        m = self.module
        if x.dim() == 3:  # unbatched (C, H, W)
            x = x.unsqueeze(0)
        padding: tuple[int, ...] | int
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            # Same padding as the module's forward ('same', reflect, ...).
            mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            x = F.pad(x, m._reversed_padding_repeated_twice, mode=mode)
            padding = 0
        else:
            padding = m.padding  # type: ignore[assignment]
        cols = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=padding, stride=m.stride)
        spatial = cols.shape[-1]
        return cols.transpose(1, 2).reshape(-1, cols.shape[1]), spatial

    def a_factor(self, x: torch.Tensor) -> torch.Tensor:
        rows, spatial = self._patches(x)
        return second_moment(rows, append_ones=self.has_bias, divisor=float(spatial) ** 2)

    def g_factor(self, g: torch.Tensor) -> torch.Tensor:
        if g.dim() == 3:
            g = g.unsqueeze(0)
        spatial = g.shape[2] * g.shape[3]
        rows = g.movedim(1, -1).reshape(-1, g.shape[1])
        return second_moment(rows, append_ones=False, divisor=float(spatial) ** 2)


def helper_for(name: str, module: nn.Module) -> ModuleHelper | None:
    """The helper for a supported module, else None.

    Grouped convolutions are left out: their weight is not one ``out x (C*kh*kw)`` Kronecker
    block (kfac-pytorch registers them and then fails on the shapes).
    """
    if isinstance(module, nn.Linear):
        return LinearHelper(name, module)
    if isinstance(module, nn.Conv2d) and module.groups == 1:
        return Conv2dHelper(name, module)
    return None


def _patterns(skip_layers: Iterable[str] | str | None) -> list[re.Pattern[str]]:
    if skip_layers is None:
        return []
    if isinstance(skip_layers, str):
        skip_layers = [skip_layers]
    return [re.compile(p) for p in skip_layers]


def skipped(patterns: list[re.Pattern[str]], name: str, module: nn.Module) -> bool:
    """kfac-pytorch's rule: a pattern searched in the module's name or its class name."""
    return any(p.search(name) or p.search(type(module).__name__) for p in patterns)


def plain_reasons(
    model: nn.Module, skip_layers: Iterable[str] | str | None, layers: Iterable[str]
) -> dict[str, str]:
    """Why each module holding trainable parameters that is not one of ``layers`` keeps the
    plain gradient under the built-in KFAC (``fngd.coverage``)."""
    patterns = _patterns(skip_layers)
    chosen = set(layers)
    reasons = {}
    for d in decide(model):
        if d.name in chosen:
            continue
        if skipped(patterns, d.name, d.module):
            reasons[d.name] = "matched by skip_layers"
        elif d.reason is not None:
            reasons[d.name] = d.reason
        elif parametrize.is_parametrized(d.module):
            reasons[d.name] = "a parametrised weight: not supported by the built-in KFAC"
        else:
            reasons[d.name] = (
                f"{type(d.module).__name__} with these settings (groups, 1-D, padding): not "
                "supported by the built-in KFAC"
            )
    return reasons


def find_layers(
    model: nn.Module, skip_layers: Iterable[str] | str | None = ()
) -> list[ModuleHelper]:
    """Supported leaf modules of ``model`` whose parameters all train, in module order.

    As kfac-pytorch: a pattern of ``skip_layers`` skips a module when ``re.search`` finds it
    in the module's qualified name or its class name. Left out as well: the modules inside
    ``nn.MultiheadAttention`` (whose fused forward never runs them, so no hook would fire) and
    parametrised ones (their weight is computed, not the parameter that trains).
    """
    patterns = _patterns(skip_layers)
    fused = inside_fused_attention(model)
    found = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue
        if skipped(patterns, name, module) or name in fused or parametrize.is_parametrized(module):
            continue
        if not all(p.requires_grad for p in module.parameters()):
            continue
        helper = helper_for(name, module)
        if helper is not None:
            found.append(helper)
    return found
