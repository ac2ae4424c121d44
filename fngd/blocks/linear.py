"""nn.Linear on (N, d) or (N, ..., d) inputs; extra dimensions are summed per sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fngd.blocks import custom_ops
from fngd.blocks.base import Block, append_ones, scale_rows


class LinearBlock(Block):
    module_type = nn.Linear

    def op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, weight, bias)

    def input_grad(
        self, x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor
    ) -> torch.Tensor:
        if grad_out.dim() == 2:
            return grad_out.mm(weight)
        return grad_out.matmul(weight)

    def weighted_grads(
        self, x: torch.Tensor, grad_out: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if grad_out.dim() == 2:  # the common case, with as few ops as autograd's own
            d = grad_out * scale
            return d.t().mm(x), (d.sum(0) if self.has_bias else None)
        d = scale_rows(grad_out, scale).reshape(-1, grad_out.shape[-1])
        a = x.reshape(-1, x.shape[-1])
        grad_w = d.t().mm(a)
        grad_b = d.sum(0) if self.has_bias else None
        return grad_w, grad_b

    def native_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor
    ) -> torch.Tensor:
        return self.kernels.weighted_linear(x, weight, bias, scale)

    def traced_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor
    ) -> torch.Tensor:
        return custom_ops.weighted_linear(x, weight, bias, scale)

    def gram_operands(
        self, x: torch.Tensor, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        a = x.reshape(n, -1, x.shape[-1])
        if self.has_bias:
            a = append_ones(a)
        return a, grad_out.reshape(n, -1, grad_out.shape[-1])
