"""nn.Conv2d (stride, padding, dilation; groups=1, zero padding): patches as a sequence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fngd.blocks.base import Block, append_ones

# The overload itself: calling the packet costs a lookup each time.
_CONVOLUTION_BACKWARD = torch.ops.aten.convolution_backward.default


def supported(module: nn.Conv2d) -> bool:
    """Unfold reproduces the convolution only for these settings; others keep plain grads."""
    return (
        module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


class Conv2dBlock(Block):
    module_type = nn.Conv2d
    input_dims = 4
    input_layout = "(N, C, H, W)"

    def op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        m = self.module
        return F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation, 1)

    def _conv_backward(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        grad_out: torch.Tensor,
        mask: list[bool],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.module
        bias_sizes = [weight.shape[0]] if mask[2] else None
        return _CONVOLUTION_BACKWARD(
            grad_out, x, weight, bias_sizes, m.stride, m.padding, m.dilation, False, (0, 0), 1,
            mask,
        )

    def input_grad(
        self, x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor
    ) -> torch.Tensor:
        return self._conv_backward(x, weight, grad_out, [True, False, False])[0]

    def weighted_grads(
        self, x: torch.Tensor, grad_out: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        has_bias = self.has_bias
        d = grad_out * scale.view(-1, 1, 1, 1)
        _, grad_w, grad_b = self._conv_backward(x, self.module.weight, d, [False, True, has_bias])
        return grad_w, (grad_b if has_bias else None)

    def native_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor
    ) -> torch.Tensor:
        m = self.module
        return self.kernels.weighted_conv2d(
            x, weight, bias, scale, m.stride, m.padding, m.dilation
        )

    def gram_operands(
        self, x: torch.Tensor, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.module
        n = x.shape[0]
        patches = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)  # (N, p, T)
        a = patches.transpose(1, 2)
        if self.has_bias:
            a = append_ones(a)
        d = grad_out.reshape(n, grad_out.shape[1], -1).transpose(1, 2)  # (N, T, q)
        return a, d
