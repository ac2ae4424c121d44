"""Sample ids are checked once, where they enter FNGD: one error naming ``sample_ids``.

Whatever the caller hands ``prepare``/``step``/``staleness`` (a tensor of any integer dtype or
device, a NumPy array, a list) becomes one host int64 1-D tensor; what cannot be a batch's
dataset indices (floats, booleans, 2-D, negative, the wrong number) is refused before any
table is touched, in both phases and both scopes, with the compiled blocks on and off.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fngd import FNGD
from fngd.sample_ids import checked

N = 6


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


def train_step(m: nn.Module, pre: FNGD, ids: object, epoch: int) -> None:
    torch.manual_seed(1)
    x, y = torch.randn(N, 4), torch.randint(0, 2, (N,))
    pre.prepare(sample_ids=ids, epoch=epoch)
    m.zero_grad()
    nn.functional.cross_entropy(m(x), y).backward()
    pre.step(sample_ids=ids, epoch=epoch)


@pytest.mark.parametrize(
    "ids",
    [
        torch.arange(N, dtype=torch.int16),
        np.arange(N, dtype=np.uint8),
        list(range(N)),
        range(N),
    ],
    ids=["int16", "numpy-uint8", "list", "range"],
)
def test_integer_ids_of_any_form_become_host_int64(ids) -> None:
    out = checked(ids, batch=N)
    assert out.dtype is torch.int64 and out.device.type == "cpu" and out.ndim == 1
    assert out.tolist() == list(range(N))


def test_host_int64_ids_are_passed_through_without_a_copy() -> None:
    ids = torch.arange(N)
    assert checked(ids) is ids


@pytest.mark.parametrize(
    ("ids", "error", "words"),
    [
        (torch.arange(N, dtype=torch.float32), TypeError, "expected integer ids, got float32"),
        (np.arange(N) + 0.5, TypeError, "expected integer ids, got float64"),
        (torch.ones(N, dtype=torch.bool), TypeError, "expected integer ids, got bool"),
        ("012345", TypeError, "expected integer ids, got str"),
        (torch.arange(N).reshape(2, 3), ValueError, "expected a 1-D tensor of ids, one per sample"),
        (torch.tensor(3), ValueError, "got shape ()"),
        (torch.tensor([0, 1, -2, 3, 4, 5]), ValueError, "non-negative dataset indices, got -2"),
        (torch.arange(N - 1), ValueError, "5 ids for a batch of 6"),
    ],
    ids=["float-tensor", "float-numpy", "bool", "str", "2-d", "0-d", "negative", "length"],
)
def test_what_is_not_a_batch_of_indices_is_one_error_naming_sample_ids(ids, error, words) -> None:
    with pytest.raises(error, match="^sample_ids: ") as info:
        checked(ids, batch=N)
    assert words in str(info.value)


@pytest.mark.parametrize("native", ["off", "on"])
@pytest.mark.parametrize("scope", ["layer", "network"])
@pytest.mark.parametrize("epoch", [0, 1], ids=["inversion", "weighted-sum"])
def test_ids_of_the_wrong_length_fail_before_any_table_changes(native, scope, epoch) -> None:
    m = model()
    pre = FNGD(m, scope=scope, damping=0.1, native=native)
    train_step(m, pre, torch.arange(N), 0)  # every sample known after epoch 0
    before = pre.sample_table.values.clone()
    with pytest.raises(ValueError, match=r"^sample_ids: 5 ids for a batch of 6$"):
        train_step(m, pre, torch.arange(N - 1), epoch)
    assert torch.equal(pre.sample_table.values, before)
    pre.discard()
    train_step(m, pre, torch.arange(N), epoch)  # the optimiser still works afterwards


@pytest.mark.parametrize("where", ["prepare", "staleness"])
def test_float_ids_are_refused_not_truncated(where) -> None:
    m = model()
    pre = FNGD(m, damping=0.1)
    train_step(m, pre, torch.arange(N), 0)
    ids = torch.arange(N, dtype=torch.float64) + 0.9  # would truncate to 0..5
    call = pre.prepare if where == "prepare" else pre.staleness
    with pytest.raises(TypeError, match="^sample_ids: expected integer ids, got float64 tensor$"):
        call(sample_ids=ids)
