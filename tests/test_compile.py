"""``torch.compile`` and FNGD: the custom ops are sound, a weighted-sum step traces whole and
equals eager, and a compiled model's state loads into its eager twin and back."""

from __future__ import annotations

import functools

import pytest
import torch
import torch._dynamo
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from fngd import FNGD
from fngd.blocks import custom_ops
from tests import test_fngd_layers as layer_cases
from tests.fngd_reference import rel_err
from tests.test_fngd_exact import CASES, squared_error

BACKEND = "aot_eager"  # inductor compiles C++: minutes on a small machine


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


def _linear_args(bias: bool, shape: tuple[int, ...]) -> tuple[object, ...]:
    x = torch.randn(*shape, 5, dtype=torch.double, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.double, requires_grad=True)
    b = torch.randn(4, dtype=torch.double, requires_grad=True) if bias else None
    return x, w, b, torch.rand(shape[0], 1, dtype=torch.double)


def _conv_args(bias: bool) -> tuple[object, ...]:
    x = torch.randn(3, 2, 7, 7, dtype=torch.double, requires_grad=True)
    w = torch.randn(4, 2, 3, 3, dtype=torch.double, requires_grad=True)
    b = torch.randn(4, dtype=torch.double, requires_grad=True) if bias else None
    return x, w, b, torch.rand(3, 1, dtype=torch.double), [2, 1], [1, 0], [1, 2]


@pytest.mark.parametrize("bias", [True, False])
def test_custom_ops_pass_opcheck(bias: bool) -> None:
    """Schema, fake (meta) form, autograd registration and AOT dispatch agree with the op."""
    torch.manual_seed(0)
    for shape in [(6,), (6, 3)]:
        torch.library.opcheck(custom_ops.weighted_linear, _linear_args(bias, shape))
    torch.library.opcheck(custom_ops.weighted_conv2d, _conv_args(bias))


def _per_sample_weighted(
    op,
    args: tuple,
    n: int,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``sum_i scale_i g_i`` of weight and bias, and the input gradient, from per-sample
    autograd of the plain op (the loss: a fixed random projection of the output)."""
    x, w, b, scale, *conv = args
    params = [w] if b is None else [w, b]
    probe = torch.randn_like(op(x, w, b, *conv))
    sums = [torch.zeros_like(p) for p in params]
    for i in range(n):
        grads = torch.autograd.grad((op(x, w, b, *conv)[i] * probe[i]).sum(), params)
        for s, g in zip(sums, grads, strict=True):
            s += scale[i, 0] * g
    (grad_x,) = torch.autograd.grad((op(x, w, b, *conv) * probe).sum(), [x])
    return [grad_x, *sums], probe


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", ["linear", "linear_seq", "conv2d"])
def test_custom_ops_weight_each_samples_gradient(kind: str, bias: bool) -> None:
    torch.manual_seed(0)
    if kind == "conv2d":
        args = _conv_args(bias)
        op, plain = custom_ops.weighted_conv2d, torch.nn.functional.conv2d
    else:
        args = _linear_args(bias, (6, 3) if kind == "linear_seq" else (6,))
        op, plain = custom_ops.weighted_linear, torch.nn.functional.linear

    def plain_op(x, w, b, *conv):
        return plain(x, w, b, *conv)

    expected, probe = _per_sample_weighted(plain_op, args, args[0].shape[0])
    x, w, b = args[:3]
    inputs = [x, w] if b is None else [x, w, b]
    got = torch.autograd.grad((op(*args) * probe).sum(), inputs)
    for a, e in zip(got, expected, strict=True):
        assert rel_err(a, e) < 1e-12


def _exact_case(case: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, _, x, y = CASES[case](True)
    return model, x, y


#: The exact tests' models, and convolutions padded in every mode (``padding="same"`` with an
#: even kernel included: the input is padded before the block, inside the graph).
MODELS = {
    **{case: functools.partial(_exact_case, case) for case in CASES},
    "padding": layer_cases.padding,
}


def _model(case: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model, x, y = MODELS[case]()
    return model.double(), x.double(), y.double()


def _step(fn: nn.Module, model: nn.Module, pre: FNGD, x: torch.Tensor, y: torch.Tensor) -> None:
    ids = torch.arange(len(x))
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    squared_error(fn(x), y).mean().backward()
    pre.step(sample_ids=ids)


def _inverted(case: str) -> tuple[nn.Module, FNGD, torch.Tensor, torch.Tensor]:
    """A model whose FNGD inverted one (eager) step: the next is a weighted-sum step."""
    model, x, y = _model(case)
    pre = FNGD(model, damping=0.1, share="sample")
    _step(model, model, pre, x, y)
    assert pre.mode == "inversion"
    return model, pre, x, y


@pytest.mark.parametrize("case", list(MODELS))
def test_weighted_sum_step_has_no_graph_break(case: str) -> None:
    model, pre, x, _ = _inverted(case)
    pre.prepare(sample_ids=torch.arange(len(x)))
    explained = torch._dynamo.explain(torch.compile(model, backend=BACKEND))(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.mark.parametrize("case", list(MODELS))
def test_fullgraph_weighted_sum_step_equals_eager(case: str) -> None:
    compiled, pre_c, x, y = _inverted(case)
    eager, pre_e, _, _ = _inverted(case)
    _step(torch.compile(compiled, fullgraph=True, backend=BACKEND), compiled, pre_c, x, y)
    _step(eager, eager, pre_e, x, y)
    assert pre_c.mode == pre_e.mode == "weighted_sum"
    for a, b in zip(compiled.parameters(), eager.parameters(), strict=True):
        assert rel_err(a.grad, b.grad) < 1e-10


def test_inversion_step_breaks_on_the_block_function() -> None:
    """What an inversion step still breaks on: ``BlockFunction``'s backward keeps its pair in
    the owner's step state, a side effect dynamo does not trace inside an autograd.Function."""
    model, x, y = _model("linear_2d")
    pre = FNGD(model, damping=0.1, share="sample")
    pre.prepare(sample_ids=torch.arange(len(x)))
    explained = torch._dynamo.explain(torch.compile(model, backend=BACKEND))(x)
    assert explained.graph_break_count >= 1
    with pytest.raises(torch._dynamo.exc.Unsupported, match="side effect"):
        torch.compile(model, fullgraph=True, backend=BACKEND)(x)


def test_compiled_training_equals_eager_across_phases() -> None:
    """Without ``fullgraph``, inverting steps fall back where they break and weighted-sum
    steps trace: every step's gradients are eager's."""
    runs = []
    for compiled in (False, True):
        model, x, y = _model("conv2d")
        pre = FNGD(model, damping=0.1, share="sample")
        fn = torch.compile(model, backend=BACKEND) if compiled else model
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        steps = []
        for _ in range(3):
            _step(fn, model, pre, x, y)
            steps.append((pre.mode, [p.grad.clone() for p in model.parameters()]))
            opt.step()
        runs.append(steps)
    for (mode_e, grads_e), (mode_c, grads_c) in zip(*runs, strict=True):
        assert mode_e == mode_c
        for a, b in zip(grads_c, grads_e, strict=True):
            assert rel_err(a, b) < 1e-10
    assert [mode for mode, _ in runs[0]] == ["inversion", "weighted_sum", "weighted_sum"]


def test_state_dicts_load_between_compiled_model_and_eager_twin() -> None:
    compiled_model, x, y = _model("linear_2d")
    compiled = torch.compile(compiled_model, backend=BACKEND)
    pre_c = FNGD(compiled, damping=0.1, share="sample")
    eager, _, _ = _model("linear_2d")
    pre_e = FNGD(eager, damping=0.1, share="sample")
    assert [b.name for b in pre_c.blocks] == [b.name for b in pre_e.blocks] == ["0", "2"]

    _step(compiled, compiled_model, pre_c, x, y)
    pre_e.load_state_dict(pre_c.state_dict())
    # torch prefixes a compiled model's keys with ``_orig_mod.``; its module's are eager's.
    model_state = compiled.state_dict()
    consume_prefix_in_state_dict_if_present(model_state, "_orig_mod.")
    eager.load_state_dict(model_state)
    eager.load_state_dict(compiled._orig_mod.state_dict())
    _step(eager, eager, pre_e, x, y)
    assert pre_e.mode == "weighted_sum"  # the loaded coefficients were used

    back, _, _ = _model("linear_2d")
    back_compiled = torch.compile(back, backend=BACKEND)
    pre_back = FNGD(back_compiled, damping=0.1, share="sample")
    pre_back.load_state_dict(pre_e.state_dict())
    back_compiled._orig_mod.load_state_dict(eager.state_dict())
    _step(back_compiled, back, pre_back, x, y)
    _step(compiled, compiled_model, pre_c, x, y)  # the same second step, never reloaded
    assert pre_back.mode == "weighted_sum"
    for a, b in zip(back.parameters(), compiled_model.parameters(), strict=True):
        assert rel_err(a.grad, b.grad) < 1e-10
