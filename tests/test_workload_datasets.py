"""``from_datasets``: a workload from a model factory, Datasets, a loss and a metric.

The properties the runner and FNGD rely on: the per-sample losses average to the batch
loss, sample ids are positions in the training set (the same sample, the same id, every
epoch), evaluation is the mean over the split, the model starts from the seed's weights,
and a mistake is one error naming the argument.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import fngd
from bench.workloads import Metric, check_workload, from_datasets
from bench.workloads.datasets import per_sample_mse


class Pairs(Dataset):
    """A map-style Dataset of (input, target) pairs, not tensors: the per-item path."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[list[float], float]:
        return self.x[i].tolist(), float(self.y[i])


def data(n: int = 60, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, x @ torch.randn(d, generator=g)


def regression(**overrides: object):
    x, y = data()
    kwargs = dict(
        model=lambda: nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)),
        train=TensorDataset(x[:40], y[:40]),
        val=(x[40:50], y[40:50]),
        test=Pairs(x[50:], y[50:]),
        loss="mse",
        metric="mse",
        target=0.1,
        batch_size=16,
        epochs=2,
        data_source="synthetic",
    )
    kwargs.update(overrides)
    return from_datasets("toy-regression", **kwargs)


def test_it_keeps_the_contract_and_says_what_it_is() -> None:
    w = regression()
    check_workload(w)
    assert (w.metric_name, w.higher_is_better, w.data_source) == ("mse", False, "synthetic")
    assert (w.num_train, w.num_val, w.num_eval) == (40, 10, 10)
    assert w.val_eval_fn is not None


def test_mse_per_sample_averages_to_the_batch_loss_without_broadcasting() -> None:
    w = regression()
    x, y, _ = next(iter(w.train_loader))
    out = w.forward(w.model, x)
    assert out.shape == (len(y), 1)  # (N, 1) outputs against (N,) targets
    expected = nn.functional.mse_loss(out.squeeze(1), y)
    assert torch.allclose(w.loss_fn(out, y), expected)
    assert torch.allclose(w.per_sample_loss(out, y).mean(), expected)
    assert w.per_sample_loss(out, y).shape == (len(y),)
    with pytest.raises(ValueError, match=r"outputs \(3, 2\) and targets \(3,\)"):
        per_sample_mse(torch.zeros(3, 2), torch.zeros(3))


def test_sample_ids_are_positions_in_the_training_set() -> None:
    x, y = data()
    w = regression()
    for epoch in range(2):
        w.train_loader.set_epoch(epoch)
        seen = []
        for xb, yb, ids in w.train_loader:
            assert ids.dtype == torch.int64 and ids.device.type == "cpu"
            assert torch.equal(xb, x[:40][ids]) and torch.equal(yb, y[:40][ids])
            seen += ids.tolist()
        assert sorted(seen) == list(range(40))  # every sample once an epoch


def test_evaluation_is_the_mean_over_the_split() -> None:
    x, y = data()
    w = regression(eval_batch_size=3)  # batches that do not divide the split
    with torch.no_grad():
        out = w.model(x[50:]).squeeze(1)
    mse = ((out - y[50:]) ** 2).mean().item()
    got = w.eval_fn(w.model)
    assert got["mse"] == pytest.approx(mse, rel=1e-5)
    assert got["eval_loss"] == pytest.approx(mse, rel=1e-5)


def test_classification_accuracy_and_a_metric_of_ones_own() -> None:
    x, _ = data(n=30)
    labels = (x[:, 0] > 0).long()
    top = Metric("top1_error", lambda out, t: (out.argmax(1) != t).float(), False)
    w = from_datasets(
        "toy-classes",
        model=lambda: nn.Linear(4, 2),
        train=(x, labels),
        test=(x, labels),
        metric=top,
        target=0.1,
        batch_size=8,
        epochs=1,
    )
    with torch.no_grad():
        error = (w.model(x).argmax(1) != labels).float().mean().item()
    assert w.eval_fn(w.model)["top1_error"] == pytest.approx(error)
    assert not w.reached(error + 0.2) and w.reached(0.05)
    accuracy = from_datasets(
        "toy-classes",
        model=lambda: nn.Linear(4, 2),
        train=(x, labels),
        test=(x, labels),
        target=0.9,
        batch_size=8,
        epochs=1,
    )
    assert accuracy.eval_fn(accuracy.model)["accuracy"] == pytest.approx(1 - error)


def test_the_seed_fixes_the_starting_weights() -> None:
    a, b, c = regression(seed=3), regression(seed=3), regression(seed=4)
    wa, wb, wc = (next(w.model.parameters()) for w in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_fngd_inverts_then_reuses_on_it() -> None:
    """The ids it attaches are what FNGD's second epoch finds its coefficients by."""
    w = regression()
    opt = fngd.build("fngd", w.model, lr=0.05, damping=0.1)
    modes = []
    for epoch in range(2):
        w.train_loader.set_epoch(epoch)
        for x, y, ids in w.train_loader:
            opt.prepare(sample_ids=ids)
            loss = w.loss_fn(w.forward(w.model, x), y)
            opt.zero_grad()
            loss.backward()
            opt.step(sample_ids=ids)
            modes.append(opt.mode)
    per_epoch = len(w.train_loader)
    assert set(modes[:per_epoch]) == {"inversion"}
    assert set(modes[per_epoch:]) == {"weighted_sum"}


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"loss": "hinge"}, ValueError, "loss must be one of cross_entropy, mse"),
        ({"metric": "f1"}, ValueError, "metric must be one of accuracy, mse, mae"),
        ({"epochs": 0}, ValueError, "epochs must be a positive integer, got 0"),
        ({"batch_size": 2.5}, ValueError, "batch_size must be a positive integer, got 2.5"),
        ({"data_source": "made-up"}, ValueError, "data_source must be one of real, synthetic"),
        ({"train": 42}, TypeError, "from_datasets train: expected a torch.utils.data.Dataset"),
        ({"test": (torch.zeros(3, 4), torch.zeros(2))}, ValueError, "3 inputs and 2 targets"),
        ({"size": "huge"}, ValueError, "huge"),
        (
            {"loss": lambda out, t: ((out.squeeze(1) - t) ** 2).mean()},
            ValueError,
            r"the loss must give one value per sample, shape \(2,\) for 2 samples, got \(\)",
        ),
        (
            {"metric": Metric("r", lambda out, t: (out.squeeze(1) - t).abs().mean(), False)},
            ValueError,
            "the metric 'r' must give one value per sample",
        ),
    ],
)
def test_a_mistake_is_one_error_naming_the_argument(overrides, error, match) -> None:
    with pytest.raises(error, match=match):
        regression(**overrides)
