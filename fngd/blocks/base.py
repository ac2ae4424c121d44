"""A preconditioned module ("block"): weight and bias as one block, gradients owned by FNGD.

The module's forward runs through ``BlockFunction``, whose backward computes the input
gradient as autograd would but never autograd's weight-gradient GEMM. Instead it hands the
output gradient to the preconditioner, which either

- already knows this batch's coefficients ``c`` (weighted-sum phase): the weight gradient
  is computed right there as the ordinary GEMM with the rows of grad_output scaled by
  ``N c`` -- the same cost as SGD's, and no output gradient is kept; or
- does not (inversion phase): the pair (input, grad_output) is kept until ``step()``
  builds the Gram matrix, solves for ``c`` and then runs that same weighted GEMM.

Either way the block records what it did in the owner's ``StepState``, never in itself.
With the compiled blocks (``fngd.blocks.native``, layer scope), a forward that already
knows its batch's scale runs the C++ form of the first case instead, recording itself as
summed. Under a ``torch.func`` transform the module's plain op runs instead
(``BlockFunction`` has no vmap rule, and a transform's tensors must not reach the owner's
step).
"""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from fngd.blocks import parametrized
from fngd.phases import FNGD_WEIGHTED_SUM, phase
from fngd.step_state import Pair, StepState
from fngd.transforms import transforms_active


class BlockOwner(Protocol):
    """What a block asks of its preconditioner in the forward and backward passes."""

    @property
    def state(self) -> StepState | None:
        """This step's state, if one exists yet (a reweighted one: run the plain op)."""
        ...

    def step_state(self) -> StepState:
        """This step's state: the known ``N c`` per block, and where the block reports."""
        ...


class BlockFunction(torch.autograd.Function):
    """``out = op(x, W, b)``; backward: input gradient, then the block decides the rest."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Any, block: Block) -> Any:
        ctx.block = block
        # ``_is_any_autocast_enabled`` first: one call, where asking for a device costs two.
        if _any_autocast() and torch.is_autocast_enabled(device := x.device.type):
            # Cast as autocast would have, then save the cast tensors: backward runs
            # outside autocast and must see one dtype throughout.
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
            ctx.save_for_backward(x, weight)
            with torch.autocast(device, enabled=False):
                return block.op(x, weight, bias)
        ctx.save_for_backward(x, weight)
        return block.op(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> Any:
        x, weight = ctx.saved_tensors
        return (*ctx.block.backward(x, weight, grad_out, ctx.needs_input_grad[0]), None)


# ``BlockFunction.apply`` without ``Function.apply``'s Python preamble, which costs a third
# of a small layer's forward. Of that preamble, only the unwrapping of a tensor left over
# from a finished ``torch.func`` transform applies here (no transform is active and no
# ``setup_context`` is defined); ``BlockForward`` does it for the input, the one argument
# that can be such a tensor.
_apply = super(torch.autograd.Function, BlockFunction).apply
unwrap_if_dead = torch._C._functorch.unwrap_if_dead
_any_autocast = torch._C._is_any_autocast_enabled
#: Which backward pass is running: the uses of a weight in one forward share it, a
#: gradient-accumulation step's second backward does not.
_graph_task = torch._C._current_graph_task_id


class Block:
    """Base class: subclasses define the op, its input gradient and the Gram operands."""

    module_type: type[nn.Module] = nn.Module
    #: The fewest dimensions of a batched input, and their names (an unbatched input is
    #: refused at the forward: the batch is dimension 0).
    input_dims: int = 2
    input_layout: str = "(N, ..., features)"
    #: ``F.pad``'s padding of the input before the block's op (a convolution's padding
    #: that is not symmetric zeros), and its mode; None: the op takes the input as it is.
    pre_pad: tuple[int, ...] | None = None
    pad_mode = "constant"
    #: Whether ``traced_op`` (a ``torch.library`` custom op) computes this block's weighted
    #: sum under ``torch.compile``; else the block function runs there (a graph break).
    traceable = True

    def __init__(
        self,
        name: str,
        module: nn.Module,
        owner: BlockOwner,
        index: int,
        kernels: ModuleType | None = None,
    ) -> None:
        self.name = name
        self.module = module
        self.owner = owner
        self.index = index
        #: The compiled weighted-sum blocks (``fngd.blocks.native``), or None: the Python
        #: block function for every step.
        self.kernels = kernels
        self.forward = BlockForward(self)
        module.forward = self.forward  # type: ignore[method-assign]

    # -- what subclasses provide ------------------------------------------------------
    def op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
        raise NotImplementedError

    def input_grad(self, x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor) -> Any:
        raise NotImplementedError

    def weighted_grads(
        self, x: torch.Tensor, grad_out: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``sum_i scale_i * grad_i`` for weight and bias, as one GEMM (SGD's cost).

        ``scale`` is an (N, 1) column: one factor per sample.
        """
        raise NotImplementedError

    def native_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: Any, scale: torch.Tensor
    ) -> torch.Tensor:
        """``op`` through the compiled block whose backward is ``input_grad`` and
        ``weighted_grads(x, grad_out, scale)`` (``self.kernels`` is set)."""
        raise NotImplementedError

    def traced_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: Any, scale: torch.Tensor
    ) -> torch.Tensor:
        """``native_op`` as a ``torch.library`` custom op (``fngd.blocks.custom_ops``), the
        form ``torch.compile`` traces without a graph break."""
        raise NotImplementedError

    def gram_operands(
        self, x: torch.Tensor, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, D)`` of shapes (N, T, p) and (N, T, q) with ``g_i = sum_t D_it A_it^T``.

        ``A`` carries a trailing column of ones when the module has a bias; ``D`` is the
        gradient as the backward hook sees it (the owner rescales it to per-sample losses).
        """
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------
    def operands_of(self, uses: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gram operands of every use of the module in one forward: a weight used twice
        (a Linear called on two inputs) has the sum of both uses' gradients as its
        per-sample gradient, so its positions are both uses' positions (``T`` is
        concatenated, and the Gram then holds the cross terms)."""
        if len(uses) == 1:
            return self.gram_operands(*uses[0])
        parts = [self.gram_operands(x, grad_out) for x, grad_out in uses]
        return torch.cat([a for a, _ in parts], -2), torch.cat([d for _, d in parts], -2)

    def weighted_grads_of(
        self, uses: list[Pair], scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``weighted_grads`` summed over the uses of the module in one forward."""
        total = list(self.weighted_grads(*uses[0], scale))
        for x, grad_out in uses[1:]:
            for k, g in enumerate(self.weighted_grads(x, grad_out, scale)):
                if g is not None:
                    total[k] = total[k] + g
        return total[0], total[1]

    @property
    def has_bias(self) -> bool:
        """A trainable bias, the block's last column (a frozen one is left out)."""
        params = self.module._parameters  # direct: Module.__getattr__ is slow
        bias = params["bias"] if "bias" in params else getattr(self.module, "bias", None)
        return bias is not None and bias.requires_grad

    @property
    def params(self) -> list[torch.Tensor]:
        """The block's tensors as its op sees them: weight and bias (computed, for a
        parametrised one; ``accumulate`` writes their gradients to what they are made of)."""
        ps = [self.module.weight]
        if self.has_bias:
            ps.append(self.module.bias)
        return ps

    @property
    def leaves(self) -> list[torch.Tensor]:
        """The trainable parameters whose ``.grad`` the block writes (a parametrised
        tensor's originals in its place)."""
        return [p for p in self.module.parameters() if p.requires_grad]

    @property
    def parametrized(self) -> bool:
        """Whether weight or bias is computed by a ``torch.nn.utils.parametrize``
        parametrisation (``weight_norm``, ``spectral_norm``, ...)."""
        return "weight" not in self.module._parameters or (
            self.has_bias and "bias" not in self.module._parameters
        )

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the module computes in now (a cast after FNGD was built included)."""
        weight = self.module._parameters.get("weight")
        if weight is None:
            weight = next(self.module.parametrizations.weight.parameters())
        return weight.dtype

    def accumulate(self, grads: tuple[torch.Tensor | None, ...]) -> None:
        """Add the gradients of weight and bias (``params``' order) to ``.grad``, as
        autograd accumulates; a parametrised tensor's go through the parametrisation's
        backward to the parameters it is made of (``parametrized.write_through``)."""
        module = self.module
        for name, g in zip(("weight", "bias"), grads, strict=False):
            if g is None:
                continue
            p = module._parameters.get(name)
            if p is not None:
                accumulate(p, g)
            else:
                for original, g_original in parametrized.grads_through(module, name, g):
                    accumulate(original, g_original)

    def backward(
        self, x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor, needs_input: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Input, weight and bias gradients: the weighted sum when this batch's scale is
        known, else no weight gradient yet (the pair waits in the step's stash)."""
        grad_x = self.input_grad(x, weight, grad_out) if needs_input else None
        state = self.owner.step_state()
        scales = state.scales
        scale = None if scales is None else scales[self.index]
        if scale is None or scale.shape[0] != grad_out.shape[0]:  # unknown, or another batch
            state.keep(self, (x, grad_out), _graph_task())
            return grad_x, None, None
        state.summed.append(self)
        if scale.dtype != grad_out.dtype:
            scale = scale.to(grad_out.dtype)
        with phase(FNGD_WEIGHTED_SUM):
            return (grad_x, *self.weighted_grads(x, grad_out, scale))

    def remove(self) -> None:
        if "forward" in self.module.__dict__:
            del self.module.forward

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class BlockForward:
    """The forward a block installs on its module.

    A deep copy or a pickle of the model gets the module's plain forward back
    (``PlainForward``), not a hidden copy of the preconditioner.
    """

    def __init__(self, block: Block) -> None:
        self.block = block

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        block = self.block
        if block.pre_pad is not None:  # autograd takes the padding's backward
            x = F.pad(x, block.pre_pad, block.pad_mode)
        if torch.compiler.is_compiling():
            return self.traced(x)
        params = block.module._parameters  # direct: Module.__getattr__ is slow
        weight = params.get("weight")
        if weight is None:  # e.g. a parametrized weight
            weight, bias = block.module.weight, block.module.bias
        else:
            bias = params.get("bias")
        # Frozen after the block was made, traced by torch.func, or in a reweighted step
        # (whose loss carries the coefficients): the plain op.
        state = block.owner.state
        if (
            not weight.requires_grad
            or transforms_active()
            or (state is not None and state.reweighted)
        ):
            return block.op(x, weight, bias)
        if x.dim() < block.input_dims:
            raise ValueError(
                f"{block.name!r} ({type(block.module).__name__}): FNGD needs a batched input "
                f"{block.input_layout}, got shape {tuple(x.shape)}"
            )
        if (
            block.kernels is not None
            and state is not None
            and torch.is_grad_enabled()  # (a forward without backward must not count)
            and not _any_autocast()
        ):
            scales = state.scales
            scale = None if scales is None else scales[block.index]
            if scale is not None and scale.shape[0] == x.shape[0]:  # this batch's: known
                state.summed.append(block)
                return block.native_op(unwrap_if_dead(x), weight, bias, scale)
        return _apply(unwrap_if_dead(x), weight, bias, block)

    def traced(self, x: torch.Tensor) -> torch.Tensor:
        """The forward as ``torch.compile`` traces it: a step whose scale is known runs the
        custom op (no graph break, whether or not the compiled blocks are built); any other
        runs ``BlockFunction``, which dynamo cannot trace (the inversion step's break)."""
        block = self.block
        module = block.module
        weight, bias = module.weight, module.bias
        state = block.owner.state
        if not weight.requires_grad or (state is not None and state.reweighted):
            return block.op(x, weight, bias)
        if state is not None and torch.is_grad_enabled():
            scales = state.scales
            scale = None if scales is None else scales[block.index]
            if block.traceable and scale is not None and scale.shape[0] == x.shape[0]:
                state.summed.append(block)
                return block.traced_op(x, weight, bias, scale)
        return BlockFunction.apply(x, weight, bias, block)

    def __deepcopy__(self, memo: dict[int, Any]) -> PlainForward:
        return PlainForward(copy.deepcopy(self.block.module, memo))

    def __reduce__(self) -> tuple[Any, ...]:
        return (PlainForward, (self.block.module,))


class PlainForward:
    """Stands in for a block's forward in a copy of the model: the module's own forward."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return type(self.module).forward(self.module, *args, **kwargs)

    def __deepcopy__(self, memo: dict[int, Any]) -> PlainForward:
        return PlainForward(copy.deepcopy(self.module, memo))


def accumulate(p: torch.Tensor, g: torch.Tensor | None) -> None:
    """``p.grad += g`` as autograd does it (the first gradient is set, in ``p``'s dtype)."""
    if g is None:
        return
    if p.grad is None:
        p.grad = g.to(p.dtype)
    else:
        p.grad.add_(g)


def append_ones(a: torch.Tensor) -> torch.Tensor:
    """Add the bias column: ``[a, 1]`` along the last dimension."""
    return torch.cat([a, a.new_ones(*a.shape[:-1], 1)], dim=-1)


def scale_rows(grad_out: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Multiply each sample's slice of ``grad_out`` (dim 0) by its entry of ``scale``."""
    return grad_out * scale.view((-1,) + (1,) * (grad_out.dim() - 1))
