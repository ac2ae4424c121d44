"""The kfac-pytorch adapter, and the built-in KFAC against kfac-pytorch itself.

The comparisons run only where kfac-pytorch is installed; the missing-package behaviour is
checked always.
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fngd.adapters import kfac_pytorch
from fngd.kfac import KFAC

# kfac-pytorch's module backward hooks warn when the model input needs no gradient.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")

needs_kfac = pytest.mark.skipif(not kfac_pytorch.available(), reason=kfac_pytorch.MISSING_MESSAGE)

HP = dict(
    lr=0.1,
    damping=0.003,
    factor_decay=0.95,
    kl_clip=0.001,
    factor_update_steps=1,
    inv_update_steps=2,
    skip_layers=[],
)


def test_missing_package_raises_import_error_with_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "kfac", None)
    monkeypatch.setitem(sys.modules, "kfac.preconditioner", None)
    assert not kfac_pytorch.available()
    with pytest.raises(ImportError) as info:
        kfac_pytorch.make_preconditioner(nn.Linear(2, 2), **HP)
    assert str(info.value) == kfac_pytorch.MISSING_MESSAGE


def test_missing_message_says_what_and_how():
    msg = kfac_pytorch.MISSING_MESSAGE
    assert "kfac-pytorch" in msg
    assert "pip install git+https://github.com/gpauloski/kfac-pytorch" in msg
    assert "clone" in msg


class SeqNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.proj(x)).mean(1))


def make(kind: str, dtype: torch.dtype) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(
            nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 16, bias=False), nn.ReLU(), nn.Linear(16, 3)
        )
        shape: tuple[int, ...] = (32, 10)
    elif kind == "cnn":
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 6, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(6 * 4 * 4, 3),
        )
        shape = (8, 3, 8, 8)
    elif kind == "seq":
        model, shape = SeqNet(), (8, 5, 6)
    else:
        raise AssertionError(kind)
    return model.to(dtype), shape


def compare(kind, dtype, *, steps=5, **overrides):
    """Max relative difference of the preconditioned gradients, per layer and step."""
    hp = {**HP, **overrides}
    model, shape = make(kind, dtype)
    other = copy.deepcopy(model)
    ours = KFAC(model, **hp)
    theirs = kfac_pytorch.make_preconditioner(other, **hp)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (model, other)]
    preconditioned = {id(p) for b in ours.blocks.values() for p in b.helper.module.parameters()}
    worst = 0.0
    modes = []
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(*shape, generator=g).to(dtype)
        y = torch.randint(0, 3, (shape[0],), generator=g)
        raw = []
        for m, pre, opt in zip((model, other), (ours, theirs), opts, strict=True):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            raw.append([p.grad.clone() for p in m.parameters()])
            pre.step()
        assert ours.mode == theirs.mode
        modes.append(ours.mode)
        params = zip(model.parameters(), other.parameters(), *raw, strict=True)
        for a, b, ra, rb in params:
            if id(a) in preconditioned:
                assert not torch.allclose(b.grad, rb)  # kfac-pytorch did precondition
            else:
                assert torch.equal(a.grad, ra) and torch.equal(b.grad, rb)  # skipped layer
            worst = max(worst, ((a.grad - b.grad).norm() / b.grad.norm()).item())
        for opt in opts:
            opt.step()
    return worst, modes, ours, theirs


@needs_kfac
@pytest.mark.parametrize("kind", ["mlp", "cnn", "seq"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_builtin_matches_kfac_pytorch(kind, dtype):
    worst, modes, ours, theirs = compare(kind, dtype)
    assert worst < 1e-5, worst
    assert modes == ["inverse", "no_inverse"] * 2 + ["inverse"]
    assert ours.memory_usage() == theirs.memory_usage()
    assert ours.memory_usage()["factors"] > 0 and ours.memory_usage()["eigen"] > 0


@needs_kfac
@pytest.mark.parametrize(
    "overrides",
    [
        dict(kl_clip=None),
        dict(kl_clip=10.0),
        dict(factor_update_steps=2, inv_update_steps=4, damping=0.01),
        dict(update_factors_in_hook=True),
        dict(skip_layers=["^2$"]),
        dict(compute_eigenvalue_outer_product=False, damping=0.3),
        dict(factor_decay=0.7),
    ],
)
def test_builtin_matches_kfac_pytorch_options(overrides):
    worst, *_ = compare("cnn", torch.float32, steps=4, **overrides)
    assert worst < 1e-5, (overrides, worst)


@needs_kfac
def test_adapter_surface_and_phase():
    model, shape = make("mlp", torch.float32)
    pre = kfac_pytorch.make_preconditioner(model, **HP)
    assert pre.phases == ("kfac-pytorch/step",)
    assert pre.mode is None and pre.lr == 0.1
    x, y = torch.randn(*shape), torch.randint(0, 3, (shape[0],))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        F.cross_entropy(model(x), y).backward()
        pre.step()
    assert "kfac-pytorch/step" in {e.name for e in prof.events()}
    assert pre.mode == "inverse" and pre.steps == 1
    state = pre.state_dict()
    assert state["steps"] == 1 and set(state["layers"]) == {"0", "2", "4"}

    other = copy.deepcopy(model)
    pre2 = kfac_pytorch.make_preconditioner(other, **HP)
    pre2.load_state_dict(copy.deepcopy(state))
    assert pre2.steps == 1
    layer = dict(pre2.inner._layers.values())["0"]
    torch.testing.assert_close(layer.a_factor, state["layers"]["0"]["A"])
    assert layer.qa is not None  # eigendecompositions recomputed on load


@needs_kfac
def test_adapter_remove_detaches_hooks():
    model, shape = make("mlp", torch.float32)
    pre = kfac_pytorch.make_preconditioner(model, **HP)
    pre.remove()
    assert all(not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())
    F.cross_entropy(model(torch.randn(*shape)), torch.randint(0, 3, (shape[0],))).backward()
    assert all(layer._a_batch is None for _, layer in pre.inner._layers.values())


class _Recorder:
    """Stands in for ``kfac.preconditioner.KFACPreconditioner``: keeps what it was given."""

    def __init__(self, model, **settings):
        self.model, self.settings = model, settings


def _fake_kfac(monkeypatch) -> None:
    import types

    package = types.ModuleType("kfac")
    module = types.ModuleType("kfac.preconditioner")
    module.KFACPreconditioner = _Recorder
    package.preconditioner = module
    monkeypatch.setitem(sys.modules, "kfac", package)
    monkeypatch.setitem(sys.modules, "kfac.preconditioner", module)


def test_adapter_passes_kfac_pytorchs_distributed_settings_through(monkeypatch):
    from fngd.optimizers import build

    _fake_kfac(monkeypatch)
    plain = kfac_pytorch.make_preconditioner(nn.Linear(2, 2), **HP).inner.settings
    assert {k: plain[k] for k in kfac_pytorch.ONE_PROCESS} == kfac_pytorch.ONE_PROCESS
    options = {"grad_worker_fraction": 0.5, "allreduce_bucket_cap_mb": 25}
    opt = build("kfac", nn.Linear(2, 2), impl="kfac-pytorch", kfac_pytorch_options=options)
    settings = opt.preconditioner.inner.settings
    assert {k: settings[k] for k in options} == options
    assert opt.hparams["kfac_pytorch_options"] == options


def test_kfac_pytorch_options_need_the_kfac_pytorch_impl():
    from fngd.optimizers import build

    with pytest.raises(ValueError, match="need impl='kfac-pytorch'"):
        build("kfac", nn.Linear(2, 2), kfac_pytorch_options={"grad_worker_fraction": 0.5})
