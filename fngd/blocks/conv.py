"""nn.Conv1d and nn.Conv2d: stride, dilation, groups, any padding and padding mode.

The per-sample gradient of a convolution is ``sum_t D_t A_t^T`` over output positions t,
with ``A_t`` the input patch under the kernel (``F.unfold``) and ``D_t`` the output
gradient there; a Conv1d is a Conv2d of height 1. Padding that is not a plain symmetric
zero padding (``padding_mode="reflect"``, ``"replicate"``, ``"circular"``, and the
asymmetric zeros of ``padding="same"`` with an even kernel) is applied to the input before
the block, as ``nn.Conv2d`` itself does it, so the block sees a convolution with no padding
and autograd takes the padding's own backward.

A grouped convolution (``groups=G``) is G independent convolutions: group g's weight sees
only its input channels and feeds only its output channels. Its per-sample gradient is the
G groups' gradients side by side, so the Gram matrix is the sum of the G groups' Grams:
the operands carry a group dimension, (N, G, T, p/G) and (N, G, T, q/G) (``fngd.gram``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fngd.blocks import custom_ops
from fngd.blocks.base import Block, append_ones

# The overload itself: calling the packet costs a lookup each time.
_CONVOLUTION_BACKWARD = torch.ops.aten.convolution_backward.default
_CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d}


def padding_of(module: nn.Conv1d | nn.Conv2d) -> tuple[tuple[int, ...] | None, tuple[int, ...]]:
    """``(pre_pad, padding)``: what ``F.pad`` adds to the input before the block (None:
    nothing), in ``F.pad``'s order (last dimension first), and the convolution's own
    symmetric zero padding; together they are the module's padding."""
    dims = len(module.kernel_size)
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return None, (0,) * dims
        # "same": a total of dilation * (kernel - 1) per dimension, the extra one on the right
        totals = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        if all(t % 2 == 0 for t in totals) and module.padding_mode == "zeros":
            return None, tuple(t // 2 for t in totals)
        pads: list[int] = []
        for t in reversed(totals):
            pads += [t // 2, t - t // 2]
        return tuple(pads), (0,) * dims
    if module.padding_mode == "zeros":
        return None, tuple(module.padding)
    return tuple(module._reversed_padding_repeated_twice), (0,) * dims


class ConvBlock(Block):
    """The shared convolution block; ``dims`` is 1 (Conv1d) or 2 (Conv2d)."""

    dims = 2

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        m = self.module
        pre_pad, self.padding = padding_of(m)
        if pre_pad is not None:
            self.pre_pad = pre_pad
            self.pad_mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        self.groups = m.groups
        if self.groups != 1 or self.dims != 2:  # the compiled blocks are a plain Conv2d's
            self.kernels = None
            self.traceable = False
        self._conv = _CONVOLUTIONS[self.dims]

    def op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        m = self.module
        return self._conv(x, weight, bias, m.stride, self.padding, m.dilation, self.groups)

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
            grad_out,
            x,
            weight,
            bias_sizes,
            m.stride,
            self.padding,
            m.dilation,
            False,
            (0,) * self.dims,
            self.groups,
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
        d = grad_out * scale.view((-1,) + (1,) * (grad_out.dim() - 1))
        weight = self.module.weight if "weight" in self.module._parameters else None
        if weight is None:  # a parametrised weight: only its shape is needed
            weight = x.new_empty(self.weight_shape)
        _, grad_w, grad_b = self._conv_backward(x, weight, d, [False, True, has_bias])
        return grad_w, (grad_b if has_bias else None)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        m = self.module
        return (m.out_channels, m.in_channels // m.groups, *m.kernel_size)

    def native_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor
    ) -> torch.Tensor:
        m = self.module
        return self.kernels.weighted_conv2d(
            x, weight, bias, scale, m.stride, self.padding, m.dilation
        )

    def traced_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor
    ) -> torch.Tensor:
        m = self.module
        return custom_ops.weighted_conv2d(
            x, weight, bias, scale, list(m.stride), list(self.padding), list(m.dilation)
        )

    def gram_operands(
        self, x: torch.Tensor, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.module
        n, groups = x.shape[0], self.groups
        if self.dims == 1:  # as a Conv2d of height 1
            x, grad_out = x.unsqueeze(2), grad_out.unsqueeze(2)
            kernel, dilation = (1, *m.kernel_size), (1, *m.dilation)
            padding, stride = (0, *self.padding), (1, *m.stride)
        else:
            kernel, dilation, padding, stride = m.kernel_size, m.dilation, self.padding, m.stride
        patches = F.unfold(x, kernel, dilation, padding, stride)  # (N, p, T), channel-major
        a = patches.transpose(1, 2)
        d = grad_out.reshape(n, grad_out.shape[1], -1).transpose(1, 2)  # (N, T, q)
        if groups != 1:  # (N, G, T, p/G) and (N, G, T, q/G): group g's channels
            t = a.shape[1]
            a = a.reshape(n, t, groups, -1).transpose(1, 2)
            d = d.reshape(n, t, groups, -1).transpose(1, 2)
        if self.has_bias:
            a = append_ones(a)
        return a, d


class Conv2dBlock(ConvBlock):
    module_type = nn.Conv2d
    dims = 2
    input_dims = 4
    input_layout = "(N, C, H, W)"


class Conv1dBlock(ConvBlock):
    module_type = nn.Conv1d
    dims = 1
    input_dims = 3
    input_layout = "(N, C, L)"
