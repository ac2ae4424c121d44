"""Every optimiser builds behind one factory, runs a step, reports phases and memory."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import fngd
from bench.cell.step import train_step
from fngd.optimizers import DEFAULTS, build, names
from fngd.optimizers.base import BenchOptimizer

EXPECTED_PHASES = {
    "sgd": (),
    "adamw": (),
    "kfac": ("kfac/factors", "kfac/inverse", "kfac/precondition"),
    "ngd": ("fngd/gram", "fngd/solve"),
    "fngd": ("fngd/gram", "fngd/solve", "fngd/weighted_sum"),
}
STATE_KEYS = {
    "sgd": {"momentum_buffer"},
    "adamw": {"exp_avg", "exp_avg_sq"},
    "kfac": {"momentum_buffer", "factors", "eigen"},
    "ngd": {"momentum_buffer"},  # exact NGD stores no coefficients
    "fngd": {"momentum_buffer", "coefficients"},
}


class Task:
    """The bits of a workload that ``train_step`` uses."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @staticmethod
    def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    @staticmethod
    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y)


def mlp() -> tuple[nn.Module, torch.Tensor]:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), torch.randn(12, 8)


def cnn() -> tuple[nn.Module, torch.Tensor]:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 4),
    )
    return model, torch.randn(12, 3, 8, 8)


@pytest.mark.parametrize("make", [mlp, cnn], ids=["linear", "conv2d"])
@pytest.mark.parametrize("name", list(EXPECTED_PHASES))
def test_build_and_step(name: str, make) -> None:
    torch.manual_seed(0)
    model, x = make()
    y = torch.randint(0, 4, (12,))
    opt = build(name, model, lr=0.01)
    assert isinstance(opt, BenchOptimizer)
    assert opt.name == name and opt.phases == EXPECTED_PHASES[name]
    assert opt.hparams["lr"] == 0.01
    assert set(DEFAULTS[name]) <= set(opt.hparams)
    before = [p.detach().clone() for p in model.parameters()]
    ids = torch.arange(12)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss = train_step(Task(model), opt, x, y, ids)
    assert torch.isfinite(loss)
    seen = {e.name for e in prof.events()}
    for phase in (*opt.phases, "forward", "backward", "update"):
        if phase != "fngd/weighted_sum":
            assert phase in seen, phase
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    usage = opt.memory_usage()
    assert all(usage[k] > 0 for k in STATE_KEYS[name])
    # A checkpoint restored into a fresh model and optimiser continues exactly as the
    # original does: the same next step, bit for bit (FNGD: its weighted-sum phase).
    twin = copy.deepcopy(model)
    twin_opt = build(name, twin, lr=0.01)
    state = copy.deepcopy(opt.state_dict())
    twin_opt.load_state_dict(state)
    train_step(Task(model), opt, x, y, ids)
    train_step(Task(twin), twin_opt, x, y, ids)
    assert twin_opt.mode == opt.mode
    if name == "fngd":  # the second pass over the same ids is the weighted-sum phase
        assert twin_opt.mode == "weighted_sum"
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    assert twin_opt.memory_usage() == opt.memory_usage()


def test_ngd_is_fngd_without_sharing() -> None:
    model, _ = mlp()
    opt = build("ngd", model)
    assert opt.preconditioner.share == "none" and opt.hparams["share"] == "none"


def test_unknown_name_lists_valid_names() -> None:
    suite = ["adamw", "fngd", "kfac", "muon", "ngd", "psgd-kron", "sf-adamw", "sgd", "soap"]
    with pytest.raises(ValueError, match="valid names: " + ", ".join(suite)):
        build("lbfgs", mlp()[0])
    assert names() == suite  # the suite's own (its rivals too), by name


def test_unknown_hyperparameter_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"'dampening'.*valid: lr, momentum"):
        build("sgd", mlp()[0], dampening=0.1)
    with pytest.raises(ValueError, match="kfac: unknown impl"):
        build("kfac", mlp()[0], impl="other")


def test_kfac_pytorch_impl_is_recorded_or_clearly_missing() -> None:
    from fngd.adapters import kfac_pytorch

    if not kfac_pytorch.available():
        with pytest.raises(ImportError, match="kfac-pytorch"):
            build("kfac", mlp()[0], impl="kfac-pytorch")
        return
    opt = build("kfac", mlp()[0], impl="kfac-pytorch")
    assert opt.impl == "kfac-pytorch" and opt.hparams["impl"] == "kfac-pytorch"
    assert opt.phases == ("kfac-pytorch/step",)


def test_top_level_lazy_exports() -> None:
    assert fngd.FNGD.__name__ == "FNGD" and fngd.KFAC.__name__ == "KFAC"
    assert fngd.build is build
