"""Network scope: one coefficient vector from the summed Gram, shared by every block.

Its ``.grad`` is the dense damped NGD of the whole parameter vector; reuse works as in layer
scope; ``loss_weights`` turns a later step into a plain backward of the reweighted loss.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fngd import FNGD, KFAC, phases
from fngd.blocks import base as block_base
from fngd.optimizers import build
from tests.fngd_reference import (
    block_grad,
    network_coefficients,
    network_natural_gradient,
    per_sample_block_grads,
    rel_err,
)
from tests.test_fngd_exact import CASES, squared_error
from tests.test_fngd_robustness import TwoHeads, sq

DAMPING = 0.1


def ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y, reduction="none")


def reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    return losses.mean() if reduction == "mean" else losses.sum()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_grad_is_whole_network_natural_gradient(case: str, bias: bool, reduction: str) -> None:
    torch.manual_seed(0)
    model, blocks, x, y = CASES[case](bias)
    model, x, y = model.double(), x.double(), y.double()
    expected = network_natural_gradient(
        per_sample_block_grads(model, x, y, squared_error, blocks), DAMPING, reduction
    )
    pre = FNGD(model, damping=DAMPING, share="none", scope="network", loss_reduction=reduction)
    reduce(squared_error(model(x), y), reduction).backward()
    pre.step()
    assert pre.mode == "inversion"
    assert pre.last_solve is not None and pre.last_solve.methods == ["cholesky"]  # one solve
    for name in blocks:
        assert rel_err(block_grad(model, name), expected[name]) < 1e-8, name


def test_layer_scope_is_not_the_whole_network_natural_gradient() -> None:
    """The test above can fail: block-diagonal NGD differs from whole-network NGD."""
    torch.manual_seed(0)
    model, blocks, x, y = CASES["linear_2d"](True)
    model, x, y = model.double(), x.double(), y.double()
    expected = network_natural_gradient(
        per_sample_block_grads(model, x, y, squared_error, blocks), DAMPING
    )
    pre = FNGD(model, damping=DAMPING, share="none", scope="layer")
    squared_error(model(x), y).mean().backward()
    pre.step()
    assert rel_err(block_grad(model, "0"), expected["0"]) > 1e-3


def make() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    return model, torch.randn(8, 6).double(), torch.randint(0, 3, (8,))


BLOCKS = ["0", "2"]
BATCHES = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])]


def step(
    model: nn.Module, pre: FNGD, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, *,
    prepare: bool = True, reweight: bool = False,
) -> torch.Tensor | None:
    """One training step's gradient; returns the loss weights it used (or None)."""
    model.zero_grad(set_to_none=True)
    if prepare:
        pre.prepare(sample_ids=ids)
    w = pre.loss_weights(ids) if reweight else None
    losses = ce(model(x[ids]), y[ids])
    (losses.mean() if w is None else (w * losses).mean()).backward()
    pre.step(sample_ids=ids)
    return w


@pytest.mark.parametrize("share", ["sample", "iteration"])
@pytest.mark.parametrize("prepare", [True, False], ids=["sum-in-backward", "sum-in-step"])
def test_later_pass_reuses_the_one_vector(share: str, prepare: bool) -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, share=share, scope="network", steps_per_epoch=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    stored = {}
    for k, ids in enumerate(BATCHES):
        stored[k] = network_coefficients(
            per_sample_block_grads(model, x[ids], y[ids], ce, BLOCKS), DAMPING
        )
        step(model, pre, x, y, ids, prepare=prepare)
        assert pre.mode == "inversion"
        opt.step()
    assert pre.counts["solve"] == 2
    ids = BATCHES[0]  # epoch 1, iteration 0: the same samples, new weights
    g = per_sample_block_grads(model, x[ids], y[ids], ce, BLOCKS)
    step(model, pre, x, y, ids, prepare=prepare)
    assert pre.mode == "weighted_sum" and pre.counts["solve"] == 2
    for name in BLOCKS:
        assert rel_err(block_grad(model, name), g[name].T @ stored[0]) < 1e-8, name


def _second_epoch_grads(reweight: bool, reduction: str) -> tuple[list[torch.Tensor], FNGD]:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, scope="network", loss_reduction=reduction)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)

    def one(ids: torch.Tensor) -> None:
        model.zero_grad(set_to_none=True)
        pre.prepare(sample_ids=ids)
        w = pre.loss_weights(ids) if reweight else None
        losses = ce(model(x[ids]), y[ids])
        if w is not None:
            losses = w * losses
        reduce(losses, reduction).backward()
        pre.step(sample_ids=ids)

    for ids in BATCHES:
        one(ids)
        opt.step()
    one(BATCHES[1])
    return [p.grad.clone() for p in model.parameters()], pre


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reweighted_loss_gives_the_plain_patterns_gradient(reduction: str) -> None:
    plain, pre_plain = _second_epoch_grads(False, reduction)
    reweighted, pre = _second_epoch_grads(True, reduction)
    assert pre.mode == pre_plain.mode == "weighted_sum"
    assert pre.counts == pre_plain.counts
    for a, b in zip(plain, reweighted, strict=True):
        assert rel_err(b, a) < 1e-10


class PhaseLog:
    def __init__(self) -> None:
        self.names: list[str] = []

    def begin(self, name: str) -> str:
        self.names.append(name)
        return name

    def end(self, token: object) -> None:
        pass


def test_reweighted_backward_runs_no_block_function(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, scope="network")
    ids = BATCHES[0]
    step(model, pre, x, y, ids)
    calls = []
    apply = block_base._apply
    monkeypatch.setattr(block_base, "_apply", lambda *a: calls.append(1) or apply(*a))
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    w = pre.loss_weights(ids)
    assert w is not None and w.shape == (4,) and w.dtype == torch.float64
    assert not w.requires_grad
    log = PhaseLog()
    previous = phases.set_recorder(log)
    try:
        (w * ce(model(x[ids]), y[ids])).mean().backward()
    finally:
        phases.set_recorder(previous)
    assert calls == [] and phases.FNGD_WEIGHTED_SUM not in log.names
    before = [p.grad.clone() for p in model.parameters()]
    pre.step(sample_ids=ids)
    assert pre.mode == "weighted_sum"
    assert all(torch.equal(a, p.grad) for a, p in zip(before, model.parameters(), strict=True))
    # the block's own forward is back for the next step
    step(model, pre, x, y, ids)
    assert calls


def test_loss_weights_is_n_times_the_stored_vector() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, scope="network")
    ids = BATCHES[0]
    c = network_coefficients(per_sample_block_grads(model, x[ids], y[ids], ce, BLOCKS), DAMPING)
    step(model, pre, x, y, ids)
    pre.prepare(sample_ids=ids)
    w = pre.loss_weights(ids)
    assert w is not None and rel_err(w, 4 * c) < 1e-10
    assert pre.loss_weights() is w  # asking again: the same weights
    with pytest.raises(RuntimeError, match="other sample_ids"):
        pre.loss_weights(BATCHES[1])
    pre.discard()


@pytest.mark.parametrize(
    "kwargs", [{"scope": "layer"}, {"scope": "network", "share": "none"}], ids=["layer", "ngd"]
)
def test_loss_weights_is_none_where_no_vector_is_shared(kwargs: dict) -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, **kwargs)
    for _ in range(2):
        pre.prepare(sample_ids=BATCHES[0])
        assert pre.loss_weights(BATCHES[0]) is None
        step(model, pre, x, y, BATCHES[0])


def test_loss_weights_is_none_before_prepare_and_for_a_batch_that_inverts() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, scope="network")
    assert pre.loss_weights() is None
    pre.prepare(sample_ids=BATCHES[0])
    assert pre.loss_weights(BATCHES[0]) is None
    assert step(model, pre, x, y, BATCHES[0], reweight=True) is None
    assert pre.mode == "inversion"


def test_a_forward_before_loss_weights_still_gets_the_reweighted_gradient() -> None:
    _, pre_plain = _second_epoch_grads(False, "mean")
    plain = [p.grad.clone() for p in pre_plain._params]
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, scope="network")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for ids in BATCHES:
        step(model, pre, x, y, ids)
        opt.step()
    ids = BATCHES[1]
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    out = model(x[ids])  # the block functions are in this graph
    w = pre.loss_weights(ids)
    assert w is not None
    (w * ce(out, y[ids])).mean().backward()
    pre.step(sample_ids=ids)
    for a, p in zip(plain, model.parameters(), strict=True):
        assert rel_err(p.grad, a) < 1e-10


def _norm_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 5), nn.Linear(5, 2)
    ).double()
    return model, torch.randn(8, 4).double(), torch.randn(8, 2).double()


NORM_BLOCKS = ["0", "3"]  # "4" is skipped: a non-block layer like the LayerNorm "1"
OTHER = ["1.weight", "1.bias", "4.weight", "4.bias"]


def _other_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {k: params[k].grad.clone() for k in OTHER}


def test_other_parameters_get_the_plain_gradient_in_both_phases() -> None:
    model, x, y = _norm_model()
    pre = FNGD(model, damping=DAMPING, scope="network", skip_layers=["^4$"])
    ids = torch.arange(8)
    for phase_name in ("inversion", "weighted_sum"):
        g = per_sample_block_grads(model, x, y, sq, NORM_BLOCKS + ["1", "4"])
        c = network_coefficients({k: g[k] for k in NORM_BLOCKS}, DAMPING)
        model.zero_grad(set_to_none=True)
        pre.prepare(sample_ids=ids)
        sq(model(x), y).mean().backward()
        pre.step(sample_ids=ids)
        assert pre.mode == phase_name
        other = _other_grads(model)
        for name in ("1", "4"):  # the mean loss's gradient
            got = torch.cat([other[f"{name}.weight"].flatten(), other[f"{name}.bias"]])
            assert rel_err(got, g[name].mean(0)) < 1e-10, (phase_name, name)
        for name in NORM_BLOCKS:  # K from the blocks only
            assert rel_err(block_grad(model, name), g[name].T @ c) < 1e-8, (phase_name, name)


def test_reweighted_other_parameters_get_the_weighted_sum() -> None:
    model, x, y = _norm_model()
    pre = FNGD(model, damping=DAMPING, scope="network", skip_layers=["^4$"])
    ids = torch.arange(8)
    step_sq(model, pre, x, y, ids, reweight=True)
    g = per_sample_block_grads(model, x, y, sq, NORM_BLOCKS + ["1", "4"])
    c = network_coefficients({k: g[k] for k in NORM_BLOCKS}, DAMPING)
    step_sq(model, pre, x, y, ids, reweight=True)
    assert pre.mode == "weighted_sum"
    other = _other_grads(model)
    for name in ("1", "4"):
        got = torch.cat([other[f"{name}.weight"].flatten(), other[f"{name}.bias"]])
        assert rel_err(got, g[name].T @ c) < 1e-10, name
    for name in NORM_BLOCKS:
        assert rel_err(block_grad(model, name), g[name].T @ c) < 1e-8, name


def step_sq(model, pre, x, y, ids, reweight: bool) -> None:  # noqa: ANN001
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    w = pre.loss_weights(ids) if reweight else None
    losses = sq(model(x[ids]), y[ids])
    (losses.mean() if w is None else (w * losses).mean()).backward()
    pre.step(sample_ids=ids)


def test_branch_not_taken_adds_nothing_and_later_reuses_the_vector() -> None:
    torch.manual_seed(0)
    model = TwoHeads().double()
    x, y, ids = torch.randn(6, 4).double(), torch.randn(6, 2).double(), torch.arange(6)
    pre = FNGD(model, damping=DAMPING, share="sample", scope="network")
    g = per_sample_block_grads(model, x, y, sq, ["trunk", "a", "b"])
    ran = {k: g[k] for k in ("trunk", "a")}
    expected = network_natural_gradient(ran, DAMPING)
    c = network_coefficients(ran, DAMPING)
    step_sq(model, pre, x, y, ids, reweight=False)
    assert pre.mode == "inversion" and model.b.weight.grad is None
    for name in ("trunk", "a"):
        assert rel_err(block_grad(model, name), expected[name]) < 1e-8, name
    model.head = "b"  # the same samples through the other head: the stored vector serves it
    step_sq(model, pre, x, y, ids, reweight=False)
    assert pre.mode == "weighted_sum" and model.a.weight.grad is None
    gb = per_sample_block_grads(model, x, y, sq, ["trunk", "b"])
    for name in ("trunk", "b"):
        assert rel_err(block_grad(model, name), gb[name].T @ c) < 1e-8, name


def test_network_table_holds_one_row() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, scope="network")
    step(model, pre, x, y, BATCHES[0])
    assert pre.sample_table.values is not None and pre.sample_table.values.shape[0] == 1


def test_checkpoint_of_another_scope_is_refused() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, scope="network")
    step(model, pre, x, y, BATCHES[0])
    with pytest.raises(ValueError, match="scope"):
        FNGD(make()[0], damping=DAMPING).load_state_dict(pre.state_dict())
    other = FNGD(make()[0], damping=DAMPING, scope="network")
    other.load_state_dict(pre.state_dict())
    assert torch.equal(other.sample_table.values, pre.sample_table.values)


def test_bad_scope() -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        FNGD(make()[0], scope="model")  # type: ignore[arg-type]


def test_optimiser_surface_delegates_loss_weights() -> None:
    model, x, y = make()
    opt = build("fngd", model, scope="network", damping=DAMPING, lr=0.1)
    assert opt.hparams["scope"] == "network"
    ids = BATCHES[0]
    for expect_weights in (False, True):
        opt.zero_grad()
        opt.prepare(sample_ids=ids)
        w = opt.loss_weights(sample_ids=ids)
        assert (w is not None) is expect_weights
        losses = ce(model(x[ids]), y[ids])
        (losses.mean() if w is None else (w * losses).mean()).backward()
        opt.step(sample_ids=ids)
    assert opt.mode == "weighted_sum"
    assert build("sgd", make()[0]).loss_weights() is None
    assert KFAC(make()[0]).loss_weights() is None
    assert build("kfac", make()[0]).loss_weights() is None


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reweighted_loss_is_the_weighted_reduction_and_gives_the_same_step(reduction: str) -> None:
    """``reweighted_loss(l)`` is ``(w * l).mean()`` (``.sum()``) and backpropagates to the
    same ``.grad``; it needs ``reweight()`` first."""
    grads = []
    for use_dot in (False, True):
        model, x, y = make()
        pre = FNGD(model, damping=DAMPING, scope="network", loss_reduction=reduction)
        ids = BATCHES[0]
        step(model, pre, x, y, ids)
        model.zero_grad(set_to_none=True)
        pre.prepare(sample_ids=ids)
        with pytest.raises(RuntimeError, match="needs reweight"):
            pre.reweighted_loss(torch.ones(4, dtype=torch.float64))
        assert pre.reweight(ids) is True
        losses = ce(model(x[ids]), y[ids])
        w = pre.loss_weights(ids)
        expected = reduce(w * losses, reduction)
        objective = pre.reweighted_loss(losses)
        assert objective.shape == () and rel_err(objective.detach(), expected.detach()) < 1e-12
        (objective if use_dot else expected).backward()
        pre.step(sample_ids=ids)
        assert pre.mode == "weighted_sum"
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert rel_err(b, a) < 1e-12


def test_optimiser_surface_reweights_only_fngd_network_scope() -> None:
    model, x, y = make()
    opt = build("fngd", model, scope="network", damping=DAMPING, lr=0.1)
    ids = BATCHES[0]
    for expect in (False, True):  # the first batch inverts, the second reuses
        opt.zero_grad()
        opt.prepare(sample_ids=ids)
        assert opt.reweight(ids) is expect
        losses = ce(model(x[ids]), y[ids])
        (opt.reweighted_loss(losses) if expect else losses.mean()).backward()
        opt.step(sample_ids=ids)
    for other in (build("sgd", make()[0]), build("kfac", make()[0]), KFAC(make()[0])):
        assert other.reweight() is False
        with pytest.raises(RuntimeError, match="per-sample loss weights"):
            other.reweighted_loss(torch.ones(4))


class _NoComm:
    """Stands in for FNGD's DDP communicator: one rank, nothing sent."""

    world_size = 1

    def sync(self, on: bool) -> None:
        pass

    def average(self, tensors: list[torch.Tensor]) -> None:
        pass


def test_a_failed_reweighted_step_gives_the_blocks_their_forward_back() -> None:
    """A step that raises after ``reweight()`` (here: DDP's check that no block left its
    gradient to ``step()``) must not leave the blocks running plain ops for good."""
    model, x, y = make()
    pre = FNGD(model, damping=DAMPING, scope="network")
    ids = BATCHES[0]
    step(model, pre, x, y, ids)
    pre.comm = _NoComm()
    pre.prepare(sample_ids=ids)
    out = model(x[ids])  # a forward before reweight(): the blocks leave their pairs to step()
    assert pre.reweight(ids)
    ce(out, y[ids]).mean().backward()
    with pytest.raises(RuntimeError, match="left their gradient to step"):
        pre.step(sample_ids=ids)
    assert all("forward" in b.module.__dict__ for b in pre.blocks)
