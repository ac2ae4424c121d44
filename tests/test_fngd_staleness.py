"""The staleness probe: stored coefficients' direction against a fresh solve, float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fngd import FNGD
from tests.fngd_reference import network_coefficients, per_sample_block_grads

LAM = 0.1
BLOCKS = ["0", "2"]
IDS = torch.tensor([0, 1, 2, 3, 4])


def ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y, reduction="none")


def make() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    return model, torch.randn(10, 6).double(), torch.randint(0, 3, (10,))


def train(model: nn.Module, pre: FNGD, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=ids)
    ce(model(x[ids]), y[ids]).mean().backward()
    pre.step(sample_ids=ids)


def probe(pre: FNGD, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: object) -> dict:
    ids = kw.pop("ids", IDS)
    with pre.staleness(ids, **kw) as p:
        ce(model(x[ids]), y[ids]).mean().backward()
    return p.result


def _layer_c(g: torch.Tensor) -> torch.Tensor:
    n = g.shape[0]
    eye = torch.eye(n, dtype=g.dtype)
    return torch.linalg.solve(g @ g.T + n * LAM * eye, torch.ones(n, dtype=g.dtype))


def _compare(stored: torch.Tensor, fresh: torch.Tensor) -> tuple[float, float]:
    return (
        float(stored @ fresh / (stored.norm() * fresh.norm())),
        float(stored.norm() / fresh.norm()),
    )


@pytest.mark.parametrize("scope", ["layer", "network"])
def test_right_after_the_inversion_nothing_is_stale(scope: str) -> None:
    model, x, y = make()
    pre = FNGD(model, damping=LAM, scope=scope)
    train(model, pre, x, y, IDS)
    result = probe(pre, model, x, y)
    keys = BLOCKS + ["network"] if scope == "layer" else ["network"]
    assert sorted(result) == sorted(keys)
    for key in keys:
        assert result[key]["known"] is True
        assert result[key]["cosine"] == pytest.approx(1.0, abs=1e-10)
        assert result[key]["norm_ratio"] == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("scope", ["layer", "network"])
def test_after_updates_it_matches_the_float64_reference(scope: str) -> None:
    model, x, y = make()
    pre = FNGD(model, damping=LAM, scope=scope)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    g0 = per_sample_block_grads(model, x[IDS], y[IDS], ce, BLOCKS)
    train(model, pre, x, y, IDS)
    for _ in range(3):
        opt.step()
    g1 = per_sample_block_grads(model, x[IDS], y[IDS], ce, BLOCKS)
    if scope == "network":
        c0, c1 = network_coefficients(g0, LAM), network_coefficients(g1, LAM)
        stored = {k: g1[k].T @ c0 for k in BLOCKS}
        fresh = {k: g1[k].T @ c1 for k in BLOCKS}
    else:
        stored = {k: g1[k].T @ _layer_c(g0[k]) for k in BLOCKS}
        fresh = {k: g1[k].T @ _layer_c(g1[k]) for k in BLOCKS}
    expected = {"network": _compare(torch.cat(list(stored.values())),
                                    torch.cat(list(fresh.values())))}
    if scope == "layer":
        expected.update({k: _compare(stored[k], fresh[k]) for k in BLOCKS})
    result = probe(pre, model, x, y)
    assert sorted(result) == sorted(expected)
    for key, (cosine, ratio) in expected.items():
        assert result[key]["cosine"] == pytest.approx(cosine, abs=1e-10), key
        assert result[key]["norm_ratio"] == pytest.approx(ratio, rel=1e-10), key
        assert abs(cosine - 1) > 1e-6 or abs(ratio - 1) > 1e-6  # stale, measurably


@pytest.mark.parametrize("scope", ["layer", "network"])
def test_the_probe_changes_nothing(scope: str) -> None:
    model, x, y = make()
    pre = FNGD(model, damping=LAM, scope=scope)
    train(model, pre, x, y, IDS)
    model.zero_grad(set_to_none=True)
    model[0].weight.grad = torch.ones_like(model[0].weight)  # some, not all, have a .grad
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    table = pre.sample_table.values.clone()
    before = (pre.steps, pre.mode, dict(pre.counts), pre.state)
    probe(pre, model, x, y)
    probe(pre, model, x, y, ids=torch.tensor([5, 6, 7]))  # unknown ids: still nothing
    for a, p in zip(grads, model.parameters(), strict=True):
        assert (a is None and p.grad is None) or torch.equal(a, p.grad)
    assert torch.equal(table, pre.sample_table.values)
    assert (pre.steps, pre.mode, dict(pre.counts), pre.state) == before


def test_the_probe_between_prepare_and_step_leaves_the_step_as_it_was() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=LAM, scope="network")
    train(model, pre, x, y, IDS)
    expected_model, ex, ey = make()
    expected_pre = FNGD(expected_model, damping=LAM, scope="network")
    train(expected_model, expected_pre, ex, ey, IDS)
    for m, p, probing in ((model, pre, True), (expected_model, expected_pre, False)):
        m.zero_grad(set_to_none=True)
        p.prepare(sample_ids=IDS)
        w = p.loss_weights(IDS)
        if probing:
            probe(p, m, x, y)
        assert w is not None
        (w * ce(m(x[IDS]), y[IDS])).mean().backward()
        p.step(sample_ids=IDS)
    for a, b in zip(model.parameters(), expected_model.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)


def test_unknown_ids_have_no_numbers() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=LAM)
    train(model, pre, x, y, IDS)
    result = probe(pre, model, x, y, ids=torch.tensor([3, 4, 5]))  # 5 was never seen
    assert set(result) == {*BLOCKS, "network"}
    for r in result.values():
        assert r == {"cosine": None, "norm_ratio": None, "known": False}


def test_share_iteration_probes_an_iteration() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=LAM, share="iteration", steps_per_epoch=2, scope="network")
    train(model, pre, x, y, IDS)
    train(model, pre, x, y, torch.arange(5, 10))
    first = probe(pre, model, x, y, iteration=0)["network"]
    assert first["cosine"] == pytest.approx(1.0, abs=1e-10)
    assert first["norm_ratio"] == pytest.approx(1.0, abs=1e-10)
    other = probe(pre, model, x, y, iteration=1)["network"]  # another batch's coefficients
    assert other["known"] and other["cosine"] < 1 - 1e-6
    with pytest.raises(ValueError, match="iteration"):
        pre.staleness()


def test_share_sample_needs_ids_and_share_none_knows_nothing() -> None:
    model, x, y = make()
    with pytest.raises(ValueError, match="sample_ids"):
        FNGD(model).staleness()
    pre = FNGD(model, damping=LAM, share="none")
    train(model, pre, x, y, IDS)
    assert probe(pre, model, x, y)["network"]["known"] is False
