"""``cnn-mnist1d``: a small 1-D CNN on MNIST-1D.

MNIST-1D (Greydanus, 2020) is a published benchmark generated procedurally: ten 1-D digit
templates are padded, translated, sheared, scaled and noised into length-40 signals. The
``mnist1d`` package's own generator, ``mnist1d.data.make_dataset`` with its default arguments
(5000 samples, 80/20 split, generator seed 42), rebuilds the reference data set locally;
nothing is downloaded. The generator reseeds Python's and NumPy's global RNGs, so their
state is saved and restored around it.
"""

from __future__ import annotations

import functools
import os
import random

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

NAME = "cnn-mnist1d"
DESCRIPTION = "small 1-D CNN on MNIST-1D, generated locally by the mnist1d package (real data)"

BATCH_SIZE = 100
EPOCHS = 30
TARGET = 0.8  # test accuracy
CHANNELS = {"small": 32, "paper": 64}

# Suggested hyperparameters per optimizer, from short CPU sweeps of lr x damping (8 epochs,
# seed 0, small size). NGD/FNGD diverged with damping 1e-2; FNGD, whose coefficients are
# reused across epochs, needs a smaller step than NGD (lr 0.05 diverged in epoch 2).
HPARAMS: dict[str, dict] = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "adamw": {"lr": 1e-2, "weight_decay": 1e-2},
    "kfac": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "damping": 1e-2},
    "ngd": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "damping": 0.1},
    "fngd": {"lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4, "damping": 0.1},
}


class CNN1d(nn.Module):
    """Three strided 1-D convolutions and a linear classifier, for length-40 signals.

    The convolutions are ``nn.Conv2d`` with ``(1, k)`` kernels on inputs shaped
    ``(N, 1, 1, 40)``, which computes exactly a 1-D convolution. The reason: the FNGD and KFAC
    preconditioners handle ``nn.Linear`` and ``nn.Conv2d`` layers only, and an ``nn.Conv1d``
    would be left unpreconditioned (plain gradient), which would not be a fair comparison.
    """

    def __init__(self, channels: int = 32, length: int = 40, num_classes: int = 10) -> None:
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c, kernel_size=(1, 5), stride=(1, 2), padding=(0, 2)),
            nn.ReLU(),
            nn.Conv2d(c, c, kernel_size=(1, 3), stride=(1, 2), padding=(0, 1)),
            nn.ReLU(),
            nn.Conv2d(c, c, kernel_size=(1, 3), stride=(1, 2), padding=(0, 1)),
            nn.ReLU(),
        )
        out_len = length
        for _ in range(3):
            out_len = (out_len + 1) // 2
        self.classifier = nn.Linear(c * out_len, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (N, L) signals
            x = x[:, None, None, :]
        return self.classifier(self.features(x).flatten(1))


@functools.lru_cache(maxsize=1)
def generate() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` from the package's generator, default args."""
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return (
        np.asarray(data["x"], dtype=np.float32),
        np.asarray(data["y"], dtype=np.int64),
        np.asarray(data["x_test"], dtype=np.float32),
        np.asarray(data["y_test"], dtype=np.int64),
    )


def build(
    device: torch.device,
    seed: int,
    batch_size: int | None,
    data_root: str | os.PathLike[str] | None,
    size: str,
) -> Workload:
    del data_root  # generated, nothing to read or download
    x_train, y_train, x_test, y_test = generate()
    # (N, 1, 1, 40): a one-row image, for the Conv2d-as-Conv1d layers.
    X_train_t = torch.from_numpy(x_train)[:, None, None, :].contiguous().to(device)
    X_test_t = torch.from_numpy(x_test)[:, None, None, :].contiguous().to(device)
    y_train_t = torch.from_numpy(y_train).to(device)
    y_test_t = torch.from_numpy(y_test).to(device)
    batch = batch_size or BATCH_SIZE
    channels = CHANNELS[size]
    model = build_model(lambda: CNN1d(channels, length=x_train.shape[1]), seed, device)
    loader = TensorLoader(X_train_t, y_train_t, batch, shuffle=True, drop_last=False, seed=seed)
    return Workload(
        name=NAME,
        model=model,
        loss_fn=cross_entropy,
        per_sample_loss=per_sample_cross_entropy,
        train_loader=loader,
        eval_fn=classification_eval(lambda m, x: m(x), X_test_t, y_test_t),
        metric_name="accuracy",
        higher_is_better=True,
        target=TARGET,
        data_source="real",
        data_note=(
            f"MNIST-1D generated locally by mnist1d.data.make_dataset (default args: "
            f"{len(y_train)} train / {len(y_test)} test signals of length {x_train.shape[1]})"
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
    )
