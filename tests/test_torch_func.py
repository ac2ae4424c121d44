"""torch.func works on a model with FNGD or the built-in KFAC attached.

The standard per-sample-gradient recipe (``functional_call`` + ``vmap(grad(loss_i))``) gives
the same gradients as on a plain copy of the model, leaves nothing behind in the
preconditioner, and the preconditioner's own step stays exact around it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from fngd import FNGD, KFAC
from tests.fngd_reference import block_grad, natural_gradient, per_sample_block_grads, rel_err

DAMPING = 0.1
ATOL = 1e-10


def squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample loss: summed over every non-batch dimension."""
    return ((out - y) ** 2).flatten(1).sum(1)


def mlp() -> tuple[nn.Module, list[str], torch.Tensor, torch.Tensor]:
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    return model, ["0", "2"], torch.randn(6, 5), torch.randn(6, 3)


def cnn() -> tuple[nn.Module, list[str], torch.Tensor, torch.Tensor]:
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.Conv2d(3, 2, 2, dilation=2),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2, 3),
    )
    return model, ["0", "2", "4"], torch.randn(5, 2, 8, 8), torch.randn(5, 3)


CASES: dict[str, Callable[[], tuple[nn.Module, list[str], torch.Tensor, torch.Tensor]]] = {
    "mlp": mlp,
    "cnn": cnn,
}


def case(name: str) -> tuple[nn.Module, list[str], torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model, blocks, x, y = CASES[name]()
    return model.double(), blocks, x.double(), y.double()


def per_sample_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The torch.func recipe, on ``model`` as it is (no copy, hooks and forwards in place)."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return squared_error(out, yi.unsqueeze(0)).sum()

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=ATOL, msg=k)


def assert_no_grad(model: nn.Module) -> None:
    assert all(p.grad is None for p in model.parameters())


def fngd_step(
    model: nn.Module,
    pre: FNGD,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    between: Callable[[], object],
) -> None:
    """One FNGD step; ``between`` runs after prepare() and again after backward."""
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    between()
    squared_error(model(x), y).mean().backward()
    between()
    pre.step(sample_ids=ids)


@pytest.mark.parametrize("name", list(CASES))
def test_fngd_per_sample_gradients_match_a_plain_copy_and_the_step_stays_exact(name: str) -> None:
    model, blocks, x, y = case(name)
    plain = copy.deepcopy(model)
    pre = FNGD(model, damping=DAMPING, share="sample")
    ids = torch.arange(x.shape[0])

    want = per_sample_grads(plain, x, y)
    assert_same(per_sample_grads(model, x, y), want)
    assert_no_grad(model)
    assert pre.state is None and pre.mode is None

    # FNGD's reference (the dense float64 natural gradient) from those same per-sample grads.
    reference = per_sample_block_grads(plain, x, y, squared_error, blocks)
    expected = {b: natural_gradient(reference[b], DAMPING) for b in blocks}

    def probe() -> None:  # torch.func in the middle of a step must not disturb it
        assert_same(per_sample_grads(model, x, y), want)

    fngd_step(model, pre, x, y, ids, probe)
    assert pre.mode == "inversion"
    for b in blocks:
        assert rel_err(block_grad(model, b), expected[b]) < 1e-8, b

    fngd_step(model, pre, x, y, ids, probe)  # stored coefficients: summed inside backward
    assert pre.mode == "weighted_sum" and pre.state is None
    for b in blocks:
        assert rel_err(block_grad(model, b), expected[b]) < 1e-8, b


def test_fngd_forward_transforms_match_a_plain_copy() -> None:
    model, _, x, _ = case("cnn")
    plain = copy.deepcopy(model)
    FNGD(model)
    batched = vmap(lambda xi: model(xi.unsqueeze(0)).squeeze(0))(x)
    torch.testing.assert_close(batched, plain(x), rtol=0, atol=ATOL)
    jac, jac_plain = jacrev(model)(x[:2]), jacrev(plain)(x[:2])
    torch.testing.assert_close(jac, jac_plain, rtol=0, atol=ATOL)


def kfac_step(model: nn.Module, pre: KFAC, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    squared_error(model(x), y).mean().backward()
    pre.step()


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("in_hook", [False, True], ids=["in_step", "in_hook"])
def test_kfac_hooks_record_nothing_under_torch_func(name: str, in_hook: bool) -> None:
    model, _, x, y = case(name)
    plain = copy.deepcopy(model)
    twin = copy.deepcopy(model)
    hp = {"damping": DAMPING, "update_factors_in_hook": in_hook, "inv_dtype": torch.float64}
    pre, pre_twin = KFAC(model, **hp), KFAC(twin, **hp)
    want = per_sample_grads(plain, x, y)

    for _ in range(2):
        assert_same(per_sample_grads(model, x, y), want)  # factors or inputs would change
        assert not pre._inputs and not pre._grads
        kfac_step(model, pre, x, y)
        kfac_step(twin, pre_twin, x, y)
        assert pre.mode == pre_twin.mode
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)
    for name_, block in pre.blocks.items():
        twin_block = pre_twin.blocks[name_]
        assert torch.equal(block.a_factor, twin_block.a_factor)
        assert torch.equal(block.g_factor, twin_block.g_factor)
