"""pytest-benchmark: FNGD's two phases against SGD on one MLP step, model size swept.

The step-time claim behind FNGD is that a weighted-sum step costs what an SGD step costs.
That holds for the arithmetic (one weight-gradient GEMM either way); what remains is a fixed
per-layer cost (a Python-level autograd function, a row scaling, the coefficient gather),
which shows on tiny models and fades on larger ones. The sweep makes both visible: MLPs
784-W-W-10 of width 128 and 512, batch 128, on random tensors (timing only: no loss or
accuracy is reported). For ratios on a shared machine prefer the interleaved
``fngd-bench ratio --workload mlp-random-128 mlp-random-512``.

    pytest bench/suite/test_fngd_step.py --benchmark-only
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from bench.host.env import cpu_threads
from bench.measure.step_variants import STEP_VARIANTS, prepare

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
THREADS = int(os.environ.get("FNGD_BENCH_THREADS", "1"))


@pytest.mark.parametrize("width", [128, 512])
@pytest.mark.parametrize(
    "variant",
    ["sgd", "fngd-inversion", "fngd-weighted-sum", "fngd-net-inversion", "fngd-net-weighted-sum"],
)
def test_mlp_step(benchmark: Any, variant: str, width: int) -> None:
    with cpu_threads(THREADS, DEVICE):
        held = prepare(f"mlp-random-{width}", STEP_VARIANTS[variant], DEVICE, "small")
        benchmark.group = f"mlp 784-{width}-{width}-10, batch 128 ({DEVICE})"
        benchmark.pedantic(
            held.step, setup=held.before_step, rounds=30, warmup_rounds=5, iterations=1
        )
        assert held.opt.mode == STEP_VARIANTS[variant].mode
        benchmark.extra_info.update(
            {
                "variant": variant,
                "width": width,
                "batch_size": 128,
                "device": DEVICE,
                "threads": torch.get_num_threads(),
                "data_source": held.workload.data_source,
                "torch_version": torch.__version__,
            }
        )
