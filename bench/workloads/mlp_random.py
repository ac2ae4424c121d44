"""``mlp-random-<width>``: an MLP 784-W-W-10 on one batch of random tensors, for timing only.

It isolates the per-layer cost of an optimiser from any data set (the width sweep of
``bench/suite/test_fngd_step.py`` and ``fngd-bench ratio --workload mlp-random-128``). Its one
batch of ``BATCH_SIZE`` samples is the whole training set, so every epoch is that batch;
its records say ``synthetic (timing only)``: its losses and accuracies mean nothing.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from bench.workloads.common import (
    build_model,
    classification_eval,
    cross_entropy,
    per_sample_cross_entropy,
)
from bench.workloads.loader import TensorLoader
from bench.workloads.workload import Workload

PREFIX = "mlp-random-"
DESCRIPTION = "MLP 784-W-W-10 on one batch of random tensors (synthetic, timing only)"
BATCH_SIZE = 128
INPUTS, CLASSES = 784, 10
HPARAMS: dict[str, dict] = {"fngd": {"damping": 0.1}, "ngd": {"damping": 0.1}}


def width_of(name: str) -> int:
    """The ``W`` of ``mlp-random-W`` (a positive integer), else ``ValueError``."""
    suffix = name[len(PREFIX) :] if name.startswith(PREFIX) else ""
    if not suffix.isdigit() or int(suffix) < 1:
        raise ValueError(f"{name!r} is not {PREFIX}<width> with a positive integer width")
    return int(suffix)


def build(
    device: torch.device,
    seed: int,
    batch_size: int | None,
    data_root: str | os.PathLike[str] | None,
    size: str,
    *,
    name: str,
) -> Workload:
    del data_root, size  # nothing to read; one size
    width = width_of(name)
    batch = batch_size or BATCH_SIZE
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, INPUTS, generator=g).to(device)
    y = torch.randint(0, CLASSES, (batch,), generator=g).to(device)

    def mlp() -> nn.Module:
        return nn.Sequential(
            nn.Linear(INPUTS, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, CLASSES),
        )

    return Workload(
        name=name,
        model=build_model(mlp, seed, device),
        loss_fn=cross_entropy,
        per_sample_loss=per_sample_cross_entropy,
        train_loader=TensorLoader(x, y, batch, shuffle=False, seed=seed),
        eval_fn=classification_eval(lambda m, inputs: m(inputs), x, y),
        metric_name="accuracy",
        higher_is_better=True,
        target=1.0,
        data_source="synthetic (timing only)",
        data_note=f"one batch of {batch} standard-normal inputs and uniform labels (timing only)",
        batch_size=batch,
        epochs=1,
        hparams={k: dict(v) for k, v in HPARAMS.items()},
        device=device,
        seed=seed,
        description=DESCRIPTION,
        num_train=batch,
        num_eval=batch,
    )


build.description = DESCRIPTION  # its line in `fngd-bench list`
