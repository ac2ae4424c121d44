"""Learning-rate schedules: the multipliers step by step, and the one path that applies them
(build_cell resolves them, run_steps steps them, records carry them)."""

from __future__ import annotations

import math

import pytest
import torch

from bench.cell import CellSpec, build_cell, run_steps
from bench.cell.schedules import SCHEDULE_DEFAULTS, lr_factor, split_schedule
from bench.cell.timing import NullTimer


def _factors(total: int, **schedule) -> list[float]:
    spec = {**SCHEDULE_DEFAULTS, **schedule}
    f = lr_factor(spec, total)
    return [f(s) for s in range(total)]


def test_constant_warmup_cosine_and_step() -> None:
    assert _factors(5) == [1.0] * 5
    assert _factors(10, warmup_fraction=0.2)[:3] == [0.5, 1.0, 1.0]
    cos = _factors(10, schedule="warmup-cosine", warmup_fraction=0.2)
    assert cos[:2] == [0.5, 1.0]  # 2 warm-up steps, then the cosine from 1
    assert cos[2] == pytest.approx(1.0)
    assert cos[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert all(a >= b for a, b in zip(cos[1:], cos[2:], strict=False))
    step = _factors(8, schedule="step", decay_at=[0.5, 0.75], decay_gamma=0.1)
    assert step == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_split_and_check() -> None:
    schedule, rest = split_schedule({"lr": 0.1, "schedule": "step", "warmup_fraction": 0.1})
    assert rest == {"lr": 0.1} and schedule["schedule"] == "step"
    assert schedule["decay_at"] == SCHEDULE_DEFAULTS["decay_at"]
    with pytest.raises(ValueError, match="unknown schedule"):
        split_schedule({"schedule": "linear"})
    with pytest.raises(ValueError, match="warmup_fraction"):
        split_schedule({"warmup_fraction": 1.0})


@pytest.mark.parametrize("label", ["sgd", "adamw", "kfac", "fngd"])
def test_the_cell_steps_its_schedule_per_step(label: str) -> None:
    overrides = {"lr": 0.02, "schedule": "warmup-cosine", "warmup_fraction": 0.25}
    spec = CellSpec("mlp-digits", label, epochs=2, max_steps_per_epoch=4, overrides=overrides)
    cell = build_cell(spec, torch.device("cpu"))
    assert cell.scheduler is not None
    assert cell.opt.hparams["schedule"] == "warmup-cosine"  # recorded with the rest
    assert cell.opt.hparams["warmup_fraction"] == 0.25
    expected = [0.02 * f for f in _factors(8, **{k: v for k, v in overrides.items() if k != "lr"})]
    seen = []
    state = cell.loop_state()
    for epoch in range(2):
        batches = iter(cell.workload.train_loader)
        run_steps(
            cell.workload,
            cell.opt,
            batches,
            4,
            timer=NullTimer(),
            epoch=epoch,
            state=state,
            device=cell.device,
            loss_sum=torch.zeros(()),
            scheduler=cell.scheduler,
            on_step=lambda *_: seen.append(cell.opt.optimizer.param_groups[0]["lr"]),
        )
    # the rate after step s is the one step s + 1 uses
    assert seen == pytest.approx(expected[1:] + [0.0], abs=1e-12)
    if label == "kfac":  # the kl-clip follows the optimiser's rate
        assert cell.opt.preconditioner.lr == pytest.approx(seen[-1])


def test_constant_without_warmup_attaches_nothing() -> None:
    cell = build_cell(CellSpec("mlp-digits", "sgd"), torch.device("cpu"))
    assert cell.scheduler is None
    assert cell.opt.hparams["schedule"] == "constant"
    assert cell.opt.optimizer.param_groups[0]["lr"] == cell.opt.hparams["lr"]
