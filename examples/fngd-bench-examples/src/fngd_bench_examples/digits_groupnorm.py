"""``digits-gn-resnet``: a small residual CNN with GroupNorm on scikit-learn's 8x8 digits.

Layers the suite's own workloads do not use: GroupNorm, residual convolution blocks, global
average pooling. Real data that ships with scikit-learn (1797 images, 10 classes). FNGD
preconditions the convolutions and the linear head; GroupNorm's scale and shift take the
plain gradient, and FNGD says so (``coverage()``; the report's label shows the share).
The hyperparameters are hand-set from a short sweep on seed 0 (SGD lr 0.05-0.2; FNGD
damping 0.1, which stalled near chance accuracy, and 1.0), not tuned.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from bench.workloads import Workload, from_datasets

SPLIT_SEED = 0
CHANNELS = 16
GROUPS = 4


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.GroupNorm(GROUPS, channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.GroupNorm(GROUPS, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


def model(channels: int = CHANNELS, classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1, bias=False),
        nn.GroupNorm(GROUPS, channels),
        nn.ReLU(),
        ResBlock(channels),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, classes),
    )


def build(*, device, seed, batch_size, data_root, size) -> Workload:  # noqa: ANN001
    """Residual CNN with GroupNorm on scikit-learn's 8x8 digits (real data, 1797 images)."""
    del data_root, size
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, random_state=SPLIT_SEED, stratify=y
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.15, random_state=SPLIT_SEED, stratify=y_rest
    )
    return from_datasets(
        "digits-gn-resnet",
        model=model,
        train=(x_train, y_train),
        val=(x_val, y_val),
        test=(x_test, y_test),
        loss="cross_entropy",
        metric="accuracy",
        target=0.9,
        batch_size=batch_size or 64,
        epochs=20,
        device=device,
        seed=seed,
        hparams={
            "sgd": {"lr": 0.05},
            "fngd": {"lr": 0.05, "damping": 1.0},
            "ngd": {"lr": 0.05, "damping": 1.0},
        },
        data_source="real",
        data_note=f"scikit-learn load_digits as 1x8x8 images, {len(y_train)} train / "
        f"{len(y_val)} val / {len(y_test)} test",
    )
