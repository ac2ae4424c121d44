"""pytest-benchmark suite: one training step per optimiser (and phase) per workload.

    pytest bench --benchmark-only --benchmark-json=out.json

Each benchmark times ``bench.step.train_step`` on one fixed batch, with the GPU
synchronised inside the timed call. FNGD is timed in both of its phases (inversion: its
coefficient table is cleared before every round; weighted sum: primed once, then every call
reuses the stored coefficients); KFAC with and without its inverse update (inverse every
step, or never after the first). Each benchmark checks the optimiser really ran the phase
it is named after, and stores per-phase medians (from the suite's own timers, in separate
untimed steps) in ``extra_info``. Benchmarks are grouped by workload.

Workloads: the small CPU ones by default, and the paper-sized GPU ones when CUDA is there;
``FNGD_BENCH_WORKLOADS=a,b`` and ``FNGD_BENCH_SIZE=small|paper`` override. On the CPU, torch
runs ``FNGD_BENCH_THREADS`` intra-op threads (default 1): the small models gain nothing from
more, and on a shared machine spinning worker threads make step times erratic.
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from bench import workloads
from bench.step import train_step
from bench.timing import StepTimer
from fngd import optimizers, phases

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SIZE = os.environ.get("FNGD_BENCH_SIZE", "paper" if DEVICE == "cuda" else "small")
DEFAULT_WORKLOADS = (
    "mlp-digits,cnn-mnist1d,resnet18-cifar100,transformer-multi30k"
    if DEVICE == "cuda"
    else "mlp-digits,cnn-mnist1d"
)
WORKLOADS = os.environ.get("FNGD_BENCH_WORKLOADS", DEFAULT_WORKLOADS).split(",")
PHASE_STEPS = 5  # untimed steps whose phase times go into extra_info
THREADS = int(os.environ.get("FNGD_BENCH_THREADS", "1"))


@pytest.fixture(scope="module", autouse=True)
def _cpu_threads() -> Any:
    previous = torch.get_num_threads()
    if DEVICE == "cpu":
        torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(previous)


@dataclass(frozen=True)
class Variant:
    label: str
    optimizer: str
    mode: str | None
    overrides: dict[str, Any] = field(default_factory=dict)
    reset_each_round: bool = False


VARIANTS = [
    Variant("sgd", "sgd", None),
    Variant("adamw", "adamw", None),
    Variant("kfac-inverse", "kfac", "inverse", {"inv_update_steps": 1}),
    Variant("kfac-no-inverse", "kfac", "no_inverse", {"inv_update_steps": 1_000_000}),
    Variant("ngd", "ngd", "inversion"),
    Variant("fngd-inversion", "fngd", "inversion", reset_each_round=True),
    Variant("fngd-weighted-sum", "fngd", "weighted_sum"),
]


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _setup(workload_name: str, variant: Variant) -> tuple[Any, Any, tuple[Any, ...]]:
    w = workloads.get(workload_name, device=DEVICE, seed=0, size=SIZE)
    hp = {**w.hparams.get(variant.optimizer, {}), **variant.overrides}
    if variant.optimizer in ("fngd", "ngd"):
        hp["steps_per_epoch"] = len(w.train_loader)
    opt = optimizers.build(variant.optimizer, w.model, **hp)
    inputs, targets, ids = next(iter(w.train_loader))
    batch = (inputs, targets, ids)
    train_step(w, opt, *batch)  # first step: FNGD stores c, KFAC computes its first inverse
    _sync()
    return w, opt, batch


def _phase_medians(w: Any, opt: Any, batch: tuple[Any, ...], reset: Any) -> dict[str, float]:
    timer = StepTimer(DEVICE)
    previous = phases.set_recorder(timer)
    try:
        for i in range(PHASE_STEPS):
            reset()
            timer.start_step(i, 0)
            train_step(w, opt, *batch)
            timer.end_step(opt.mode)
    finally:
        phases.set_recorder(previous)
    by_phase: dict[str, list[float]] = defaultdict(list)
    for r in timer.flush():
        by_phase[r["phase"] or "step"].append(r["seconds"])
    return {f"{k}_median_s": statistics.median(v) for k, v in by_phase.items()}


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.label for v in VARIANTS])
@pytest.mark.parametrize("workload_name", WORKLOADS)
def test_step_time(benchmark: Any, workload_name: str, variant: Variant) -> None:
    w, opt, batch = _setup(workload_name, variant)
    pre = opt.preconditioner

    def reset() -> None:
        if variant.reset_each_round:
            pre.reset_coefficients()

    def step() -> None:
        train_step(w, opt, *batch)
        _sync()

    benchmark.group = f"{workload_name} ({DEVICE}, {SIZE})"
    benchmark.pedantic(step, setup=reset, rounds=20, warmup_rounds=3, iterations=1)
    assert opt.mode == variant.mode, f"{variant.label} ran {opt.mode!r}"
    benchmark.extra_info.update(
        {
            "workload": workload_name,
            "optimizer": variant.optimizer,
            "variant": variant.label,
            "mode": opt.mode,
            "device": DEVICE,
            "size": SIZE,
            "batch_size": w.batch_size,
            "data_source": w.data_source,
            "hparams": {k: v for k, v in opt.hparams.items() if not isinstance(v, tuple)},
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads(),
            **_phase_medians(w, opt, batch, reset),
        }
    )
