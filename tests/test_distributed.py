"""FNGD, KFAC, SGD and AdamW under DistributedDataParallel: two gloo processes on the CPU.

One module-scoped run starts two ranks once (``tests.spawn``) and trains every case of
``tests.ddp_cases`` in them; each test compares a case with what one process gives on the
concatenated batches (float64) or checks what a step communicated.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests import ddp_cases as cases
from tests.spawn import run_ranks

WORLD = 2
TOL = 1e-10


@pytest.fixture(scope="module")
def ranks() -> list[dict[str, Any]]:
    return run_ranks(cases.ranks_main, WORLD)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _assert_matches(run: list[dict[str, Any]], ref: dict[str, Any]) -> None:
    for r in range(WORLD):
        for i, step in enumerate(run[r]["steps"]):
            err = _rel(step["grads"], ref["grads"][i])
            assert err < TOL, f"rank {r} step {i} ({step['mode']}): relative error {err:.3g}"
        assert _rel(run[r]["params"], ref["params"]) < TOL


def _case(ranks: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [ranks[r][name] for r in range(WORLD)]


def test_later_epochs_hand_each_rank_samples_the_other_inverted(ranks):
    # the premise of the sharing tests: a sampler reshuffles samples across ranks
    steps = [ranks[r]["layer"]["steps"] for r in range(WORLD)]
    first = [{int(i) for s in steps[r] if s["epoch"] == 0 for i in s["ids"]} for r in range(WORLD)]
    later = [{int(i) for s in steps[r] if s["epoch"] == 1 for i in s["ids"]} for r in range(WORLD)]
    assert later[0] & first[1] and later[1] & first[0]


@pytest.mark.parametrize(
    "case", ["layer", "network-reweighted", "network-explicit", "layer-iteration", "ngd"]
)
def test_global_equals_one_process_on_the_concatenated_batch(ranks, case):
    name, hp, reweighted = cases.CASES[case]
    ref = cases.reference(name, {**cases.FNGD_HP, **hp}, reweighted)
    run = _case(ranks, case)
    _assert_matches(run, ref)
    modes = [s["mode"] for s in run[0]["steps"]]
    if name == "ngd":
        assert set(modes) == {"inversion"}
    else:  # both phases were compared
        epoch0 = cases.STEPS_PER_EPOCH
        assert modes[:epoch0] == ["inversion"] * epoch0
        assert set(modes[epoch0:]) == {"weighted_sum"}


@pytest.mark.parametrize("case", ["local-layer", "local-network"])
def test_local_is_the_mean_of_each_ranks_own_solve(ranks, case):
    name, hp, reweighted = cases.CASES[case]
    ref = cases.reference_local(name, {**cases.FNGD_HP, **hp}, reweighted, WORLD)
    run = _case(ranks, case)
    _assert_matches(run, ref)
    # and it is another method than "global": the first step already differs
    whole = cases.reference(name, {**cases.FNGD_HP, **hp, "distributed": "global"}, reweighted)
    assert _rel(run[0]["steps"][0]["grads"], whole["grads"][0]) > 1e-3


@pytest.mark.parametrize("case", ["layer", "network-reweighted", "local-layer"])
def test_every_rank_stores_every_samples_coefficients(ranks, case):
    tables = [ranks[r][case]["table"] for r in range(WORLD)]
    n = cases.N_SAMPLES
    for t in tables:
        assert (t["stored_epoch"][:, :n] == 0).all()  # all 16 ids known, from epoch 0
        assert (t["stored_epoch"][:, n:] == -1).all()
    assert torch.equal(tables[0]["values"][:, :n], tables[1]["values"][:, :n])


@pytest.mark.parametrize(
    "case", ["layer", "network-reweighted", "network-explicit", "layer-iteration", "local-layer"]
)
def test_weighted_sum_step_costs_one_ddp_allreduce_as_sgd(ranks, case):
    sgd = [s["ddp_allreduces"] for s in ranks[0]["sgd"]["steps"]]
    assert set(sgd) == {1}  # one bucket: one gradient all-reduce per SGD step
    for r in range(WORLD):
        run = ranks[r][case]
        later = [s for s in run["steps"] if s["epoch"] > 0]
        assert all(s["mode"] == "weighted_sum" for s in later)
        assert [s["ddp_allreduces"] for s in later] == [1] * len(later)
        assert [s["own_collectives"] for s in later] == [0] * len(later)
        # no Gram and no solve after the first epoch, on any rank
        assert run["counts"]["gram"] == run["counts"]["solve"] == cases.STEPS_PER_EPOCH
        assert all(s["sync_after"] for s in run["steps"])


@pytest.mark.parametrize(
    ("case", "collectives"),
    [
        ("layer", 4),  # sizes, operands, ids, the gradient average
        ("layer-iteration", 3),  # no ids: an iteration table is each rank's own
        ("local-layer", 4),  # sizes, coefficients, ids, the gradient average
    ],
)
def test_inversion_step_runs_without_ddp_and_averages_once(ranks, case, collectives):
    for r in range(WORLD):
        first = [s for s in ranks[r][case]["steps"] if s["epoch"] == 0]
        assert [s["mode"] for s in first] == ["inversion"] * len(first)
        assert [s["ddp_allreduces"] for s in first] == [0] * len(first)
        assert [s["own_collectives"] for s in first] == [collectives] * len(first)


@pytest.mark.parametrize("name", list(cases.PLAIN))
def test_plain_optimisers_under_ddp_equal_one_process(ranks, name):
    _assert_matches(_case(ranks, name), cases.reference(name, cases.PLAIN[name], False))


def test_kfac_under_ddp_equals_one_process(ranks):
    run = _case(ranks, "kfac")
    _assert_matches(run, cases.reference("kfac", cases.KFAC_HP, False))
    modes = [s["mode"] for s in run[0]["steps"]]
    assert "inverse" in modes and "no_inverse" in modes


def test_fngd_under_ddp_needs_prepare(ranks):
    for r in range(WORLD):
        assert "needs prepare(sample_ids)" in ranks[r]["without-prepare"]
