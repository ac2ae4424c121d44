"""``resnet18-cifar100``: a CIFAR-style ResNet-18 on CIFAR-100.

Data, in order of preference:

1. ``data_root/cifar-100-python/{train,test}``: the official python-pickle release, parsed
   here with :mod:`pickle` (no torchvision needed);
2. if torchvision is importable, ``torchvision.datasets.CIFAR100(data_root, download=True)``
   (which unpacks that same layout), then 1;
3. the official tarball fetched with urllib into ``data_root`` (MD5-checked), then 1;
4. otherwise a CIFAR-shaped synthetic stand-in (3x32x32, 100 classes, learnable structure),
   with ``data_source="synthetic"`` and the reason in ``data_note``.

Files that are present but unreadable are not overwritten by a download: the stand-in is used
and ``data_note`` says what was wrong. ``FNGD_BENCH_OFFLINE=1`` skips downloads.

Images are normalised with the CIFAR-100 channel mean/std and kept on the device; training
batches are augmented on the device (random crop with 4-pixel padding, horizontal flip).
``size="paper"``: the full 50 000 / 10 000 split, width 64, batch 128. ``size="small"``: a
fixed subset (512 train / 256 test) and width 8, so CPU tests are quick.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.workloads.classification import Classifier, classification_workload
from bench.workloads.common import (
    build_model,
    describe_error,
    download,
    require_downloads,
    resolve_data_root,
)
from bench.workloads.workload import Workload

NAME = "resnet18-cifar100"
DESCRIPTION = "CIFAR ResNet-18 on CIFAR-100 (synthetic stand-in if the data is unavailable)"

NUM_CLASSES = 100
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
TGZ_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FOLDER = "cifar-100-python"
DATA_SEED = 0  # fixes the small subset and the synthetic data, independent of the run seed

SIZES: dict[str, dict[str, Any]] = {
    # n_train / n_test: None = the whole split
    "paper": {"n_train": None, "n_test": None, "width": 64, "batch_size": 128, "epochs": 50},
    "small": {"n_train": 512, "n_test": 256, "width": 8, "batch_size": 64, "epochs": 10},
}
# Test accuracy that counts as reached, by (size, data_source). The small size has about
# five images per class, too few to learn CIFAR-100 (or its stand-in) to a useful accuracy;
# its targets only mark "clearly better than chance" (1%).
TARGETS = {
    ("paper", "real"): 0.60,
    ("paper", "synthetic"): 0.80,
    ("small", "real"): 0.05,
    ("small", "synthetic"): 0.05,
}

# What differs from the optimizers' defaults (fngd.optimizers.DEFAULTS): those are the usual
# CIFAR ResNet recipe (batch 128) for SGD, KFAC (kfac-pytorch's CIFAR example) and AdamW but
# its weight decay. NGD/FNGD: a starting point, not tuned on CIFAR-100; on the small CPU
# workloads damping below 0.1 made the reused (first-epoch) coefficients diverge.
HPARAMS: dict[str, dict] = {
    "adamw": {"weight_decay": 5e-2},
    "ngd": {"lr": 0.05, "damping": 0.1},
    "fngd": {"lr": 0.05, "damping": 0.1},
}


# --------------------------------------------------------------------------- model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Out-of-place activations throughout, so layer hooks see unmodified tensors.
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stem, no max-pool, BasicBlocks [2, 2, 2, 2].

    ``width`` is the stem's channel count (64 in the standard network); stages have
    ``width * (1, 2, 4, 8)`` channels.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes = width
        stages = []
        for i, (blocks, stride) in enumerate(zip((2, 2, 2, 2), (1, 2, 2, 2), strict=True)):
            planes = width * 2**i
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(BasicBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


# --------------------------------------------------------------------------- data


def _get(d: dict, key: str) -> Any:
    """Look a key up in a CIFAR pickle dict, whose keys are bytes (Python 2 pickles) or str."""
    if key in d:
        return d[key]
    return d[key.encode()]


def load_pickle_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One split of the official python release: ``(uint8 images N x 3 x 32 x 32, labels)``."""
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    data = np.asarray(_get(d, "data"), dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(_get(d, "fine_labels"), dtype=np.int64)
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def load_cifar100(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse ``root/cifar-100-python/{train,test}``; raises ``FileNotFoundError`` if absent."""
    folder = root / FOLDER
    train, test = folder / "train", folder / "test"
    if not (train.is_file() and test.is_file()):
        raise FileNotFoundError(f"{folder}/{{train,test}} not found")
    x_train, y_train = load_pickle_split(train)
    x_test, y_test = load_pickle_split(test)
    return x_train, y_train, x_test, y_test


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _extract(archive: Path, root: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, filter="data")
        else:  # older Pythons: refuse members that would escape root
            base = root.resolve()
            for member in tar.getmembers():
                if not (root / member.name).resolve().is_relative_to(base):
                    raise ValueError(f"unsafe path in archive: {member.name}")
            tar.extractall(root)  # noqa: S202


def _torchvision_cifar100() -> Any:
    try:
        from torchvision.datasets import CIFAR100
    except ImportError:
        return None
    return CIFAR100


def fetch_cifar100(root: Path) -> None:
    """Put the official release under ``root`` (torchvision if importable, else urllib)."""
    require_downloads()
    tv_cifar100 = _torchvision_cifar100()
    if tv_cifar100 is not None:
        tv_cifar100(str(root), train=True, download=True)
        tv_cifar100(str(root), train=False, download=True)
        return
    archive = root / "cifar-100-python.tar.gz"
    if not archive.is_file():
        download(URL, archive)
    digest = _md5(archive)
    if digest != TGZ_MD5:
        archive.unlink()
        raise ValueError(f"MD5 mismatch for {URL}: got {digest}, expected {TGZ_MD5}")
    _extract(archive, root)


def synthetic_cifar(
    n_train: int, n_test: int, seed: int = DATA_SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-shaped uint8 images with learnable, class-dependent structure.

    Each class has a smooth colour pattern (a random 3x4x4 field upsampled to 32x32). A sample
    is its class pattern at a random contrast and offset, plus a smooth class-independent
    distractor pattern and pixel noise, so classes overlap but are learnable, and random crops
    and flips do not destroy the signal.
    """
    g = torch.Generator().manual_seed(seed)
    protos = F.interpolate(
        torch.randn(NUM_CLASSES, 3, 4, 4, generator=g),
        size=32,
        mode="bicubic",
        align_corners=False,
    )
    protos = protos / protos.flatten(1).std(dim=1)[:, None, None, None]

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        out = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
        for start in range(0, n, 5000):
            y = labels[start : start + 5000]
            m = len(y)
            contrast = 0.6 + 0.8 * torch.rand(m, 1, 1, 1, generator=g)
            shift = 0.1 * torch.randn(m, 3, 1, 1, generator=g)
            distractor = F.interpolate(
                torch.randn(m, 3, 4, 4, generator=g),
                size=32,
                mode="bilinear",
                align_corners=False,
            )
            noise = torch.randn(m, 3, 32, 32, generator=g)
            img = 0.5 + 0.12 * (contrast * protos[y] + 0.8 * distractor + 0.6 * noise) + shift
            out[start : start + m] = (img.clamp(0, 1) * 255).round().to(torch.uint8)
        return out.numpy(), labels.numpy()

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    return x_train, y_train, x_test, y_test


def _subset(x: np.ndarray, y: np.ndarray, n: int | None, seed: int) -> tuple:
    if n is None or n >= len(y):
        return x, y
    idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
    return x[idx], y[idx]


def _normalise(x: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device).float().div_(255)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return (t - mean) / std


def crop_flip_augment(pad: int = 4) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """On-device random crop (zero = black padding, as torchvision pads raw images) + flip."""
    black = [(0.0 - m) / s for m, s in zip(MEAN, STD, strict=True)]

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        dev = x.device
        padded = torch.tensor(black, device=dev, dtype=x.dtype).view(1, c, 1, 1)
        padded = padded.expand(n, c, h + 2 * pad, w + 2 * pad).clone()
        padded[:, :, pad : pad + h, pad : pad + w] = x
        dy = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]  # (n, h, 1)
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]  # (n, 1, w)
        batch = torch.arange(n, device=dev)[:, None, None]
        out = padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # (n, h, w, c) -> (n, c, h, w)
        flip = torch.rand(n, device=dev, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
        return out.contiguous()

    return augment


def load_data(
    root: Path, n_train: int | None, n_test: int | None
) -> tuple[tuple[np.ndarray, ...], str, str]:
    """``((x_train, y_train, x_test, y_test), data_source, data_note)``."""
    n_tr = n_train if n_train is not None else 50_000
    n_te = n_test if n_test is not None else 10_000
    synthetic = f"({n_tr} train / {n_te} test synthetic 3x32x32 images, 100 classes)"
    try:
        arrays = load_cifar100(root)
        source_note = f"CIFAR-100 from {root / FOLDER}"
    except FileNotFoundError:
        try:
            fetch_cifar100(root)
            arrays = load_cifar100(root)
            source_note = f"CIFAR-100 downloaded to {root / FOLDER}"
        except Exception as exc:  # noqa: BLE001 - any failure means: use the stand-in
            note = (
                f"synthetic stand-in: CIFAR-100 not found at {root} and download failed: "
                f"{describe_error(exc)} {synthetic}"
            )
            return synthetic_cifar(n_tr, n_te), "synthetic", note
    except Exception as exc:  # noqa: BLE001 - unreadable files: say so, use the stand-in
        note = (
            f"synthetic stand-in: CIFAR-100 at {root / FOLDER} could not be read: "
            f"{describe_error(exc)} {synthetic}"
        )
        return synthetic_cifar(n_tr, n_te), "synthetic", note
    x_train, y_train, x_test, y_test = arrays
    full = (len(y_train), len(y_test))
    x_train, y_train = _subset(x_train, y_train, n_train, DATA_SEED)
    x_test, y_test = _subset(x_test, y_test, n_test, DATA_SEED + 1)
    if (len(y_train), len(y_test)) != full:
        source_note += (
            f" (fixed subset: {len(y_train)} of {full[0]} train / {len(y_test)} of {full[1]} test)"
        )
    else:
        source_note += f" ({full[0]} train / {full[1]} test images)"
    return (x_train, y_train, x_test, y_test), "real", source_note


def build(
    device: torch.device,
    seed: int,
    batch_size: int | None,
    data_root: str | os.PathLike[str] | None,
    size: str,
) -> Workload:
    cfg = SIZES[size]
    root = resolve_data_root(data_root)
    (x_train, y_train, x_test, y_test), source, note = load_data(
        root, cfg["n_train"], cfg["n_test"]
    )
    X_train_t = _normalise(x_train, device)
    X_test_t = _normalise(x_test, device)
    y_train_t = torch.from_numpy(y_train).to(device)
    y_test_t = torch.from_numpy(y_test).to(device)
    width = cfg["width"]
    model = build_model(lambda: ResNet18(NUM_CLASSES, width=width), seed, device)
    spec = Classifier(
        name=NAME,
        description=DESCRIPTION,
        batch_size=cfg["batch_size"],
        epochs=cfg["epochs"],
        target=TARGETS[(size, source)],
        hparams=HPARAMS,
        eval_batch_size=500,
    )
    return classification_workload(
        spec,
        model=model,
        train=(X_train_t, y_train_t),
        test=(X_test_t, y_test_t),
        val=None,
        batch_size=batch_size,
        seed=seed,
        size=size,
        data_source=source,
        data_note=note,
        augment=crop_flip_augment(),
    )


build.description = DESCRIPTION  # its line in `fngd-bench list`
