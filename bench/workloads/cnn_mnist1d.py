"""``cnn-mnist1d`` and ``cnn-mnist1d-large``: a small 1-D CNN on MNIST-1D, at two data sizes.

MNIST-1D (Greydanus, 2020) is a published benchmark generated procedurally: ten 1-D digit
templates are padded, translated, sheared, scaled and noised into length-40 signals. The
``mnist1d`` package's own generator, ``mnist1d.data.make_dataset`` with its default arguments
(5000 samples, 80/20 split, generator seed 42), rebuilds the reference data set locally;
nothing is downloaded. The generator reseeds Python's and NumPy's global RNGs, so their
state is saved and restored around it. A fixed ``VAL_FRACTION`` of the training signals is
held out as the validation split (tuning evaluates there; the test split stays for reports).
``cnn-mnist1d-large`` trains the same model on four times as many signals from the same
generator, to a target that tuned SGD reaches only after about ten epochs, with a warm-up +
cosine learning-rate schedule over the epoch budget: with many epochs per run, FNGD's reuse
epochs (after its one inversion epoch) dominate the time to target, as they do in the paper.
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

from bench.workloads.classification import Classifier, classification_workload
from bench.workloads.common import build_model, cached_arrays, holdout
from bench.workloads.workload import Workload

VAL_FRACTION = 0.1  # of the training signals, held out for validation
SPLIT_SEED = 0
CHANNELS = {"small": 32, "paper": 64}
NUM_SAMPLES = 5000  # the generator's default: 4000 train / 1000 test

# What differs from the optimizers' defaults (fngd.optimizers.DEFAULTS), from short CPU sweeps
# of lr x damping (8 epochs, seed 0, small size). NGD/FNGD diverged with damping 1e-2; FNGD,
# whose coefficients are reused across epochs, needs a smaller step than NGD (lr 0.05
# diverged in epoch 2).
HPARAMS: dict[str, dict] = {
    "sgd": {"lr": 0.05},
    "adamw": {"lr": 1e-2},
    "kfac": {"lr": 0.05, "damping": 1e-2},
    "ngd": {"lr": 0.05, "damping": 0.1},
    "fngd": {"lr": 0.02, "damping": 0.1},
}

#: Each workload of this module and the MNIST-1D signals it generates.
SIZES: dict[str, tuple[Classifier, int]] = {
    "cnn-mnist1d": (
        Classifier(
            name="cnn-mnist1d",
            description="small 1-D CNN on MNIST-1D, generated locally by the mnist1d package "
            "(real data)",
            batch_size=100,
            epochs=30,
            target=0.8,
            hparams=HPARAMS,
        ),
        NUM_SAMPLES,
    ),
    "cnn-mnist1d-large": (
        Classifier(
            name="cnn-mnist1d-large",
            description="the cnn-mnist1d CNN on 20000 MNIST-1D signals (real data, generated "
            "locally); a target SGD reaches after >= 10 epochs",
            batch_size=100,
            epochs=30,
            # accuracy: SGD (the preset hparams, seed 0) first reached it in epoch 14 of 30
            target=0.965,
            hparams=HPARAMS,
            schedule={"schedule": "warmup-cosine", "warmup_fraction": 0.05},
        ),
        20000,  # 16000 train (1600 of them held out for validation) / 4000 test
    ),
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
    name: str = "cnn-mnist1d",
) -> Workload:
    """Workload ``name`` (a key of :data:`SIZES`): train (less the validation split), val,
    test."""
    del data_root  # generated, nothing to read or download
    spec, num_samples = SIZES[name]
    x_all, y_all, x_test, y_test = generate(num_samples)
    train, val = holdout(len(y_all), VAL_FRACTION, SPLIT_SEED)

    def split(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # signals as (N, 1, 1, L) one-row images, for Conv2d
        return (
            torch.from_numpy(x)[:, None, None, :].contiguous().to(device),
            torch.from_numpy(y).to(device),
        )

    length = x_all.shape[1]
    channels = CHANNELS[size]
    return classification_workload(
        spec,
        model=build_model(lambda: CNN1d(channels, length=length), seed, device),
        train=split(x_all[train], y_all[train]),
        test=split(x_test, y_test),
        val=split(x_all[val], y_all[val]),
        batch_size=batch_size,
        seed=seed,
        size=size,
        data_source="real",
        data_note=(
            f"MNIST-1D generated locally by mnist1d.data.make_dataset (default args, "
            f"{num_samples} samples: {len(train)} train / {len(val)} val / {len(y_test)} test "
            f"signals of length {length})"
        ),
    )


# Its two registered names (pyproject.toml) and their lines in `fngd-bench list`.
build.description = SIZES["cnn-mnist1d"][0].description
build_large = functools.partial(build, name="cnn-mnist1d-large")
build_large.description = SIZES["cnn-mnist1d-large"][0].description  # type: ignore[attr-defined]
