"""The sample table's memory follows the samples seen: sparse ids (10**9, 2**62) store and
look up like dense ones, in rows for the ids seen, and give the same training."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from fngd import FNGD
from fngd.coefficients import SampleTable

F64 = torch.float64


def _coeffs(ids: torch.Tensor, blocks: int) -> torch.Tensor:
    """A distinct value per (block, id), so that a wrong row shows."""
    return torch.stack([ids.double() % 9973 + 0.25 * b + 1 for b in range(blocks)])


def _same(a, b) -> None:
    assert (a is None) == (b is None)
    if a is not None:
        assert torch.equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("big", [10**9, 2**62 - 1])
def test_a_huge_id_stores_and_looks_up_in_memory_for_the_ids_seen(big: int) -> None:
    t = SampleTable(2)
    ids = torch.tensor([big, 3, big - 5])
    t.store(ids, _coeffs(ids, 2), 0, [0, 1])
    assert t.sparse
    c, known = t.lookup(torch.tensor([big - 5, big]), 0)
    assert torch.equal(c, _coeffs(torch.tensor([big - 5, big]), 2))
    assert known.tolist() == [True, True]
    assert t.lookup(torch.tensor([big - 1]), 0) is None
    assert t.lookup(torch.tensor([2**62]), 0) is None
    # a few rows of float64 values, int64 epochs, one known flag, an int64 id and row each
    assert t.nbytes() <= 2 * len(ids) * (2 * 8 + 2 * 8 + 1 + 8 + 8)


def test_lookups_equal_the_dense_tables_on_random_id_sets() -> None:
    rng = np.random.default_rng(0)
    dense, sparse = SampleTable(3), SampleTable(3)
    spread = 10**9 + 7  # sparse id = spread * dense id + 11
    for _ in range(30):
        ids = torch.from_numpy(rng.choice(400, size=8, replace=False))
        blocks = sorted(rng.choice(3, size=int(rng.integers(1, 4)), replace=False).tolist())
        c = _coeffs(ids, 3)
        dense.store(ids, c, 0, blocks)
        sparse.store(ids * spread + 11, c, 0, blocks)
    assert sparse.sparse and not dense.sparse
    for _ in range(200):
        ids = torch.from_numpy(rng.choice(420, size=int(rng.integers(1, 12)), replace=False))
        _same(dense.lookup(ids, 0), sparse.lookup(ids * spread + 11, 0))
    assert sparse.nbytes() < dense.nbytes() + 400 * (8 + 8)  # rows for the ids seen


def test_mixed_ids_turn_sparse_and_back_to_dense() -> None:
    t = SampleTable(1)
    first = torch.arange(100)
    t.store(first, _coeffs(first, 1), 0, [0])
    assert not t.sparse and t.lookup_known(first) is not None
    t.store(torch.tensor([5000]), _coeffs(torch.tensor([5000]), 1), 0, [0])
    assert t.sparse  # 5000 > 4 x 101 ids + 1024
    assert t.lookup_known(first) is None  # rows are not ids: the general lookup decides
    for start in range(100, 5000, 250):
        ids = torch.arange(start, min(start + 250, 5000))
        t.store(ids, _coeffs(ids, 1), 0, [0])
    assert not t.sparse  # dense again once the ids seen fill 0..5000
    every = torch.arange(5001)
    assert torch.equal(t.lookup_known(every).flatten(), _coeffs(every, 1)[0])
    c, _ = t.lookup(torch.tensor([5000, 0, 4999]), 0)
    assert torch.equal(c, _coeffs(torch.tensor([5000, 0, 4999]), 1))


def test_validity_per_block_and_refresh_on_a_sparse_table() -> None:
    t = SampleTable(2, refresh_epochs=2)
    ids = torch.tensor([10**9, 2**40])
    t.store(ids, _coeffs(ids, 2), 1, [0])  # block 1 did not run
    c, known = t.lookup(ids, 1)
    assert known.tolist() == [True, False]
    assert torch.equal(c[0], _coeffs(ids, 2)[0])
    assert t.lookup(ids, 2) is None  # epoch 2: a new refresh window
    t.store(ids[:1], _coeffs(ids[:1], 2), 2, [0, 1])
    assert t.lookup(ids[:1], 3)[1].tolist() == [True, True]
    assert t.lookup(ids, 3) is None  # 2**40's block 0 is from epoch 1, stale in window 1


def test_sparse_state_round_trips() -> None:
    t = SampleTable(2)
    ids = torch.tensor([7, 10**9, 2**50])
    t.store(ids, _coeffs(ids, 2), 4, [0, 1])
    buf = io.BytesIO()
    torch.save(t.state_dict(), buf)
    buf.seek(0)
    back = SampleTable(2)
    back.load_state_dict(torch.load(buf))
    assert back.sparse and back.nbytes() == t.nbytes()
    _same(back.lookup(ids, 4), t.lookup(ids, 4))
    more = torch.tensor([2**51])
    back.store(more, _coeffs(more, 2), 5, [1])
    assert back.lookup(more, 5)[1].tolist() == [False, True]
    _same(back.lookup(ids, 4), t.lookup(ids, 4))


def test_an_old_dense_state_dict_loads() -> None:
    """The form saved before the table could be sparse: (blocks, capacity) and no index."""
    old = {
        "values": torch.tensor([[1.0, 0.0, 0.0, 4.0], [5.0, 0.0, 0.0, 0.0]], dtype=F64),
        "stored_epoch": torch.tensor([[0, -1, -1, 0], [0, -1, -1, -1]]),
    }
    t = SampleTable(2)
    t.load_state_dict(old)
    assert not t.sparse
    c, known = t.lookup(torch.tensor([0]), 0)
    assert c.flatten().tolist() == [1.0, 5.0] and known.tolist() == [True, True]
    c, known = t.lookup(torch.tensor([3, 0]), 0)
    assert known.tolist() == [True, False] and c[0].tolist() == [4.0, 1.0]
    assert t.lookup(torch.tensor([1]), 0) is None
    t.store(torch.tensor([10**9]), torch.tensor([[9.0], [8.0]], dtype=F64), 1, [0, 1])
    assert t.sparse
    assert t.lookup(torch.tensor([10**9, 0]), 1)[0].tolist() == [[9.0, 1.0], [8.0, 5.0]]
    assert t.lookup(torch.tensor([3]), 1)[1].tolist() == [True, False]


def test_memory_usage_counts_stored_epochs_and_the_index() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    pre = FNGD(model, damping=0.1, share="sample")
    for ids in (torch.arange(6), torch.tensor([10**9, 10**10])):
        x = torch.randn(len(ids), 4)
        model.zero_grad(set_to_none=True)
        model(x).pow(2).sum().backward()
        pre.step(sample_ids=ids)
    t = pre.sample_table
    held = t.values.numel() * 4 + t.stored_epoch.nbytes + t.stored_epoch.shape[1]
    held += t.sample_ids.nbytes + t.rows.nbytes
    assert pre.memory_usage() == {"coefficients": held}
    assert held > 3 * t.values.numel() * 4  # float32 values are the smaller part


def _train(ids_of: dict[int, int], epochs: int = 3) -> list[torch.Tensor]:
    """Gradients of a few epochs, each sample keyed by ``ids_of[its position]``."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = torch.randn(12, 5, dtype=F64), torch.randint(0, 3, (12,))
    pre = FNGD(model, damping=0.05, share="sample")
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    order = torch.Generator().manual_seed(5)
    grads = []
    for _ in range(epochs):
        for batch in torch.randperm(12, generator=order).split(4):
            ids = torch.tensor([ids_of[int(i)] for i in batch])
            model.zero_grad(set_to_none=True)
            pre.prepare(sample_ids=ids)
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            pre.step(sample_ids=ids)
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
            opt.step()
    assert pre.mode == "weighted_sum"
    return grads


def test_training_with_sparse_ids_equals_training_with_dense_ids() -> None:
    dense = _train({i: i for i in range(12)})
    sparse = _train({i: 2**62 - 1 - i * 10**12 for i in range(12)})
    assert len(dense) == 9
    for a, b in zip(dense, sparse, strict=True):
        assert torch.equal(a, b)
