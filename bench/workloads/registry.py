"""The workload registry: names, one-line descriptions and the ``get`` factory.

Workload modules are imported lazily, so that listing names (e.g. for ``--help``) does not
import scikit-learn, mnist1d or sacrebleu. Each module defines
``build(device, seed, batch_size, data_root, size) -> Workload``; a module that serves
several names (``cnn-mnist1d`` and ``cnn-mnist1d-large``) takes the name as ``name=``.

A *family* is a name pattern: ``mlp-random-<width>`` (timing only, not a training workload,
so not in ``names()``); its module's ``build`` also takes the full ``name``.
"""

from __future__ import annotations

import importlib
import inspect
import os

import torch

from bench.workloads.common import check_size
from bench.workloads.workload import Workload

# name -> (module, one-line description); keep the descriptions in step with the modules.
_REGISTRY: dict[str, tuple[str, str]] = {
    "mlp-digits": (
        "bench.workloads.mlp_digits",
        "MLP 64-128-128-10 on scikit-learn's 8x8 digits (real data, always available)",
    ),
    "cnn-mnist1d": (
        "bench.workloads.cnn_mnist1d",
        "small 1-D CNN on MNIST-1D, generated locally by the mnist1d package (real data)",
    ),
    "cnn-mnist1d-large": (
        "bench.workloads.cnn_mnist1d",
        "the cnn-mnist1d CNN on 20000 MNIST-1D signals (real data, generated locally); "
        "a target SGD reaches after >= 10 epochs",
    ),
    "resnet18-cifar100": (
        "bench.workloads.resnet18_cifar100",
        "CIFAR ResNet-18 on CIFAR-100 (synthetic stand-in if the data is unavailable)",
    ),
    "transformer-multi30k": (
        "bench.workloads.transformer_multi30k",
        "encoder-decoder Transformer, Multi30K German->English, BLEU "
        "(synthetic stand-in if the data is unavailable)",
    ),
}

# name prefix -> (module, one-line description) of the timing-only families.
_FAMILIES: dict[str, tuple[str, str]] = {
    "mlp-random-": (
        "bench.workloads.mlp_random",
        "MLP 784-W-W-10 on one batch of random tensors (synthetic, timing only)",
    ),
}


def names() -> list[str]:
    """The registered workload names."""
    return list(_REGISTRY)


def descriptions() -> dict[str, str]:
    """``{name: one-line description}`` for every workload."""
    return {name: line for name, (_, line) in _REGISTRY.items()}


def describe() -> str:
    """One line per workload, ``name  description``, for ``--help`` texts."""
    width = max(len(n) for n in _REGISTRY)
    return "\n".join(f"{name:<{width}}  {line}" for name, line in descriptions().items())


def family(name: str) -> str | None:
    """The family prefix ``name`` belongs to (``mlp-random-`` for ``mlp-random-128``)."""
    return next((prefix for prefix in _FAMILIES if name.startswith(prefix)), None)


def is_registered(name: str) -> bool:
    """A registered workload name or a member of a registered family."""
    return name in _REGISTRY or family(name) is not None


def get(
    name: str,
    device: str | torch.device = "cpu",
    seed: int = 0,
    batch_size: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    size: str = "small",
) -> Workload:
    """Build workload ``name`` on ``device``.

    ``seed`` fixes the model initialisation and the shuffling; ``batch_size`` overrides the
    workload's default; ``data_root`` is where data sets are looked for and downloaded to
    (default ``$FNGD_BENCH_DATA`` or ``./data``); ``size`` is ``"small"`` (quick, CPU) or
    ``"paper"`` (the GPU-sized configuration).
    """
    prefix = family(name)
    if name not in _REGISTRY and prefix is None:
        valid = [*names(), *(f"{p}<width>" for p in _FAMILIES)]
        raise ValueError(f"unknown workload {name!r}; valid names: {', '.join(valid)}")
    check_size(size)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    module_name, line = _REGISTRY[name] if prefix is None else _FAMILIES[prefix]
    build = importlib.import_module(module_name).build
    extra = {"name": name} if "name" in inspect.signature(build).parameters else {}
    workload = build(
        device=torch.device(device),
        seed=int(seed),
        batch_size=batch_size,
        data_root=data_root,
        size=size,
        **extra,
    )
    workload.description = workload.description or line
    return workload
