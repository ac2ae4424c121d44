"""Coefficient sharing: later passes reuse the first pass's c, with no Gram and no solve."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from fngd import FNGD
from tests.fngd_reference import block_grad, per_sample_block_grads, rel_err

DAMPING = 0.05
BLOCKS = ["0", "2"]


def loss_per_sample(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y, reduction="none")


def make() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    return model, torch.randn(8, 6).double(), torch.randint(0, 3, (8,))


def reference_c(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    g = per_sample_block_grads(model, x, y, loss_per_sample, BLOCKS)
    n = x.shape[0]
    eye = torch.eye(n, dtype=x.dtype)
    return {k: torch.linalg.solve(v @ v.T + n * DAMPING * eye, torch.ones(n, dtype=x.dtype))
            for k, v in g.items()}


def train_step(model, pre, x, y, ids, prepare: bool) -> None:
    model.zero_grad(set_to_none=True)
    if prepare:
        pre.prepare(sample_ids=ids)
    loss_per_sample(model(x[ids]), y[ids]).mean().backward()
    pre.step(sample_ids=ids)


@pytest.mark.parametrize("prepare", [True, False], ids=["sum-in-backward", "sum-in-step"])
def test_second_pass_reuses_first_pass_coefficients(prepare: bool) -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share="sample")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    expected_c: dict[int, dict[str, float]] = {}
    for ids in (torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])):
        c = reference_c(model, x[ids], y[ids])
        for j, i in enumerate(ids.tolist()):
            expected_c[i] = {k: float(v[j]) for k, v in c.items()}
        train_step(model, pre, x, y, ids, prepare)
        assert pre.mode == "inversion"
        opt.step()
    for b in pre.blocks:  # the table holds the first pass's coefficients
        stored = pre.sample_table.values[b.index]
        want = torch.tensor([expected_c[i][b.name] for i in range(8)], dtype=stored.dtype)
        assert rel_err(stored, want) < 1e-10

    ids = torch.tensor([5, 2, 7, 0])  # other order, mixing both first-pass batches
    g = per_sample_block_grads(model, x[ids], y[ids], loss_per_sample, BLOCKS)  # new weights
    counts = dict(pre.counts)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(model, pre, x, y, ids, prepare)
    names = {e.name for e in prof.events()}
    assert pre.mode == "weighted_sum"
    assert "fngd/weighted_sum" in names
    assert "fngd/gram" not in names and "fngd/solve" not in names
    assert pre.counts["gram"] == counts["gram"] and pre.counts["solve"] == counts["solve"]
    for name in BLOCKS:
        c = torch.tensor([expected_c[i][name] for i in ids.tolist()], dtype=x.dtype)
        assert rel_err(block_grad(model, name), g[name].T @ c) < 1e-8, name


def test_unknown_id_triggers_inversion_and_overwrites() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share="sample")
    train_step(model, pre, x, y, torch.tensor([0, 1, 2, 3]), prepare=True)
    before = pre.sample_table.values.clone()
    train_step(model, pre, x, y, torch.tensor([0, 1, 2, 4]), prepare=True)  # 4 is new
    assert pre.mode == "inversion"
    assert not torch.equal(before[:, :3], pre.sample_table.values[:, :3])


def test_share_iteration_reuses_by_position_in_epoch() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share="iteration", steps_per_epoch=2)
    batches = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])]
    for ids in batches:
        train_step(model, pre, x, y, ids, prepare=True)
        assert pre.mode == "inversion"
    first_iter_c = pre.iteration_table.values[0].clone()
    ids = torch.tensor([7, 6, 5, 4])  # epoch 1, iteration 0: reuses iteration 0's c
    g = per_sample_block_grads(model, x[ids], y[ids], loss_per_sample, BLOCKS)
    train_step(model, pre, x, y, ids, prepare=True)
    assert pre.mode == "weighted_sum"
    for b in pre.blocks:
        assert rel_err(block_grad(model, b.name), g[b.name].T @ first_iter_c[b.index]) < 1e-8


def test_share_none_always_inverts() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share="none")
    for _ in range(3):
        train_step(model, pre, x, y, torch.tensor([0, 1, 2, 3]), prepare=True)
        assert pre.mode == "inversion"
    assert pre.memory_usage()["coefficients"] == 0


def test_refresh_epochs_recomputes() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share="sample", steps_per_epoch=1, refresh_epochs=2)
    ids = torch.tensor([0, 1, 2, 3])
    phases = []
    for _ in range(5):
        train_step(model, pre, x, y, ids, prepare=True)
        phases.append(pre.mode)
    assert phases == ["inversion", "weighted_sum", "inversion", "weighted_sum", "inversion"]


def test_state_dict_resumes_in_weighted_sum_phase() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share="sample")
    train_step(model, pre, x, y, torch.tensor([0, 1, 2, 3]), prepare=True)
    state = copy.deepcopy(pre.state_dict())
    assert pre.memory_usage()["coefficients"] == 2 * 4 * 8  # 2 blocks x 4 ids x float64

    model2 = copy.deepcopy(model)
    pre2 = FNGD(model2, damping=DAMPING, share="sample")
    pre2.load_state_dict(state)
    for m, p in ((model, pre), (model2, pre2)):
        train_step(m, p, x, y, torch.tensor([3, 1, 0, 2]), prepare=True)
        assert p.mode == "weighted_sum"
    for name in BLOCKS:
        assert torch.equal(block_grad(model, name), block_grad(model2, name))
    with pytest.raises(ValueError, match="share"):
        FNGD(copy.deepcopy(model), share="none").load_state_dict(state)
