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

from bench.workloads.classification import Classifier, classification_workload
from bench.workloads.common import build_model
from bench.workloads.workload import Workload

NAME = "mlp-digits"
DESCRIPTION = "MLP 64-128-128-10 on scikit-learn's 8x8 digits (real data, always available)"

SPLIT_SEED = 0
TEST_FRACTION = 0.2
VAL_FRACTION = 0.15  # of what is left for training
BATCH_SIZE = 64
EPOCHS = 10
TARGET = 0.95  # test accuracy

# What differs from the optimizers' defaults (fngd.optimizers.DEFAULTS), from short CPU sweeps
# of lr x damping (6 epochs, seed 0). NGD/FNGD/KFAC diverged or stalled with damping 1e-2;
# FNGD, whose coefficients are reused across epochs, needs a smaller step than NGD (lr 0.05
# diverged in epoch 2). AdamW: its defaults.
HPARAMS: dict[str, dict] = {
    "sgd": {"lr": 0.05},
    "kfac": {"lr": 0.05, "damping": 0.1},
    "ngd": {"lr": 0.05, "damping": 0.1},
    "fngd": {"lr": 0.01, "damping": 0.1},
}
SPEC = Classifier(
    name=NAME,
    description=DESCRIPTION,
    batch_size=BATCH_SIZE,
    epochs=EPOCHS,
    target=TARGET,
    hparams=HPARAMS,
)


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
    splits = load_digits_split()
    train, val, test = ((torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
                        for x, y in splits)
    n_total = sum(len(y) for _, y in splits)
    return classification_workload(
        SPEC,
        model=build_model(MLP, seed, device),
        train=train,
        test=test,
        val=val,
        batch_size=batch_size,
        seed=seed,
        size=size,
        data_source="real",
        data_note=(
            f"sklearn digits ({n_total} images; {len(train[1])} train / {len(val[1])} val / "
            f"{len(test[1])} test, split seed {SPLIT_SEED})"
        ),
    )


build.description = DESCRIPTION  # its line in `fngd-bench list`
