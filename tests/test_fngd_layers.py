"""The layers beyond plain Linear and Conv2d, exact: FNGD's .grad equals the dense float64
natural gradient in both phases, both scopes, compiled blocks on and off.

Conv1d; grouped and depthwise convolutions; every padding mode and ``padding="same"`` /
``"valid"``; a Linear called twice in one forward (its per-sample gradient is the sum over
both uses, so the Gram holds the cross terms); parametrised weights (``weight_norm``,
``spectral_norm``), whose natural gradient reaches the parameters they are made of through
the parametrisation's backward.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from fngd import FNGD
from fngd.blocks import native as native_blocks
from tests.fngd_reference import (
    natural_gradient,
    network_natural_gradient,
    per_sample_block_grads,
    rel_err,
)

DAMPING = 0.1
N = 6


def squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out - y) ** 2).flatten(1).sum(1)


class TwiceLinear(nn.Module):
    """One Linear applied twice (a weight used twice in a forward), then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.shared(x))
        return self.head(torch.tanh(self.shared(h)) + h)


def conv1d() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = nn.Sequential(
        nn.Conv1d(2, 3, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.Conv1d(3, 2, 2, dilation=2, bias=False),
        nn.Flatten(),
        nn.Linear(2 * 3, 3),
    )
    return model, torch.randn(N, 2, 9), torch.randn(N, 3)


def grouped() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1, groups=2),
        nn.Tanh(),
        nn.Conv2d(6, 6, 3, groups=6),  # depthwise
        nn.Tanh(),
        nn.Conv1d(6, 4, 3, groups=2, padding="same", padding_mode="replicate"),
        nn.Flatten(),
        nn.Linear(4 * 16, 3),
    )
    return _flatten_h(model), torch.randn(N, 4, 6, 6), torch.randn(N, 3)


def _flatten_h(model: nn.Sequential) -> nn.Module:
    """(N, C, 4, 4) -> (N, C, 16) before the Conv1d of ``grouped``."""
    layers = list(model)
    return nn.Sequential(*layers[:4], nn.Flatten(2), *layers[4:])


def padding() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
        nn.Tanh(),
        nn.Conv2d(3, 3, 3, padding=(1, 2), padding_mode="circular"),
        nn.Tanh(),
        nn.Conv2d(3, 3, 4, padding="same"),  # even kernel: one more on the right
        nn.Tanh(),
        nn.Conv2d(3, 2, 3, padding="same", dilation=2, padding_mode="replicate"),
        nn.Tanh(),
        nn.Conv2d(2, 2, 3, padding="valid"),
        nn.Flatten(),
        nn.Linear(2 * 4 * 6, 3),
    )
    return model, torch.randn(N, 2, 6, 6), torch.randn(N, 3)


def twice() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return TwiceLinear(), torch.randn(N, 4), torch.randn(N, 3)


def twice_on_sequences() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return TwiceLinear(), torch.randn(N, 5, 4), torch.randn(N, 5, 3)


def parametrised() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = nn.Sequential(
        parametrizations.weight_norm(nn.Linear(5, 4)),
        nn.Tanh(),
        parametrizations.spectral_norm(nn.Conv1d(4, 4, 1)),
        nn.Flatten(),
        parametrizations.spectral_norm(nn.Linear(4, 3)),
    )
    for layer in (model[2], model[4]):
        # No power iteration at each forward: the weighted-sum step must see the weight the
        # inversion step saw (test_spectral_norm_state_... covers the training mode).
        layer.parametrizations.weight.eval()
    return _unsqueezed(model), torch.randn(N, 5), torch.randn(N, 3)


def _unsqueezed(model: nn.Sequential) -> nn.Module:
    """(N, 4) -> (N, 4, 1) before the Conv1d of ``parametrised``."""
    layers = list(model)
    return nn.Sequential(*layers[:2], nn.Unflatten(1, (4, 1)), *layers[2:])


CASES = {
    "conv1d": conv1d,
    "grouped": grouped,
    "padding": padding,
    "twice": twice,
    "twice_on_sequences": twice_on_sequences,
    "parametrised": parametrised,
}


def plain_copy(model: nn.Module) -> nn.Module:
    """``model`` with each parametrised weight replaced by its current value (a parameter),
    computed in eval mode so that a power iteration does not run again.

    Each copied module gets a class of its own first: a parametrised module's class is made
    for it and a deep copy shares it, so removing the copy's parametrisation would remove
    the original's too.
    """
    plain = copy.deepcopy(model).eval()  # (no layer here depends on the mode)
    for module in list(plain.modules()):
        module.__dict__.pop("forward", None)
        if parametrize.is_parametrized(module):
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return plain


def expected_grads(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, blocks: list[str], scope: str
) -> dict[str, torch.Tensor]:
    """Parameter name -> the dense natural gradient's part for that parameter (a
    parametrised weight's: pulled back to its originals through the parametrisation)."""
    per_sample = per_sample_block_grads(plain_copy(model), x, y, squared_error, blocks)
    if scope == "network":
        nat = network_natural_gradient(per_sample, DAMPING)
    else:
        nat = {k: natural_gradient(g, DAMPING) for k, g in per_sample.items()}
    out = {}
    for name in blocks:
        module = model.get_submodule(name)
        chain = module.parametrizations.weight if parametrize.is_parametrized(module) else None
        training = chain is not None and chain.training
        if chain is not None:
            chain.eval()  # as the step evaluates it: no power iteration
        weight = module.weight
        k = weight.numel()
        nat_w, nat_b = nat[name][:k].view(weight.shape), nat[name][k:]
        if nat_b.numel():
            out[f"{name}.bias"] = nat_b
        if chain is None:
            out[f"{name}.weight"] = nat_w
            continue
        originals = dict(chain.named_parameters())
        pulled = torch.autograd.grad(weight, list(originals.values()), nat_w)
        chain.train(training)
        for key, g in zip(originals, pulled, strict=True):
            out[f"{name}.parametrizations.weight.{key}"] = g
    return out


def _step(model: nn.Module, pre: FNGD, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    ids = torch.arange(len(x))
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    squared_error(model(x), y).mean().backward()
    pre.step(sample_ids=ids)
    return {k: p.grad for k, p in model.named_parameters()}


NATIVE = ["off"] + (["on"] if native_blocks.kernels("auto") is not None else [])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("scope", ["layer", "network"])
@pytest.mark.parametrize("native", NATIVE)
def test_both_phases_give_the_dense_natural_gradient(case: str, scope: str, native: str) -> None:
    torch.manual_seed(0)
    model, x, y = CASES[case]()
    model, x, y = model.double(), x.double(), y.double()
    pre = FNGD(model, damping=DAMPING, scope=scope, native=native)
    blocks = [b.name for b in pre.blocks]
    assert pre.coverage().fraction == 1.0, str(pre.coverage())

    inverted = _step(model, pre, x, y)  # first epoch: the Gram and the solve
    assert pre.mode == "inversion"
    expected = expected_grads(model, x, y, blocks, scope)
    assert set(expected) == set(inverted)
    for name, g in expected.items():
        assert rel_err(inverted[name], g) < 1e-8, name

    summed = _step(model, pre, x, y)  # a later epoch: the stored coefficients' weighted sum
    assert pre.mode == "weighted_sum"
    for name, g in expected.items():
        assert rel_err(summed[name], g) < 1e-8, name


def test_every_case_is_made_of_blocks() -> None:
    """The cases exercise what they name: each module with a weight is a block."""
    for case, make in CASES.items():
        model, _, _ = make()
        weighted = [n for n, m in model.named_modules() if hasattr(m, "weight") and n]
        weighted = [n for n in weighted if ".parametrizations" not in n]
        pre = FNGD(model, native="off")
        assert [b.name for b in pre.blocks] == weighted, case


def test_a_weight_used_twice_solves_one_gram_with_the_cross_terms() -> None:
    """Dropping the cross terms (each use's Gram alone) would not be the natural gradient;
    the exact test above would fail. Here: the block holds both uses' pairs."""
    torch.manual_seed(0)
    model, x, y = twice()
    pre = FNGD(model.double(), damping=DAMPING, share="none", native="off")
    x, y = x.double(), y.double()
    squared_error(model(x), y).mean().backward()
    assert len(pre.state.stash[pre.blocks[0]]) == 2  # type: ignore[union-attr]
    pre.step()
    assert pre.mode == "inversion"


def test_gradient_accumulation_is_one_clear_error() -> None:
    """Two backward passes before step() are not two uses of a weight: refused by name."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    pre = FNGD(model, native="off", share="none")
    for _ in range(2):
        model(torch.randn(5, 4)).pow(2).mean().backward()
    with pytest.raises(RuntimeError, match=r"module\(s\) '0' ran more than one backward pass"):
        pre.step()


def test_spectral_norm_state_is_left_where_the_forward_left_it() -> None:
    """The step evaluates the parametrisation again in eval mode: no extra power iteration."""
    torch.manual_seed(0)
    model = nn.Sequential(parametrizations.spectral_norm(nn.Linear(5, 4)))
    pre = FNGD(model, damping=DAMPING, share="none", native="off")
    model(torch.randn(N, 5)).pow(2).mean().backward()
    u = model[0].parametrizations.weight[0]._u.clone()
    pre.step()
    assert torch.equal(model[0].parametrizations.weight[0]._u, u)
    assert model[0].parametrizations.weight.training
    original = model[0].parametrizations.weight.original
    assert original.grad is not None and torch.isfinite(original.grad).all()


def test_parametrised_weights_train_with_share_none() -> None:
    """Exact NGD (every step inverts) moves the original parameters."""
    torch.manual_seed(0)
    model = nn.Sequential(parametrizations.weight_norm(nn.Linear(5, 3)))
    pre = FNGD(model, damping=DAMPING, share="none", native="off")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(N, 5), torch.randn(N, 3)
    for _ in range(2):
        opt.zero_grad()
        squared_error(model(x), y).mean().backward()
        pre.step()
        opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_hook_based_weight_norm_is_refused_by_name() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.utils.weight_norm(nn.Linear(4, 2)))
    with pytest.raises(ValueError, match=r"module '1' \(Linear\): its weight is not a parameter"):
        FNGD(model, native="off")
    assert len(FNGD(model, native="off", skip_layers=["^1$"]).blocks) == 1


@pytest.mark.parametrize("share", ["sample", "none"])
def test_a_cast_after_construction_is_followed_in_both_phases(share: str) -> None:
    """Built on a float32 model, cast to float64: later steps are float64-exact."""
    torch.manual_seed(0)
    model, x, y = conv1d()
    pre = FNGD(model, damping=DAMPING, share=share, native="off")
    model.double()
    x, y = x.double(), y.double()
    expected = expected_grads(model, x, y, [b.name for b in pre.blocks], "layer")
    for phase in ("inversion", "weighted_sum" if share == "sample" else "inversion"):
        got = _step(model, pre, x, y)
        assert pre.mode == phase
        for name, g in expected.items():
            assert got[name].dtype == torch.float64
            assert rel_err(got[name], g) < 1e-10, (phase, name)
