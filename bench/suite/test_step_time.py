"""pytest-benchmark suite: one training step per optimiser (and phase) per workload.

    pytest bench --benchmark-only --benchmark-json=out.json

Each benchmark builds its cell as the runner does (``bench.cell.build.build_cell``) and times
``bench.cell.step.train_step`` on one fixed batch, with the GPU
synchronised inside the timed call. FNGD is timed in both of its phases (inversion: its
coefficient table is cleared before every round; weighted sum: primed once, then every call
reuses the stored coefficients); KFAC with and without its inverse update (inverse every
step, or never after the first). Each benchmark checks the optimiser really ran the phase
it is named after, and stores per-phase medians (steps through the runner's loop and
timers, apart from the benchmarked ones) in ``extra_info``. Benchmarks are grouped by workload.

Workloads: the small CPU ones by default, and the paper-sized GPU ones when CUDA is there;
``FNGD_BENCH_WORKLOADS=a,b`` and ``FNGD_BENCH_SIZE=small|paper`` override. On the CPU, torch
runs ``FNGD_BENCH_THREADS`` intra-op threads (default 1): the small models gain nothing from
more, and on a shared machine spinning worker threads make step times erratic.
"""

from __future__ import annotations

import itertools
import os
import statistics
from collections import defaultdict
from typing import Any

import pytest
import torch

from bench.cell import run_steps
from bench.cell.timing import StepTimer
from bench.host.env import cpu_threads
from bench.measure.step_variants import STEP_VARIANTS, HeldStep, StepVariant, prepare
from bench.records import split_phase_key
from fngd import phases

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
    with cpu_threads(THREADS, DEVICE):
        yield


def _phase_medians(held: HeldStep) -> dict[str, float]:
    """Per-phase medians of ``PHASE_STEPS`` steps on the held batch, through the runner's loop."""
    cell = held.cell
    timer = StepTimer(cell.device)
    previous = phases.set_recorder(timer)
    try:
        held.before_step()
        run_steps(
            held.workload,
            held.opt,
            itertools.repeat(held.batch),
            PHASE_STEPS,
            timer=timer,
            epoch=0,
            state=cell.loop_state(),
            device=cell.device,
            loss_sum=torch.zeros((), device=cell.device),
            on_step=lambda *_: held.before_step(),
        )
    finally:
        phases.set_recorder(previous)
    by_phase: dict[str, list[float]] = defaultdict(list)
    for r in timer.flush():
        by_phase["step"].append(r["seconds"])
        per_name: dict[str, float] = defaultdict(float)
        for key, seconds in r["phases"].items():
            per_name[split_phase_key(key)[0]] += seconds
        for name, seconds in per_name.items():
            by_phase[name].append(seconds)
    return {f"{k}_median_s": statistics.median(v) for k, v in by_phase.items()}


@pytest.mark.parametrize("variant", list(STEP_VARIANTS.values()), ids=list(STEP_VARIANTS))
@pytest.mark.parametrize("workload_name", WORKLOADS)
def test_step_time(benchmark: Any, workload_name: str, variant: StepVariant) -> None:
    held = prepare(workload_name, variant, DEVICE, SIZE)
    benchmark.group = f"{workload_name} ({DEVICE}, {SIZE})"
    benchmark.pedantic(held.step, setup=held.before_step, rounds=20, warmup_rounds=3, iterations=1)
    opt, w = held.opt, held.workload
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
            **_phase_medians(held),
        }
    )
