"""``mlp-digits``: an MLP on scikit-learn's 8x8 handwritten digits.

Real data that ships with scikit-learn (1797 images, 64 features, 10 classes), so it is
always available. The train/val/test split is fixed (``SPLIT_SEED``; both stratified), so
every run seed sees the same split; the validation split is held out from training (tuning
evaluates there, reports on test). Features are standardised with the training split's
statistics.
"""

from __future__ import annotations

import os

import numpy as np
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

NAME = "mlp-digits"
DESCRIPTION = "MLP 64-128-128-10 on scikit-learn's 8x8 digits (real data, always available)"

SPLIT_SEED = 0
TEST_FRACTION = 0.2
VAL_FRACTION = 0.15  # of what is left for training
BATCH_SIZE = 64
EPOCHS = 10
TARGET = 0.95  # test accuracy

# Suggested hyperparameters per optimizer, from short CPU sweeps of lr x damping (6 epochs,
# seed 0). NGD/FNGD/KFAC diverged or stalled with damping 1e-2; FNGD, whose coefficients are
# reused across epochs, needs a smaller step than NGD (lr 0.05 diverged in epoch 2).
HPARAMS: dict[str, dict] = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "adamw": {"lr": 1e-3, "weight_decay": 1e-2},
    "kfac": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "damping": 0.1},
    "ngd": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "damping": 0.1},
    "fngd": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "damping": 0.1},
}


class MLP(nn.Module):
    """Linear-ReLU stack; no in-place ops, so the preconditioners' hooks see every input."""

    def __init__(self, sizes: tuple[int, ...] = (64, 128, 128, 10)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


Split = tuple[np.ndarray, np.ndarray]  # (float32 features, int64 labels)


def load_digits_split() -> tuple[Split, Split, Split]:
    """Standardised ``(train, val, test)`` splits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=VAL_FRACTION, random_state=SPLIT_SEED, stratify=y_rest
    )
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std = np.where(std > 1e-3, std, 1.0)  # some border pixels are constant in the train split

    def split(X_part: np.ndarray, y_part: np.ndarray) -> Split:
        return ((X_part - mean) / std).astype(np.float32), y_part.astype(np.int64)

    return split(X_train, y_train), split(X_val, y_val), split(X_test, y_test)


def build(
    device: torch.device,
    seed: int,
    batch_size: int | None,
    data_root: str | os.PathLike[str] | None,
    size: str,
) -> Workload:
    del data_root  # the data ships with scikit-learn; both sizes are the same
    (X_train, y_train), (X_val, y_val), (X_test, y_test) = load_digits_split()
    X_train_t = torch.from_numpy(X_train).to(device)
    y_train_t = torch.from_numpy(y_train).to(device)
    X_val_t = torch.from_numpy(X_val).to(device)
    y_val_t = torch.from_numpy(y_val).to(device)
    X_test_t = torch.from_numpy(X_test).to(device)
    y_test_t = torch.from_numpy(y_test).to(device)
    batch = batch_size or BATCH_SIZE
    model = build_model(MLP, seed, device)
    loader = TensorLoader(X_train_t, y_train_t, batch, shuffle=True, drop_last=False, seed=seed)
    n_total = len(y_train) + len(y_val) + len(y_test)
    return Workload(
        name=NAME,
        model=model,
        loss_fn=cross_entropy,
        per_sample_loss=per_sample_cross_entropy,
        train_loader=loader,
        eval_fn=classification_eval(lambda m, x: m(x), X_test_t, y_test_t),
        val_eval_fn=classification_eval(lambda m, x: m(x), X_val_t, y_val_t),
        metric_name="accuracy",
        higher_is_better=True,
        target=TARGET,
        data_source="real",
        data_note=(
            f"sklearn digits ({n_total} images; {len(y_train)} train / {len(y_val)} val / "
            f"{len(y_test)} test, split seed {SPLIT_SEED})"
        ),
        batch_size=batch,
        epochs=EPOCHS,
        hparams={k: dict(v) for k, v in HPARAMS.items()},
        device=device,
        seed=seed,
        size=size,
        description=DESCRIPTION,
        num_train=len(y_train),
        num_eval=len(y_test),
        num_val=len(y_val),
    )
