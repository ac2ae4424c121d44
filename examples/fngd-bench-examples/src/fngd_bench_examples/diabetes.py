"""``diabetes-resmlp``: regression with MSE, a residual MLP on scikit-learn's diabetes data.

Real data that ships with scikit-learn (442 patients, 10 features, a disease-progression
score one year on), so it runs anywhere. Features and target are standardised with the
training split's statistics, so the MSE is in units of the target's variance (a model that
always predicts the mean scores about 1.0; a linear model about 0.5). The hyperparameters
are hand-set from a short sweep on seed 0 (SGD lr 0.01 and 0.03; FNGD damping 0.1 and 1.0:
0.1 diverged to MSE above 1), not tuned: ``fngd-bench tune`` does that on equal budgets.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from torch import nn

from bench.workloads import Workload, from_datasets

SPLIT_SEED = 0
WIDTH = 64


class ResidualMLP(nn.Module):
    """Linear in, two residual blocks (LayerNorm, Linear, GELU, Linear, skip), linear out."""

    def __init__(self, inputs: int, width: int = WIDTH, blocks: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width)
            )
            for _ in range(blocks)
        )
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h).squeeze(-1)


def _splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x, y = load_diabetes(return_X_y=True)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, random_state=SPLIT_SEED)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, random_state=SPLIT_SEED
    )
    mx, sx = x_train.mean(0), x_train.std(0)
    my, sy = y_train.mean(), y_train.std()

    def norm(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ((a - mx) / sx).astype(np.float32), ((b - my) / sy).astype(np.float32)

    return {
        "train": norm(x_train, y_train),
        "val": norm(x_val, y_val),
        "test": norm(x_test, y_test),
    }


def build(*, device, seed, batch_size, data_root, size) -> Workload:  # noqa: ANN001
    """Residual MLP regression (MSE) on scikit-learn's diabetes data (real, 442 samples)."""
    del data_root, size  # ships with scikit-learn; one size
    s = _splits()
    return from_datasets(
        "diabetes-resmlp",
        model=lambda: ResidualMLP(s["train"][0].shape[1]),
        train=s["train"],
        val=s["val"],
        test=s["test"],
        loss="mse",
        metric="mse",
        # test MSE in target variances (the mean predictor: about 1.0); SGD passes it in
        # its first epochs and then overfits these 282 samples
        target=0.7,
        batch_size=batch_size or 32,
        epochs=10,
        device=device,
        seed=seed,
        hparams={
            "sgd": {"lr": 0.01},
            "fngd": {"lr": 0.03, "damping": 1.0},
            "ngd": {"lr": 0.03, "damping": 1.0},
            "kfac": {"lr": 0.01},
        },
        data_source="real",
        data_note=f"scikit-learn load_diabetes, split {len(s['train'][1])} train / "
        f"{len(s['val'][1])} val / {len(s['test'][1])} test, standardised",
    )
