"""FNGD adds its natural gradient to ``.grad`` as autograd does: accumulation works.

Gradient accumulation with FNGD is ``backward; step`` per micro-batch without
``zero_grad`` in between (a block may run only one backward per ``step()``), and
``.grad`` must then hold the sum of the micro-batches' preconditioned gradients.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fngd import FNGD
from tests.fngd_reference import block_grad, per_sample_block_grads, rel_err

DAMPING = 0.1
BLOCKS = ["0", "2"]
BATCHES = (torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6]))


def sq(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out - y) ** 2).flatten(1).sum(1)


def make() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    return model, torch.randn(7, 5).double(), torch.randn(7, 3).double()


def coefficients(g: torch.Tensor) -> torch.Tensor:
    """``c = (G G^T + N damping I)^-1 1`` for per-sample gradients G (N, d), float64."""
    n = g.shape[0]
    k = g @ g.T + n * DAMPING * torch.eye(n, dtype=g.dtype)
    return torch.linalg.solve(k, torch.ones(n, dtype=g.dtype))


def micro_step(model: nn.Module, pre: FNGD, x: torch.Tensor, y: torch.Tensor,
               ids: torch.Tensor, prepare: bool) -> None:
    if prepare:
        pre.prepare(sample_ids=ids)
    sq(model(x[ids]), y[ids]).mean().backward()
    pre.step(sample_ids=ids)


@pytest.mark.parametrize(
    ("phase", "prepare"),
    [("inversion", False), ("inversion", True), ("weighted_sum", False), ("weighted_sum", True)],
    ids=["inversion", "inversion-prepared", "weighted-sum-in-step", "weighted-sum-in-backward"],
)
def test_two_micro_batches_sum_their_natural_gradients(phase: str, prepare: bool) -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share="sample")
    # Coefficients as the first pass stores them (weights are not updated in this test).
    grads = [per_sample_block_grads(model, x[ids], y[ids], sq, BLOCKS) for ids in BATCHES]
    if phase == "weighted_sum":
        for ids in BATCHES:  # the first epoch: store every id's coefficients
            model.zero_grad(set_to_none=True)
            micro_step(model, pre, x, y, ids, prepare)
    model.zero_grad(set_to_none=True)
    for ids in BATCHES:  # no zero_grad between the micro-batches
        micro_step(model, pre, x, y, ids, prepare)
        assert pre.mode == phase
    for name in BLOCKS:
        want = sum(g[name].T @ coefficients(g[name]) for g in grads)
        one = grads[-1][name].T @ coefficients(grads[-1][name])
        assert rel_err(one, want) > 1e-2  # the last micro-batch alone is not the answer
        assert rel_err(block_grad(model, name), want) < 1e-10, name


def test_natural_gradient_adds_to_an_existing_gradient() -> None:
    """A gradient already in ``.grad`` (e.g. from another loss term) is kept and added to."""
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share="none")
    ids = BATCHES[0]
    g = per_sample_block_grads(model, x[ids], y[ids], sq, BLOCKS)
    existing = [torch.randn_like(p) for p in model.parameters()]
    for p, e in zip(model.parameters(), existing, strict=True):
        p.grad = e.clone()
    micro_step(model, pre, x, y, ids, prepare=False)
    offsets = dict(zip(BLOCKS, (torch.cat([existing[0].flatten(), existing[1]]),
                                torch.cat([existing[2].flatten(), existing[3]])), strict=True))
    for name in BLOCKS:
        want = offsets[name] + g[name].T @ coefficients(g[name])
        assert rel_err(block_grad(model, name), want) < 1e-10, name
