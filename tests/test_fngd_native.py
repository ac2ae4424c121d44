"""The compiled weighted-sum blocks give the Python blocks' gradients, and run where they should."""

from __future__ import annotations

import pytest
import torch

from fngd import FNGD
from fngd.blocks import base as block_base
from fngd.blocks import native
from fngd.optimizers import build
from tests.fngd_reference import rel_err
from tests.test_fngd_exact import CASES, squared_error

needs_native = pytest.mark.skipif(
    native.kernels("auto") is None, reason="the compiled blocks do not build here"
)


def _step(model: torch.nn.Module, pre: FNGD, x: torch.Tensor, y: torch.Tensor) -> None:
    """One training step on the whole batch (ids 0..N-1): prepare, forward, backward, step."""
    ids = torch.arange(len(x))
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    squared_error(model(x), y).mean().backward()
    pre.step(sample_ids=ids)


def _steps(
    case: str, bias: bool, reduction: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[torch.Tensor], FNGD, int]:
    """An inverting first step, then a weighted-sum step on the same samples reordered:
    that step's gradients, the preconditioner and the Python block function's calls in it."""
    torch.manual_seed(0)
    model, _, x, y = CASES[case](bias)
    model, x, y = model.double(), x.double(), y.double()
    pre = FNGD(model, damping=0.1, loss_reduction=reduction, native=mode)

    def step(ids: torch.Tensor) -> None:
        model.zero_grad(set_to_none=True)
        pre.prepare(sample_ids=ids)
        losses = squared_error(model(x[ids]), y[ids])
        (losses.mean() if reduction == "mean" else losses.sum()).backward()
        pre.step(sample_ids=ids)

    step(torch.arange(len(x)))
    calls: list[int] = []
    apply = block_base._apply
    with monkeypatch.context() as m:
        m.setattr(block_base, "_apply", lambda *a: calls.append(1) or apply(*a))
        step(torch.arange(len(x)).flip(0))
    assert pre.mode == "weighted_sum"
    return [p.grad for p in model.parameters()], pre, len(calls)


@needs_native
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_compiled_blocks_give_the_python_blocks_gradients(
    case: str, bias: bool, reduction: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled, on, on_calls = _steps(case, bias, reduction, "on", monkeypatch)
    python, off, off_calls = _steps(case, bias, reduction, "off", monkeypatch)
    assert (on.native, off.native) == ("on", "off")
    assert on_calls == 0 and off_calls == len(off.blocks)  # which path each step took
    for a, b in zip(compiled, python, strict=True):
        assert rel_err(a, b) < 1e-12


@needs_native
def test_compiled_blocks_give_the_input_gradient_too() -> None:
    """An input that needs a gradient gets the one the Python block gives."""
    torch.manual_seed(0)
    model, _, x, y = CASES["linear_2d"](True)
    model = model.double()
    x = x.double().requires_grad_()
    grads = {}
    for mode in ("on", "off"):
        pre = FNGD(model, damping=0.1, native=mode)
        for _ in range(2):
            x.grad = None
            _step(model, pre, x, y.double())
        grads[mode] = x.grad.clone()
        pre.remove()
    assert rel_err(grads["on"], grads["off"]) < 1e-12


@needs_native
def test_a_frozen_bias_gets_no_gradient_from_either_block() -> None:
    grads = {}
    for mode in ("on", "off"):
        torch.manual_seed(0)
        model, _, x, y = CASES["conv2d"](True)
        model, x, y = model.double(), x.double(), y.double()
        model[0].bias.requires_grad_(False)
        model[4].bias.requires_grad_(False)
        pre = FNGD(model, damping=0.1, native=mode)
        for _ in range(2):
            _step(model, pre, x, y)
        assert pre.mode == "weighted_sum"
        assert model[0].bias.grad is None and model[4].bias.grad is None
        grads[mode] = [p.grad for p in model.parameters() if p.requires_grad]
    for a, b in zip(grads["on"], grads["off"], strict=True):
        assert rel_err(a, b) < 1e-12


@needs_native
def test_a_forward_without_gradients_leaves_the_step_alone() -> None:
    torch.manual_seed(0)
    model, _, x, y = CASES["linear_2d"](True)
    model, x, y = model.double(), x.double(), y.double()
    pre = FNGD(model, damping=0.1, native="on")
    _step(model, pre, x, y)  # inverts
    ids = torch.arange(len(x))
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    with torch.no_grad():
        model(x)  # e.g. an evaluation between prepare() and the training forward
    assert pre.state is not None and pre.state.summed == []
    squared_error(model(x), y).mean().backward()
    pre.step(sample_ids=ids)
    assert pre.mode == "weighted_sum"
    with_eval = [p.grad.clone() for p in model.parameters()]
    _step(model, pre, x, y)
    assert all(torch.equal(a, p.grad) for a, p in zip(with_eval, model.parameters(), strict=True))


@needs_native
def test_a_model_cast_after_fngd_was_built_gets_the_python_blocks_gradients() -> None:
    """The table keeps the dtype it was built with; the compiled block casts the scale."""
    grads = {}
    for mode in ("on", "off"):
        torch.manual_seed(0)
        model, _, x, y = CASES["conv2d"](True)
        model = model.double()
        pre = FNGD(model, damping=0.1, native=mode)
        model.float()
        for _ in range(2):
            _step(model, pre, x, y)
        assert pre.mode == "weighted_sum"
        grads[mode] = [p.grad for p in model.parameters()]
    for a, b in zip(grads["on"], grads["off"], strict=True):
        assert a.dtype == torch.float32 and rel_err(a, b) < 1e-5


@needs_native
def test_the_input_gradient_alone_skips_the_weighted_sum() -> None:
    torch.manual_seed(0)
    model, _, x, y = CASES["linear_seq"](True)
    model, x, y = model.double(), x.double().requires_grad_(), y.double()
    got = {}
    for mode in ("on", "off"):
        pre = FNGD(model, damping=0.1, native=mode)
        _step(model, pre, x, y)  # inverts
        model.zero_grad(set_to_none=True)
        pre.prepare(sample_ids=torch.arange(len(x)))
        (got[mode],) = torch.autograd.grad(squared_error(model(x), y).mean(), x)
        assert all(p.grad is None for p in model.parameters())
        pre.discard()
        pre.remove()
    assert rel_err(got["on"], got["off"]) < 1e-12


def test_only_layer_scope_with_reuse_builds_the_compiled_blocks() -> None:
    model, *_ = CASES["linear_2d"](True)
    assert FNGD(model, scope="network").native == "off"
    assert FNGD(model, share="none").native == "off"
    assert FNGD(model, native="off").native == "off"


def test_unknown_native_choice_is_one_clear_error() -> None:
    model, *_ = CASES["linear_2d"](True)
    for kwargs in ({}, {"scope": "network"}):
        with pytest.raises(ValueError, match="unknown native 'fast'; valid: auto, on, off"):
            FNGD(model, native="fast", **kwargs)


def test_a_failed_build_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.utils.cpp_extension as cpp

    def fail(**_: object) -> None:
        raise RuntimeError("Error building extension 'fngd_weighted_sum'\nno compiler")

    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_error", None)
    monkeypatch.setattr(cpp, "load", fail)
    with pytest.warns(RuntimeWarning, match="falls back to its Python block function"):
        assert native.kernels("auto") is None
    model, *_ = CASES["linear_2d"](True)
    assert FNGD(model).native == "off"  # the same process does not try again
    with pytest.raises(RuntimeError, match="could not be built: RuntimeError: no compiler"):
        FNGD(model, native="on")


def test_environment_turns_auto_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FNGD_NATIVE", "off")
    model, *_ = CASES["linear_2d"](True)
    assert FNGD(model).native == "off"


@needs_native
def test_records_keep_what_ran() -> None:
    model, *_ = CASES["linear_2d"](True)
    assert build("fngd", model).hparams["native"] == "on"
    assert build("fngd", model, native="off").hparams["native"] == "off"
    assert build("ngd", model).hparams["native"] == "off"


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch, capsys):
    """A build killed half-way leaves torch's lock file, on which every later build would
    wait for ever; one older than ``STALE_LOCK_SECONDS`` is removed, a running build's kept."""
    import os
    import time

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = native.build_directory()
    assert folder.parent == tmp_path and folder.name.startswith(f"{native.NAME}-")
    lock = folder / "lock"
    lock.touch()
    native._clear_stale_lock(folder)
    assert lock.exists()  # a build may be running
    old = time.time() - native.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    native._clear_stale_lock(folder)
    assert not lock.exists()
    assert "removed a stale build lock" in capsys.readouterr().err
