"""Workloads: a model, its data, loss, metric and suggested hyperparameters; the registry
that finds them (the suite's own and plugins'), and ``from_datasets``, which builds one from
plain parts (docs/PLUGINS.md).

from bench.workloads import get, names
w = get("mlp-digits", device="cpu", seed=0, size="small")
for inputs, targets, ids in w.train_loader:
    loss = w.loss_fn(w.forward(w.model, inputs), targets)
"""

from bench.workloads.datasets import Metric, from_datasets
from bench.workloads.loader import TensorLoader
from bench.workloads.registry import describe, descriptions, get, is_registered, names
from bench.workloads.workload import (
    OPTIMIZERS,
    SIZES,
    Loader,
    Workload,
    WorkloadLike,
    check_workload,
)

__all__ = [
    "OPTIMIZERS",
    "SIZES",
    "Loader",
    "Metric",
    "TensorLoader",
    "Workload",
    "WorkloadLike",
    "check_workload",
    "describe",
    "descriptions",
    "from_datasets",
    "get",
    "is_registered",
    "names",
]
