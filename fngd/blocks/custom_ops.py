"""The weighted-sum blocks as ``torch.library`` custom ops, for ``torch.compile``.

Dynamo cannot trace into the compiled pybind blocks (``fngd.blocks.native``) nor into
``BlockFunction``: each is a graph break. ``fngd::weighted_linear`` and
``fngd::weighted_conv2d`` are the same computation as ops that torch knows: forward is the
module's own op, backward (``register_autograd``) the input gradient and the weighted weight
and bias gradients ``sum_i scale_i g_i``, with ``scale`` an (N, 1) column, the math of
``LinearBlock.weighted_grads`` and ``Conv2dBlock.weighted_grads``. Their fake (meta) forms
let dynamo and AOT autograd trace a weighted-sum step whole (``fullgraph=True``).

Eager steps keep the pybind blocks, whose dispatch costs less (docs/COMPILE.md has the
figures); a block's forward takes these ops only while ``torch.compile`` traces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# The overload itself: calling the packet costs a lookup each time.
_CONVOLUTION_BACKWARD = torch.ops.aten.convolution_backward.default


def _rows(scale: Tensor, g: Tensor) -> Tensor:
    """``scale`` (N, 1) as (N, 1, ..., 1) in ``g``'s dtype, to scale each sample's slice."""
    return scale.to(g.dtype).view((-1,) + (1,) * (g.dim() - 1))


@torch.library.custom_op("fngd::weighted_linear", mutates_args=())
def weighted_linear(x: Tensor, weight: Tensor, bias: Tensor | None, scale: Tensor) -> Tensor:
    """``F.linear(x, weight, bias)``; backward weights sample i's gradient by ``scale[i]``."""
    return F.linear(x, weight, bias)


@weighted_linear.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None, scale: Tensor) -> Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _linear_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    x, weight, _, scale = inputs
    ctx.save_for_backward(x, weight, scale)


def _linear_backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
    x, weight, scale = ctx.saved_tensors
    needs_x, needs_w, needs_b, _ = ctx.needs_input_grad
    grad_x = g.matmul(weight) if needs_x else None
    if not (needs_w or needs_b):
        return grad_x, None, None, None
    d = (g * _rows(scale, g)).reshape(-1, g.shape[-1])
    grad_w = d.t().mm(x.reshape(-1, x.shape[-1])) if needs_w else None
    grad_b = d.sum(0) if needs_b else None
    return grad_x, grad_w, grad_b, None


weighted_linear.register_autograd(_linear_backward, setup_context=_linear_setup)


def _conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    scale: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    """``F.conv2d`` (groups 1); backward weights sample i's gradient by ``scale[i]``."""
    return F.conv2d(x, weight, bias, stride, padding, dilation, 1)


weighted_conv2d = torch.library.custom_op("fngd::weighted_conv2d", _conv2d, mutates_args=())
# The meta convolution gives the output's shape (symbolic ones included): the op is its fake.
weighted_conv2d.register_fake(_conv2d)


def _conv_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    x, weight, _, scale, stride, padding, dilation = inputs
    ctx.save_for_backward(x, weight, scale)
    ctx.conv = (list(stride), list(padding), list(dilation))


def _conv_backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
    x, weight, scale = ctx.saved_tensors
    needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
    stride, padding, dilation = ctx.conv
    grad_x = grad_w = grad_b = None
    if needs_x:
        grad_x = _CONVOLUTION_BACKWARD(
            g, x, weight, None, stride, padding, dilation, False, [0, 0], 1,
            [True, False, False],
        )[0]  # fmt: skip
    if needs_w or needs_b:
        _, grad_w, grad_b = _CONVOLUTION_BACKWARD(
            g * _rows(scale, g), x, weight, [weight.shape[0]] if needs_b else None,
            stride, padding, dilation, False, [0, 0], 1, [False, needs_w, needs_b],
        )  # fmt: skip
    return grad_x, grad_w, grad_b, None, None, None, None


weighted_conv2d.register_autograd(_conv_backward, setup_context=_conv_setup)
