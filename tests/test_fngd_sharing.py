"""Coefficient sharing: later passes reuse the first pass's c, with no Gram and no solve."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from fngd import FNGD
from tests.fngd_reference import (
    block_grad,
    natural_gradient,
    per_sample_block_grads,
    rel_err,
)

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
    with torch.no_grad():  # other weights: the new batch's coefficients differ from the old
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ids = torch.tensor([0, 1, 2, 4])  # 4 is new
    c = reference_c(model, x[ids], y[ids])
    before = pre.sample_table.values.clone()
    train_step(model, pre, x, y, ids, prepare=True)
    assert pre.mode == "inversion"
    for b in pre.blocks:
        assert rel_err(pre.sample_table.values[b.index, ids], c[b.name]) < 1e-10
        assert rel_err(before[b.index, :3], c[b.name][:3]) > 1e-3
        assert torch.equal(pre.sample_table.values[b.index, 3], before[b.index, 3])


@pytest.mark.parametrize("prepare", [True, False], ids=["sum-in-backward", "sum-in-step"])
def test_batch_with_a_never_seen_id_inverts(prepare: bool) -> None:
    """Known ids do not make a batch known: an id inside the table's range that was never
    stored has no coefficient, so the batch is inverted afresh (and then stored)."""
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share="sample")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for ids in (torch.tensor([0, 1, 2, 3]), torch.tensor([4])):
        train_step(model, pre, x, y, ids, prepare)
        opt.step()
    assert pre.sample_table.values.shape[1] > 6  # id 6 lies inside the allocated table

    ids = torch.tensor([0, 1, 2, 6])
    g = per_sample_block_grads(model, x[ids], y[ids], loss_per_sample, BLOCKS)
    c = reference_c(model, x[ids], y[ids])
    gram_calls = pre.counts["gram"]
    train_step(model, pre, x, y, ids, prepare)
    assert pre.mode == "inversion"
    assert pre.counts["gram"] == gram_calls + 1
    assert pre.last_solve is not None and len(pre.last_solve.methods) == len(BLOCKS)
    for name in BLOCKS:
        assert rel_err(block_grad(model, name), natural_gradient(g[name], DAMPING)) < 1e-8, name
    opt.step()

    # The fresh coefficients were stored for every id of the batch, id 6 included.
    ids2 = torch.tensor([6, 2])
    g2 = per_sample_block_grads(model, x[ids2], y[ids2], loss_per_sample, BLOCKS)
    train_step(model, pre, x, y, ids2, prepare)
    assert pre.mode == "weighted_sum"
    for name in BLOCKS:
        want = g2[name].T @ c[name][[3, 2]]
        assert rel_err(block_grad(model, name), want) < 1e-8, name


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


@pytest.mark.parametrize("prepare", [True, False], ids=["sum-in-backward", "sum-in-step"])
@pytest.mark.parametrize("stored_size", [3, 1])
def test_share_iteration_inverts_when_the_batch_size_changed(
    prepare: bool, stored_size: int
) -> None:
    """Iteration 1 was a partial batch when its coefficients were stored; a batch of
    another size at that iteration cannot reuse them: it inverts and stores its own."""
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share="iteration", steps_per_epoch=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    first, partial = torch.tensor([0, 1, 2, 3]), torch.arange(4, 4 + stored_size)
    for ids in (first, partial):  # epoch 0
        train_step(model, pre, x, y, ids, prepare)
        assert pre.mode == "inversion"
        opt.step()
    train_step(model, pre, x, y, first, prepare)  # epoch 1, iteration 0: same size
    assert pre.mode == "weighted_sum"
    opt.step()

    ids = torch.tensor([4, 5, 6, 7])  # epoch 1, iteration 1: four samples, not stored_size
    g = per_sample_block_grads(model, x[ids], y[ids], loss_per_sample, BLOCKS)
    c = reference_c(model, x[ids], y[ids])
    train_step(model, pre, x, y, ids, prepare)
    assert pre.mode == "inversion"
    for name in BLOCKS:
        assert rel_err(block_grad(model, name), natural_gradient(g[name], DAMPING)) < 1e-10, name
    opt.step()

    train_step(model, pre, x, y, first, prepare)  # epoch 2, iteration 0
    opt.step()
    ids = torch.tensor([7, 6, 5, 4])  # epoch 2, iteration 1: reuses what epoch 1 stored
    g = per_sample_block_grads(model, x[ids], y[ids], loss_per_sample, BLOCKS)
    train_step(model, pre, x, y, ids, prepare)
    assert pre.mode == "weighted_sum"
    for name in BLOCKS:
        assert rel_err(block_grad(model, name), g[name].T @ c[name]) < 1e-10, name


def test_share_none_always_inverts() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share="none")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ids = torch.tensor([0, 1, 2, 3])
    for _ in range(3):
        g = per_sample_block_grads(model, x[ids], y[ids], loss_per_sample, BLOCKS)
        train_step(model, pre, x, y, ids, prepare=True)
        assert pre.mode == "inversion"
        for name in BLOCKS:  # fresh at the current weights, every time
            assert rel_err(block_grad(model, name), natural_gradient(g[name], DAMPING)) < 1e-10
        opt.step()
    assert pre.memory_usage()["coefficients"] == 0


def test_refresh_epochs_recomputes() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share="sample", steps_per_epoch=1, refresh_epochs=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ids = torch.tensor([0, 1, 2, 3])
    phases = []
    for _ in range(5):
        g = per_sample_block_grads(model, x[ids], y[ids], loss_per_sample, BLOCKS)
        if len(phases) % 2 == 0:  # epochs 0, 2, 4 refresh at the current weights
            c = reference_c(model, x[ids], y[ids])
        train_step(model, pre, x, y, ids, prepare=True)
        phases.append(pre.mode)
        for name in BLOCKS:
            assert rel_err(block_grad(model, name), g[name].T @ c[name]) < 1e-10, name
        opt.step()
    assert phases == ["inversion", "weighted_sum", "inversion", "weighted_sum", "inversion"]


def test_state_dict_resumes_in_weighted_sum_phase() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share="sample")
    train_step(model, pre, x, y, torch.tensor([0, 1, 2, 3]), prepare=True)
    state = copy.deepcopy(pre.state_dict())
    # 2 blocks x 4 ids: float64 values, int64 stored epochs, and a known flag per id
    assert pre.memory_usage()["coefficients"] == 2 * 4 * 8 + 2 * 4 * 8 + 4

    model2 = copy.deepcopy(model)
    pre2 = FNGD(model2, damping=DAMPING, share="sample")
    pre2.load_state_dict(state)
    ids = torch.tensor([3, 1, 0, 2])
    c = reference_c(model, x[:4], y[:4])
    g = per_sample_block_grads(model, x[ids], y[ids], loss_per_sample, BLOCKS)
    for m, p in ((model, pre), (model2, pre2)):
        train_step(m, p, x, y, ids, prepare=True)
        assert p.mode == "weighted_sum"
    assert pre2.counts["gram"] == 0
    for name in BLOCKS:
        assert torch.equal(block_grad(model, name), block_grad(model2, name))
        assert rel_err(block_grad(model2, name), g[name].T @ c[name][ids]) < 1e-10, name
    with pytest.raises(ValueError, match="share"):
        FNGD(copy.deepcopy(model), share="none").load_state_dict(state)


@pytest.mark.parametrize("share", ["sample", "iteration"])
def test_checkpoint_resumes_in_a_fresh_preconditioner(share: str) -> None:
    """A saved and reloaded state makes a new FNGD on a copy of the model continue exactly
    where the old one was: mid-epoch, reusing the first epoch's coefficients without a
    Gram or a solve, and refreshing at the same step."""
    model, x, y = make()
    kwargs = {"damping": DAMPING, "share": share, "steps_per_epoch": 2, "refresh_epochs": 2}
    pre = FNGD(model, **kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    batches = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])]
    c = {}
    for it, ids in enumerate(batches):  # epoch 0 inverts and stores
        c[it] = reference_c(model, x[ids], y[ids])
        train_step(model, pre, x, y, ids, prepare=True)
        opt.step()
    train_step(model, pre, x, y, batches[0], prepare=True)  # epoch 1, iteration 0
    opt.step()

    buf = io.BytesIO()
    torch.save(pre.state_dict(), buf)
    buf.seek(0)
    model2 = copy.deepcopy(model)
    pre2 = FNGD(model2, **kwargs)
    pre2.load_state_dict(torch.load(buf, weights_only=True))

    ids = torch.tensor([7, 5, 6, 4])  # epoch 1, iteration 1: iteration 1's (and these ids') c
    g = per_sample_block_grads(model, x[ids], y[ids], loss_per_sample, BLOCKS)
    want_c = c[1] if share == "iteration" else {k: v[ids - 4] for k, v in c[1].items()}
    for m, p in ((model, pre), (model2, pre2)):
        train_step(m, p, x, y, ids, prepare=True)
        assert p.mode == "weighted_sum"
        for name in BLOCKS:
            assert rel_err(block_grad(m, name), g[name].T @ want_c[name]) < 1e-10, name
    assert pre2.counts["gram"] == 0 and pre2.counts["solve"] == 0
    for name in BLOCKS:
        assert torch.equal(block_grad(model, name), block_grad(model2, name))

    for m, p in ((model, pre), (model2, pre2)):  # epoch 2: the refresh inverts again
        train_step(m, p, x, y, batches[0], prepare=True)
        assert p.mode == "inversion"


def test_sample_table_fast_lookup_equals_the_general_one() -> None:
    """Once slots 0..k-1 are known the lookup is one gather on ``values[:, :k]``; ids beyond
    the prefix, negative ids, partly known batches and a later store behave as before."""
    from fngd.coefficients import SampleTable

    table = SampleTable(num_blocks=2)
    coeffs = torch.arange(12, dtype=torch.float64).reshape(2, 6)
    table.store(torch.tensor([0, 1, 2, 3, 4, 5]), coeffs, epoch=0, blocks=[0, 1])
    table.store(torch.tensor([7, 8]), coeffs[:, :2] + 100, epoch=0, blocks=[0])  # block 1 lacks
    prefix = table.known_columns
    assert prefix is not None and prefix.shape == (6, 2, 1)  # slot 6 is unknown
    values, known = table.lookup(torch.tensor([5, 0, 3]), epoch=1)
    assert torch.equal(values, coeffs[:, [5, 0, 3]]) and known.tolist() == [True, True]
    values, known = table.lookup(torch.tensor([1, 7]), epoch=1)  # 7: beyond the prefix
    assert known.tolist() == [True, False] and values[0].tolist() == [1.0, 100.0]
    assert table.lookup(torch.tensor([1, 6]), epoch=1) is None  # 6 never stored
    assert table.lookup(torch.tensor([1, -1]), epoch=1) is None
    assert table.lookup(torch.tensor([1, 50]), epoch=1) is None
    table.store(torch.tensor([6, 7]), coeffs[:, :2] + 200, epoch=1, blocks=[0, 1])
    assert table.known_columns.shape == (8, 2, 1)  # 0..7 now known by both (8: block 0)
    values, _ = table.lookup(torch.tensor([7, 2]), epoch=2)
    assert values[:, 0].tolist() == [201.0, 207.0] and values[:, 1].tolist() == [2.0, 8.0]
    assert SampleTable(num_blocks=1, refresh_epochs=2).known_columns is None


def test_sample_table_lookup_known_gathers_the_known_prefix() -> None:
    from fngd.coefficients import SampleTable

    table = SampleTable(num_blocks=1)
    assert table.lookup_known(torch.tensor([0])) is None  # nothing stored
    table.store(torch.tensor([2, 0, 1]), torch.tensor([[3.0, 1.0, 2.0]]), epoch=0, blocks=[0])
    assert table.lookup_known(torch.tensor([1, 2, 0])).tolist() == [[[2.0]], [[3.0]], [[1.0]]]
    assert table.lookup_known(torch.tensor([1, 3])) is None  # 3: never stored
    assert table.lookup_known(torch.tensor([-1])) is None
    table.store(torch.tensor([3]), torch.tensor([[4.0]]), epoch=1, blocks=[0])
    assert table.lookup_known(torch.tensor([3, 0])).flatten().tolist() == [4.0, 1.0]  # new
    two = SampleTable(num_blocks=2)
    two.store(torch.tensor([0, 1]), torch.tensor([[1.0, 2.0], [3.0, 4.0]]), 0, blocks=[0, 1])
    two.store(torch.tensor([2]), torch.tensor([[5.0]]), epoch=0, blocks=[0])
    assert two.lookup_known(torch.tensor([1, 0])).tolist() == [[[2.0], [4.0]], [[1.0], [3.0]]]
    assert two.lookup_known(torch.tensor([2])) is None  # block 1 lacks sample 2
    refreshed = SampleTable(num_blocks=1, refresh_epochs=2)  # validity depends on the epoch
    refreshed.store(torch.tensor([0]), torch.ones(1, 1), epoch=0, blocks=[0])
    assert refreshed.lookup_known(torch.tensor([0])) is None
