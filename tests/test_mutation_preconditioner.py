"""FNGD's observable contract, pinned value by value: messages, defaults, counts, state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fngd import FNGD
from fngd import gram as gram_mod
from fngd.solve import NonFiniteGradientError
from tests.fngd_reference import block_grad, natural_gradient, per_sample_block_grads, rel_err


def sq(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out - y) ** 2).flatten(1).sum(1)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def data(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(n, 4).double(), torch.randn(n, 3).double()


def run_step(model, pre, x, y, ids=None, prepare=True, weights=False):
    model.zero_grad(set_to_none=True)
    if prepare:
        pre.prepare(sample_ids=ids)
    losses = sq(model(x), y)
    w = pre.loss_weights(ids) if weights else None
    (losses.mean() if w is None else (w * losses).mean()).backward()
    pre.step(sample_ids=ids)


def is_plain(block) -> bool:
    """Whether the block's module runs its plain op now, not FNGD's block function (the
    Python one: the tests asking this are in network scope, where no compiled block runs)."""
    weight = block.module.weight
    out = block.module(weight.new_zeros(1, weight.shape[1]))
    return type(out.grad_fn).__name__ != "BlockFunctionBackward"


# -- construction ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "listing"),
    [
        ({"gram": "x"}, "auto, pairwise, explicit"),
        ({"scope": "x"}, "layer, network"),
        ({"damping_mode": "x"}, "constant, relative"),
        ({"share": "x"}, "none, sample, iteration"),
        ({"loss_reduction": "x"}, "mean, sum"),
    ],
)
def test_unknown_choice_names_the_value_and_lists_the_valid_ones(kwargs, listing) -> None:
    with pytest.raises(ValueError, match=f"unknown {next(iter(kwargs))} 'x'; valid: {listing}$"):
        FNGD(mlp(), **kwargs)


def test_iteration_share_without_steps_message() -> None:
    with pytest.raises(ValueError, match='^share="iteration" needs steps_per_epoch$'):
        FNGD(mlp(), share="iteration")


def test_defaults_and_stored_settings() -> None:
    pre = FNGD(mlp())
    assert pre.damping == 1e-3
    assert pre.last_solve is None
    assert pre.state is None and pre.mode is None
    assert pre.counts == {"inversion": 0, "weighted_sum": 0, "gram": 0, "solve": 0}
    pre = FNGD(mlp(), refresh_epochs=1, steps_per_epoch=2, gram="explicit")
    assert pre.refresh_epochs == 1
    assert pre.gram == "explicit"
    assert "refresh_epochs=1" in repr(pre)


def test_skipped_or_frozen_first_layer_keeps_later_blocks() -> None:
    model = mlp()
    assert [b.name for b in FNGD(model, skip_layers=["^0$"])] == ["2"]
    model[0].weight.requires_grad_(False)
    assert [b.name for b in FNGD(model)] == ["2"]
    assert [b.name for b in FNGD(model, skip_layers=["^2$"])] == []


def test_model_without_blocks_constructs_and_steps() -> None:
    model = nn.Sequential(nn.Tanh())
    pre = FNGD(model, share="none")
    assert list(pre) == []
    pre.step()
    assert pre.steps == 1


# -- epochs ----------------------------------------------------------------------------
def test_epoch_counts_whole_epochs() -> None:
    pre = FNGD(mlp(), share="iteration", steps_per_epoch=2)
    pre.steps = 3
    assert pre.epoch() == 1
    assert isinstance(pre.epoch(), int)
    assert FNGD(mlp()).epoch() == 0
    with pytest.raises(
        ValueError, match="^refresh_epochs needs steps_per_epoch or an explicit epoch$"
    ):
        FNGD(mlp(), refresh_epochs=2).epoch()


# -- messages --------------------------------------------------------------------------
def test_sample_share_step_without_ids_message() -> None:
    model, (x, y) = mlp(), data()
    pre = FNGD(model)
    sq(model(x), y).mean().backward()
    with pytest.raises(
        ValueError,
        match=r'^share="sample" needs sample_ids \(dataset indices of the batch\) at every step$',
    ):
        pre.step()


def test_staleness_argument_messages() -> None:
    with pytest.raises(ValueError, match='^share="sample" needs the probe batch\'s sample_ids$'):
        FNGD(mlp()).staleness()
    with pytest.raises(
        ValueError, match='^share="iteration" needs the iteration whose coefficients to probe$'
    ):
        FNGD(mlp(), share="iteration", steps_per_epoch=2).staleness()


def test_other_ids_messages() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    pre = FNGD(model, scope="network")
    run_step(model, pre, x, y, ids)
    pre.prepare(sample_ids=ids)
    for ask in (pre.reweight, pre.loss_weights):
        with pytest.raises(
            RuntimeError, match=r"^reweight\(\) got other sample_ids than prepare\(\)$"
        ):
            ask(ids + 1)
    sq(model(x), y).mean().backward()
    with pytest.raises(
        RuntimeError,
        match=r"^step\(\) got other sample_ids than prepare\(\): the weighted sum "
        r"already used the prepared batch's coefficients$",
    ):
        pre.step(sample_ids=ids + 1)


def test_reweighted_step_checks_its_ids_too() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    pre = FNGD(model, scope="network")
    run_step(model, pre, x, y, ids)
    pre.prepare(sample_ids=ids)
    assert pre.reweight(ids)
    pre.reweighted_loss(sq(model(x), y)).backward()
    with pytest.raises(RuntimeError, match=r"^step\(\) got other sample_ids than prepare\(\)"):
        pre.step(sample_ids=ids + 1)
    assert not any(is_plain(b) for b in pre.blocks)  # the block forwards are back


def test_two_backward_passes_message() -> None:
    model, (x, y) = mlp(), data()
    pre = FNGD(model)
    for _ in range(2):
        sq(model(x), y).mean().backward()
    with pytest.raises(
        RuntimeError,
        match=r"^module\(s\) '0', '2' ran more than one backward pass before step\(\) "
        r"\(gradient accumulation, which FNGD's per-batch solve does not support\); call "
        r"step\(\) after every backward pass, or discard\(\) after one that is not "
        r"followed by step\(\)$",
    ):
        pre.step(sample_ids=torch.arange(6))


def test_a_model_run_twice_in_one_backward_is_one_batch() -> None:
    """Two forwards summed into one loss are two uses of each weight, not two batches."""
    model, (x, y) = mlp(), data()
    pre = FNGD(model)
    (sq(model(x), y).mean() + sq(model(x), y).mean()).backward()
    pre.step(sample_ids=torch.arange(6))
    assert pre.mode == "inversion"


def test_check_finite_names_every_bad_block() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    pre = FNGD(model, check_finite=True)
    run_step(model, pre, x, y, ids)
    x_bad = x.clone()
    x_bad[0, 0] = float("nan")
    with pytest.raises(NonFiniteGradientError, match=r"in block\(s\) 0, 2$"):
        run_step(model, pre, x_bad, y, ids)


def test_check_finite_off_lets_a_weighted_sum_step_through() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    pre = FNGD(model, check_finite=False)
    run_step(model, pre, x, y, ids)
    x_bad = x.clone()
    x_bad[0, 0] = float("nan")
    run_step(model, pre, x_bad, y, ids)
    assert pre.mode == "weighted_sum"
    assert not torch.isfinite(model[0].weight.grad).all()


def test_load_state_dict_block_mismatch_message() -> None:
    state = FNGD(mlp()).state_dict()
    with pytest.raises(
        ValueError, match=r"^state is for blocks \['0', '2'\], this model has \['2'\]$"
    ):
        FNGD(mlp(), skip_layers=["^0$"]).load_state_dict(state)


def test_load_state_dict_without_scope_means_layer() -> None:
    state = FNGD(mlp()).state_dict()
    del state["scope"]
    FNGD(mlp()).load_state_dict(state)
    with pytest.raises(ValueError, match="state is for scope='layer', this is 'network'"):
        FNGD(mlp(), scope="network").load_state_dict(state)


# -- counts, paths, modes ----------------------------------------------------------------
def test_counts_and_gram_paths_are_exact() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    pre = FNGD(model, gram="explicit")
    run_step(model, pre, x, y, ids)
    run_step(model, pre, x, y, ids, prepare=False)
    run_step(model, pre, x, y, ids)
    assert pre.counts == {"inversion": 1, "weighted_sum": 2, "gram": 1, "solve": 1}
    assert pre.gram_paths == {"0": "explicit", "2": "explicit"}


def test_auto_gram_path_is_the_cost_models_choice() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 64)).double()
    x, y = torch.randn(8, 2).double(), torch.randn(8, 64).double()
    pre = FNGD(model)
    run_step(model, pre, x, y, torch.arange(8))
    # weight and bias: p = 3 input columns, q = 64 outputs
    assert gram_mod.choose(8, 1, 3, 64) == "pairwise"
    assert gram_mod.choose(8, 1, 3, 1) == "explicit"
    assert pre.gram_paths == {"0": "pairwise"}


def test_reset_coefficients_inverts_again_and_keeps_working() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    for kw in ({}, {"share": "iteration", "steps_per_epoch": 1, "refresh_epochs": 2}):
        pre = FNGD(model, **kw)
        run_step(model, pre, x, y, ids)
        run_step(model, pre, x, y, ids)
        assert pre.mode == "weighted_sum"
        before = pre.memory_usage()["coefficients"]
        assert before > 0
        pre.reset_coefficients()
        assert pre.memory_usage() == {"coefficients": 0}
        run_step(model, pre, x, y, ids)
        assert pre.mode == "inversion"
        assert pre.memory_usage()["coefficients"] == before
        run_step(model, pre, x, y, ids)
        assert pre.mode == "weighted_sum"
        if kw:  # refresh_epochs=2 still holds after a reset: stale two epochs on
            pre.reset_coefficients()
            stored_at = pre.epoch()
            run_step(model, pre, x, y, ids)
            pre.steps = stored_at + 1
            run_step(model, pre, x, y, ids)
            assert pre.mode == "weighted_sum"
            pre.steps = stored_at + 2
            run_step(model, pre, x, y, ids)
            assert pre.mode == "inversion"


def test_memory_usage_sums_both_tables() -> None:
    model, (x, y) = mlp(), data()
    pre = FNGD(model)
    run_step(model, pre, x, y, torch.arange(6))
    sample = pre.sample_table.nbytes()
    pre.share = "iteration"
    pre.steps_per_epoch = 4
    run_step(model, pre, x, y, torch.arange(6))
    assert pre.iteration_table.nbytes() > 0
    assert pre.memory_usage() == {"coefficients": sample + pre.iteration_table.nbytes()}


def test_iter_yields_the_blocks() -> None:
    pre = FNGD(mlp())
    assert list(iter(pre)) == pre.blocks
    assert [b.name for b in pre] == ["0", "2"]


def test_remove_leaves_no_blocks_and_no_state() -> None:
    pre = FNGD(mlp())
    pre.prepare(sample_ids=torch.arange(6))
    pre.remove()
    assert pre.blocks == []
    assert pre.state is None
    assert len(pre.blocks) == 0


# -- prepare -----------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["layer", "network"])
def test_prepared_scales_are_n_times_the_stored_coefficients(scope) -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    pre = FNGD(model, scope=scope, damping=0.1)
    run_step(model, pre, x, y, ids)
    coeffs, known = pre.sample_table.lookup(ids, 0)
    pre.prepare(sample_ids=ids.to(torch.int32))
    state = pre.state
    assert state.sample_ids.dtype == torch.int64
    assert torch.equal(state.sample_ids, ids)
    if scope == "layer":
        assert len(state.scales) == 2
    for i in range(2):  # network scope: one shared column serves every block index
        s = state.scales[i]
        row = 0 if scope == "network" else i
        assert s.shape == (6, 1)
        assert s.dtype == torch.float64
        torch.testing.assert_close(s[:, 0], coeffs[row].double() * 6)
    if scope == "network":
        assert state.scales[0] is state.scales[1]
        assert state.weights is None  # made only when asked for
        torch.testing.assert_close(pre.loss_weights(), coeffs[0].double() * 6)
        assert state.weights is not None and state.weights.dtype == torch.float64


def test_prepared_scales_in_float32_model() -> None:
    model, (x, y) = mlp().float(), data()
    ids = torch.arange(6)
    pre = FNGD(model, damping=0.1)
    run_step(model, pre, x.float(), y.float(), ids)
    pre.prepare(sample_ids=ids)
    assert all(s.dtype == torch.float32 for s in pre.state.scales)


def test_prepare_with_partly_known_rows_leaves_unknown_blocks_to_step() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    pre = FNGD(model, damping=0.1)
    run_step(model, pre, x, y, ids)
    pre.sample_table.stored_epoch[1, :] = -1  # block 2 forgets these ids
    pre.sample_table._known_cache = None
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    scales = pre.state.scales
    assert len(scales) == 2
    assert scales[0] is not None and scales[1] is None
    sq(model(x), y).mean().backward()
    pre.step(sample_ids=ids)
    assert pre.mode == "inversion"
    g = per_sample_block_grads(model, x, y, sq, ["0", "2"])
    for name in ("0", "2"):
        assert rel_err(block_grad(model, name), natural_gradient(g[name], 0.1)) < 1e-8


def test_prepare_iteration_share_uses_the_batch_size() -> None:
    model, (x, y) = mlp(), data()
    pre = FNGD(model, share="iteration", steps_per_epoch=1)
    run_step(model, pre, x, y)
    pre.prepare()
    assert pre.state is not None and len(pre.state.scales) == 2
    pre.prepare(sample_ids=torch.arange(5))  # another batch size: nothing stored fits
    assert pre.state is None


def test_prepare_uses_the_explicit_epoch() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    pre = FNGD(model, refresh_epochs=1)
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids, epoch=0)
    sq(model(x), y).mean().backward()
    pre.step(sample_ids=ids, epoch=0)
    pre.prepare(sample_ids=ids, epoch=0)
    assert pre.state is not None
    pre.prepare(sample_ids=ids, epoch=1)  # refresh_epochs=1: stale in epoch 1
    assert pre.state is None


# -- reweighted steps and probes restore the blocks' forward ----------------------------
def test_discard_after_loss_weights_restores_block_forward() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    pre = FNGD(model, scope="network")
    run_step(model, pre, x, y, ids)
    pre.prepare(sample_ids=ids)
    pre.loss_weights(ids)
    assert all(is_plain(b) for b in pre)
    pre.discard()
    assert not any(is_plain(b) for b in pre)


def test_reweighted_step_after_the_forward_is_exact_network_ngd() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    pre = FNGD(model, scope="network", damping=0.1)
    run_step(model, pre, x, y, ids)
    g = per_sample_block_grads(model, x, y, sq, ["0", "2"])
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    out = model(x)  # the forward runs before the caller asks for the weights
    w = pre.loss_weights(ids)
    assert all(is_plain(b) for b in pre)
    (w * sq(out, y)).mean().backward()
    pre.step(sample_ids=ids)
    assert not any(is_plain(b) for b in pre)
    assert pre.mode == "weighted_sum"
    expect = natural_gradient(torch.cat([g["0"], g["2"]], 1), 0.1)
    got = torch.cat([block_grad(model, "0"), block_grad(model, "2")])
    assert rel_err(got, expect) < 1e-8


def test_probe_during_a_reweighted_step_restores_plain_forward() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    pre = FNGD(model, scope="network")
    run_step(model, pre, x, y, ids)
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    pre.loss_weights(ids)
    with pre.staleness(ids):
        assert not any(is_plain(b) for b in pre)
        sq(model(x), y).mean().backward()
    assert all(is_plain(b) for b in pre)
    assert all(p.grad is None for p in model.parameters())


def test_probe_outside_a_step_finds_the_stored_coefficients() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    for kw in ({}, {"share": "iteration", "steps_per_epoch": 1}):
        pre = FNGD(model, damping=0.1, **kw)
        run_step(model, pre, x, y, ids)
        with pre.staleness(ids, **({"iteration": 0} if kw else {})) as probe:
            sq(model(x), y).mean().backward()
        assert probe.result["network"]["known"]
        assert probe.result["network"]["cosine"] == pytest.approx(1.0, abs=1e-9)
        assert probe.result["0"]["norm_ratio"] == pytest.approx(1.0, abs=1e-9)
    pre = FNGD(model, share="none")
    with pre.staleness() as probe:
        sq(model(x), y).mean().backward()
    assert probe.result["network"]["known"] is False


# -- gradient scaler overflow and normalisation -------------------------------------------
def test_overflow_under_a_grad_scaler_writes_the_plain_gradient() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    x_bad = x.clone()
    x_bad[0, 0] = float("inf")
    sq(model(x_bad), y).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    pre = FNGD(model, grad_scaler=lambda: 1.0)
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    sq(model(x_bad), y).mean().backward()
    pre.step(sample_ids=ids)
    assert pre.mode == "inversion"
    assert pre.memory_usage() == {"coefficients": 0}
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], equal_nan=True)


def test_normalize_rows_sum_to_one() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    for scope in ("layer", "network"):
        pre = FNGD(model, damping=0.1, normalize=True, scope=scope)
        run_step(model, pre, x, y, ids)
        coeffs, _ = pre.sample_table.lookup(ids, 0)
        torch.testing.assert_close(coeffs.sum(-1), torch.ones(coeffs.shape[0], dtype=coeffs.dtype))
        assert coeffs.shape[0] == (2 if scope == "layer" else 1)


def test_iteration_share_stores_only_the_inverted_rows() -> None:
    model, (x, y) = mlp(), data()
    pre = FNGD(model, share="iteration", steps_per_epoch=1, damping=0.1)
    run_step(model, pre, x, y)
    assert pre.iteration_table.lookup(0, 6, 0)[1].tolist() == [True, True]
    assert isinstance(pre.iteration_table.lookup(0, 6, 0)[1], np.ndarray)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_state_dict_loads_onto_the_models_device() -> None:
    model, (x, y) = mlp().cuda(), data()
    ids = torch.arange(6)
    for kw in ({}, {"share": "iteration", "steps_per_epoch": 2}):
        pre = FNGD(model, damping=0.1, **kw)
        run_step(model, pre, x.cuda(), y.cuda(), ids)
        state = pre.state_dict()
        fresh = FNGD(mlp(), damping=0.1, **kw)
        fresh.load_state_dict(state)
        assert fresh.steps == 1
        tables = [fresh.sample_table.values] if not kw else list(
            fresh.iteration_table.values.values()
        )
        assert tables and all(t.device.type == "cpu" for t in tables)


# -- corners: ids, dtypes, branches, single blocks -------------------------------------------
def test_prepare_without_ids_in_sample_share_is_a_no_op() -> None:
    model, (x, y) = mlp(), data()
    pre = FNGD(model)
    run_step(model, pre, x, y, torch.arange(6))
    pre.prepare()
    assert pre.state is None


@pytest.mark.parametrize(
    "ids",
    [torch.arange(6, dtype=torch.int32), np.arange(6, dtype=np.int16), list(range(6))],
    ids=["int32", "numpy-int16", "list"],
)
def test_prepared_ids_are_flat_int64(ids) -> None:
    model, (x, y) = mlp(), data()
    pre = FNGD(model)
    run_step(model, pre, x, y, torch.arange(6))
    pre.prepare(sample_ids=ids)
    got = pre.state.sample_ids
    assert got.dtype == torch.int64
    assert got.shape == (6,)
    assert torch.equal(got, torch.arange(6))


def test_bfloat16_model_gets_scales_in_its_dtype() -> None:
    model, (x, y) = mlp().to(torch.bfloat16), data()
    ids = torch.arange(6)
    pre = FNGD(model, damping=0.1)
    run_step(model, pre, x.bfloat16(), y.bfloat16(), ids)
    assert pre.sample_table.values.dtype == torch.float32  # solved in float32
    pre.prepare(sample_ids=ids)
    assert all(s.dtype == torch.bfloat16 for s in pre.state.scales)


def test_float32_coefficients_are_stored_in_float32() -> None:
    model, (x, y) = mlp().float(), data()
    pre = FNGD(model, damping=0.1)
    run_step(model, pre, x.float(), y.float(), torch.arange(6))
    assert pre.memory_usage() == {"coefficients": 2 * 6 * 4}


def test_reweighted_step_with_check_finite() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    pre = FNGD(model, scope="network", check_finite=True)
    run_step(model, pre, x, y, ids)
    run_step(model, pre, x, y, ids, weights=True)
    assert pre.mode == "weighted_sum"
    assert pre.counts["weighted_sum"] == 1


def nobias() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5, bias=False), nn.Tanh(), nn.Linear(5, 3)).double()


def test_bias_free_layer_in_a_reweighted_step_after_the_forward() -> None:
    model, (x, y) = nobias(), data()
    ids = torch.arange(6)
    pre = FNGD(model, scope="network", damping=0.1)
    run_step(model, pre, x, y, ids)
    g = per_sample_block_grads(model, x, y, sq, ["0", "2"])
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    out = model(x)
    w = pre.loss_weights(ids)
    (w * sq(out, y)).mean().backward()
    pre.step(sample_ids=ids)
    expect = natural_gradient(torch.cat([g["0"], g["2"]], 1), 0.1)
    got = torch.cat([block_grad(model, "0"), block_grad(model, "2")])
    assert rel_err(got, expect) < 1e-8


def test_bias_free_layer_overflow_writes_the_plain_gradient() -> None:
    model, (x, y) = nobias(), data()
    x_bad = x.clone()
    x_bad[0, 0] = float("inf")
    sq(model(x_bad), y).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    pre = FNGD(model, grad_scaler=lambda: 1.0)
    model.zero_grad(set_to_none=True)
    sq(model(x_bad), y).mean().backward()
    pre.step(sample_ids=torch.arange(6))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], equal_nan=True)


class Either(nn.Module):
    """Two parallel heads; a batch uses one."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(4, 3)
        self.head = "b"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.head)(x)


def test_network_scope_when_the_first_block_did_not_run() -> None:
    torch.manual_seed(0)
    model = Either().double()
    x, y = data()
    ids = torch.arange(6)
    pre = FNGD(model, scope="network", damping=0.1)
    run_step(model, pre, x, y, ids)
    g = per_sample_block_grads(model, x, y, sq, ["b"])
    expect = natural_gradient(g["b"], 0.1)
    assert rel_err(block_grad(model, "b"), expect) < 1e-8
    run_step(model, pre, x, y, ids)  # reuses the stored vector
    assert pre.mode == "weighted_sum"
    assert rel_err(block_grad(model, "b"), expect) < 1e-8


def test_iteration_share_branch_keeps_the_other_blocks_coefficients() -> None:
    torch.manual_seed(0)
    model = Either().double()
    x, y = data()
    pre = FNGD(model, share="iteration", steps_per_epoch=1, damping=0.1)
    run_step(model, pre, x, y)  # b stores
    model.head = "a"
    run_step(model, pre, x, y)  # a inverts; b's row must stay
    assert pre.mode == "inversion"
    g = per_sample_block_grads(model, x, y, sq, ["a"])
    assert rel_err(block_grad(model, "a"), natural_gradient(g["a"], 0.1)) < 1e-8
    model.head = "b"
    run_step(model, pre, x, y)
    assert pre.mode == "weighted_sum"
    g = per_sample_block_grads(model, x, y, sq, ["b"])
    assert rel_err(block_grad(model, "b"), natural_gradient(g["b"], 0.1)) < 1e-8


def test_single_block_model_check_finite_and_state_round_trip() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).double()
    x, y = data()
    ids = torch.arange(6)
    pre = FNGD(model, check_finite=True)
    run_step(model, pre, x, y, ids)
    run_step(model, pre, x, y, ids)
    assert pre.mode == "weighted_sum"
    fresh = FNGD(model)
    fresh.load_state_dict(pre.state_dict())
    assert fresh.memory_usage() == pre.memory_usage()


def test_probe_of_another_batch_size_or_a_stale_epoch_is_unknown() -> None:
    model, (x, y) = mlp(), data()
    pre = FNGD(model, share="iteration", steps_per_epoch=1, refresh_epochs=1, damping=0.1)
    run_step(model, pre, x, y)
    pre.steps = 0
    with pre.staleness(iteration=0) as probe:
        sq(model(x[:5]), y[:5]).mean().backward()
    assert probe.result["network"]["known"] is False
    with pre.staleness(iteration=0) as probe:
        sq(model(x), y).mean().backward()
    assert probe.result["network"]["known"] is True
    pre.steps = 1  # epoch 1: refresh_epochs=1 makes epoch 0's coefficients stale
    with pre.staleness(iteration=0) as probe:
        sq(model(x), y).mean().backward()
    assert probe.result["network"]["known"] is False
    pre = FNGD(model, steps_per_epoch=1, refresh_epochs=1, damping=0.1)
    ids = torch.arange(6)
    run_step(model, pre, x, y, ids)
    pre.steps = 0
    with pre.staleness(ids) as probe:
        sq(model(x), y).mean().backward()
    assert probe.result["network"]["known"] is True
    pre.steps = 1
    with pre.staleness(ids) as probe:
        sq(model(x), y).mean().backward()
    assert probe.result["network"]["known"] is False


def test_reset_keeps_refresh_epochs_in_sample_share() -> None:
    model, (x, y) = mlp(), data()
    ids = torch.arange(6)
    pre = FNGD(model, steps_per_epoch=1, refresh_epochs=1)
    run_step(model, pre, x, y, ids)
    pre.reset_coefficients()
    run_step(model, pre, x, y, ids)  # epoch 1: inverts after the reset
    run_step(model, pre, x, y, ids)  # epoch 2: refresh_epochs=1 makes it stale
    assert pre.mode == "inversion"


def test_bfloat16_gram_is_formed_in_float32() -> None:
    """K from bfloat16 operands, upcast first: float32 accuracy, not bfloat16's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4)).to(torch.bfloat16)
    n, lam = 6, 0.1
    x, y = torch.randn(n, 8).bfloat16().requires_grad_(), torch.randn(n, 4).bfloat16()
    seen = {}
    model[0].register_full_backward_hook(lambda m, gi, go: seen.update(d=go[0]))
    pre = FNGD(model, damping=lam)
    run_step(model, pre, x, y, torch.arange(n))
    a = torch.cat([x.detach().double(), torch.ones(n, 1, dtype=torch.float64)], 1)
    d = seen["d"].double() * n
    k = (a @ a.T) * (d @ d.T)
    c = torch.linalg.solve(k + n * lam * torch.eye(n, dtype=torch.float64), torch.ones(n).double())
    got = pre.sample_table.lookup(torch.arange(n), 0)[0][0].double()
    assert rel_err(got, c) < 1e-5


def test_bfloat16_probe_of_the_stored_coefficients() -> None:
    model, (x, y) = mlp().to(torch.bfloat16), data()
    x, y = x.bfloat16(), y.bfloat16()
    ids = torch.arange(6)
    pre = FNGD(model, damping=0.1)
    run_step(model, pre, x, y, ids)
    with pre.staleness(ids) as probe:
        sq(model(x), y).mean().backward()
    assert probe.result["network"]["known"]
    assert probe.result["network"]["cosine"] == pytest.approx(1.0, abs=1e-3)
