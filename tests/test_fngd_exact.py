"""FNGD's .grad equals the dense float64 natural gradient built from per-sample gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fngd import FNGD
from tests.fngd_reference import block_grad, natural_gradient, per_sample_block_grads, rel_err

DAMPING = 0.1


def squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample loss: summed over every non-batch dimension."""
    return ((out - y) ** 2).flatten(1).sum(1)


def linear_2d(bias: bool) -> tuple[nn.Module, list[str], torch.Tensor, torch.Tensor]:
    model = nn.Sequential(nn.Linear(5, 4, bias=bias), nn.Tanh(), nn.Linear(4, 3, bias=bias))
    return model, ["0", "2"], torch.randn(6, 5), torch.randn(6, 3)


def linear_seq(bias: bool) -> tuple[nn.Module, list[str], torch.Tensor, torch.Tensor]:
    model = nn.Sequential(nn.Linear(5, 4, bias=bias), nn.Tanh(), nn.Linear(4, 3, bias=bias))
    return model, ["0", "2"], torch.randn(6, 7, 5), torch.randn(6, 7, 3)


def conv_2d(bias: bool) -> tuple[nn.Module, list[str], torch.Tensor, torch.Tensor]:
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=bias),
        nn.Tanh(),
        nn.Conv2d(3, 2, 2, dilation=2, bias=bias),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2, 3, bias=bias),
    )
    return model, ["0", "2", "4"], torch.randn(5, 2, 8, 8), torch.randn(5, 3)


CASES = {"linear_2d": linear_2d, "linear_seq": linear_seq, "conv2d": conv_2d}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("gram", ["auto", "pairwise", "explicit"])
def test_grad_is_damped_natural_gradient(case: str, bias: bool, reduction: str, gram: str) -> None:
    torch.manual_seed(0)
    model, blocks, x, y = CASES[case](bias)
    model, x, y = model.double(), x.double(), y.double()
    per_sample = per_sample_block_grads(model, x, y, squared_error, blocks)

    pre = FNGD(model, damping=DAMPING, share="none", loss_reduction=reduction, gram=gram)
    losses = squared_error(model(x), y)
    (losses.mean() if reduction == "mean" else losses.sum()).backward()
    pre.step()

    assert pre.mode == "inversion"
    assert [b.name for b in pre.blocks] == blocks
    for name in blocks:
        expected = natural_gradient(per_sample[name], DAMPING, reduction)
        assert rel_err(block_grad(model, name), expected) < 1e-8, name


def test_other_parameters_keep_plain_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2)).double()
    x, y = torch.randn(8, 4).double(), torch.randn(8, 2).double()
    plain = [p.grad for p in _grads(model, x, y)]
    pre = FNGD(model, share="none", skip_layers=["^2$"])
    natural = [p.grad for p in _grads(model, x, y, pre)]
    # LayerNorm (index 2, 3) and the skipped Linear (4, 5) are untouched; block 0 is not.
    for i in (2, 3, 4, 5):
        assert torch.equal(plain[i], natural[i])
    assert not torch.allclose(plain[0], natural[0])


def _grads(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, pre: FNGD | None = None
) -> list[torch.nn.Parameter]:
    model.zero_grad(set_to_none=True)
    squared_error(model(x), y).mean().backward()
    if pre is not None:
        pre.step()
    return list(model.parameters())


def test_skip_layers_by_class_name() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    assert [b.name for b in FNGD(model, skip_layers=["Conv2d"]).blocks] == ["2"]


def test_remove_restores_plain_gradients() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).double()
    x, y = torch.randn(5, 4).double(), torch.randn(5, 3).double()
    plain = [p.grad.clone() for p in _grads(model, x, y)]
    pre = FNGD(model, share="none")
    pre.remove()
    assert all(torch.equal(a, p.grad) for a, p in zip(plain, _grads(model, x, y), strict=True))
