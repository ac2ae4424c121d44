"""``cnn-mnist1d``: a small 1-D CNN on MNIST-1D.

MNIST-1D (Greydanus, 2020) is a published benchmark generated procedurally: ten 1-D digit
templates are padded, translated, sheared, scaled and noised into length-40 signals. The
``mnist1d`` package's own generator, ``mnist1d.data.make_dataset`` with its default arguments
(5000 samples, 80/20 split, generator seed 42), rebuilds the reference data set locally;
nothing is downloaded. The generator reseeds Python's and NumPy's global RNGs, so their
state is saved and restored around it. A fixed ``VAL_FRACTION`` of the training signals is
held out as the validation split (tuning evaluates there; the test split stays for reports).
``cnn-mnist1d-large`` (``bench.workloads.cnn_mnist1d_large``) builds the same model on more
signals from the same generator through :func:`build_mnist1d`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import random

import numpy as np
import torch
from torch import nn

from bench.workloads.common import (
    build_model,
    cached_arrays,
    classification_eval,
    cross_entropy,
    holdout,
    per_sample_cross_entropy,
)
from bench.workloads.loader import TensorLoader
from bench.workloads.workload import Workload

NAME = "cnn-mnist1d"
DESCRIPTION = "small 1-D CNN on MNIST-1D, generated locally by the mnist1d package (real data)"

BATCH_SIZE = 100
EPOCHS = 30
TARGET = 0.8  # test accuracy
NUM_SAMPLES = 5000  # the generator's default: 4000 train / 1000 test
VAL_FRACTION = 0.1  # of the training signals, held out for validation
SPLIT_SEED = 0
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


@functools.lru_cache(maxsize=2)
def generate(
    num_samples: int = NUM_SAMPLES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` from the package's generator: its default
    arguments, but ``num_samples`` signals (split 80/20 by the generator). Kept on disk
    (``bench.workloads.common.cached_arrays``): 20000 signals take about 25 s to generate on
    one core, and every process would generate them again."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    settings = json.dumps(vars(args), sort_keys=True)
    digest = hashlib.sha256(settings.encode()).hexdigest()[:12]
    key = f"mnist1d-{importlib.metadata.version('mnist1d')}-{num_samples}-{digest}"
    data = cached_arrays(key, lambda: _make(args))
    return data["x"], data["y"], data["x_test"], data["y_test"]


def _make(args: object) -> dict[str, np.ndarray]:
    from mnist1d.data import make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x": np.asarray(data["x"], dtype=np.float32),
        "y": np.asarray(data["y"], dtype=np.int64),
        "x_test": np.asarray(data["x_test"], dtype=np.float32),
        "y_test": np.asarray(data["y_test"], dtype=np.int64),
    }


def build(
    device: torch.device,
    seed: int,
    batch_size: int | None,
    data_root: str | os.PathLike[str] | None,
    size: str,
) -> Workload:
    del data_root  # generated, nothing to read or download
    return build_mnist1d(
        NAME,
        DESCRIPTION,
        device=device,
        seed=seed,
        batch_size=batch_size or BATCH_SIZE,
        size=size,
        num_samples=NUM_SAMPLES,
        epochs=EPOCHS,
        target=TARGET,
        hparams=HPARAMS,
    )


def build_mnist1d(
    name: str,
    description: str,
    *,
    device: torch.device,
    seed: int,
    batch_size: int,
    size: str,
    num_samples: int,
    epochs: int,
    target: float,
    hparams: dict[str, dict],
    schedule: dict | None = None,
) -> Workload:
    """The CNN on ``num_samples`` MNIST-1D signals: train (less the validation split), val,
    test."""
    x_all, y_all, x_test, y_test = generate(num_samples)
    train, val = holdout(len(y_all), VAL_FRACTION, SPLIT_SEED)

    def signals(x: np.ndarray) -> torch.Tensor:  # (N, 1, 1, L): one-row images, for Conv2d
        return torch.from_numpy(x)[:, None, None, :].contiguous().to(device)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y).to(device)

    X_train_t, y_train_t = signals(x_all[train]), labels(y_all[train])
    X_val_t, y_val_t = signals(x_all[val]), labels(y_all[val])
    X_test_t, y_test_t = signals(x_test), labels(y_test)
    channels = CHANNELS[size]
    length = x_all.shape[1]
    model = build_model(lambda: CNN1d(channels, length=length), seed, device)
    loader = TensorLoader(
        X_train_t, y_train_t, batch_size, shuffle=True, drop_last=False, seed=seed
    )
    return Workload(
        name=name,
        model=model,
        loss_fn=cross_entropy,
        per_sample_loss=per_sample_cross_entropy,
        train_loader=loader,
        eval_fn=classification_eval(lambda m, x: m(x), X_test_t, y_test_t),
        val_eval_fn=classification_eval(lambda m, x: m(x), X_val_t, y_val_t),
        metric_name="accuracy",
        higher_is_better=True,
        target=target,
        data_source="real",
        data_note=(
            f"MNIST-1D generated locally by mnist1d.data.make_dataset (default args, "
            f"{num_samples} samples: {len(train)} train / {len(val)} val / {len(y_test)} test "
            f"signals of length {length})"
        ),
        batch_size=batch_size,
        epochs=epochs,
        hparams={k: dict(v) for k, v in hparams.items()},
        schedule=dict(schedule or {}),
        device=device,
        seed=seed,
        size=size,
        description=description,
        num_train=len(train),
        num_eval=len(y_test),
        num_val=len(val),
    )
