"""pytest-benchmark: FNGD's two phases against SGD on one MLP step, model size swept.

The step-time claim behind FNGD is that a weighted-sum step costs what an SGD step costs.
That holds for the arithmetic (one weight-gradient GEMM either way); what remains is a fixed
per-layer cost (a Python-level autograd function, a row scaling, the coefficient gather),
which shows on tiny models and vanishes on real ones. The sweep makes both visible: MLPs of
width 128 and 512 (784-W-W-10, batch 128) on random tensors. The inputs are synthetic:
only the step time is measured here, never a loss or an accuracy.

    pytest bench/test_fngd_step.py --benchmark-only --benchmark-group-by=param:width
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from torch import nn

from bench.step import train_step
from fngd import optimizers

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BATCH = 128
THREADS = int(os.environ.get("FNGD_BENCH_THREADS", "1"))


class RandomMLP:
    """An MLP on random tensors: enough of a workload for ``train_step``."""

    def __init__(self, width: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.model = nn.Sequential(
            nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, 10),
        ).to(DEVICE)
        self.x = torch.randn(BATCH, 784, generator=g).to(DEVICE)
        self.y = torch.randint(0, 10, (BATCH,), generator=g).to(DEVICE)
        self.ids = torch.arange(BATCH)

    @staticmethod
    def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    @staticmethod
    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y)


@pytest.mark.parametrize("width", [128, 512])
@pytest.mark.parametrize("variant", ["sgd", "fngd-inversion", "fngd-weighted-sum"])
def test_mlp_step(benchmark: Any, variant: str, width: int) -> None:
    previous = torch.get_num_threads()
    if DEVICE == "cpu":
        torch.set_num_threads(THREADS)
    try:
        task = RandomMLP(width)
        name = "sgd" if variant == "sgd" else "fngd"
        opt = optimizers.build(name, task.model, lr=1e-3, damping=0.1) if name == "fngd" \
            else optimizers.build(name, task.model, lr=1e-3)
        train_step(task, opt, task.x, task.y, task.ids)  # FNGD: stores the coefficients

        def reset() -> None:
            if variant == "fngd-inversion":
                opt.preconditioner.reset_coefficients()

        def step() -> None:
            train_step(task, opt, task.x, task.y, task.ids)
            if DEVICE == "cuda":
                torch.cuda.synchronize()

        benchmark.group = f"mlp 784-{width}-{width}-10, batch {BATCH} ({DEVICE})"
        benchmark.pedantic(step, setup=reset, rounds=30, warmup_rounds=5, iterations=1)
        want = {"sgd": None, "fngd-inversion": "inversion", "fngd-weighted-sum": "weighted_sum"}
        assert opt.mode == want[variant]
        benchmark.extra_info.update(
            {"variant": variant, "width": width, "batch_size": BATCH, "device": DEVICE,
             "threads": torch.get_num_threads(), "data_source": "synthetic (timing only)",
             "torch_version": torch.__version__}
        )
    finally:
        torch.set_num_threads(previous)
