"""Workload registry: a model, its data, loss, metric and suggested hyperparameters.

from bench.workloads import get, names
w = get("mlp-digits", device="cpu", seed=0, size="small")
for inputs, targets, ids in w.train_loader:
    loss = w.loss_fn(w.forward(w.model, inputs), targets)
"""

from bench.workloads.loader import TensorLoader
from bench.workloads.registry import describe, descriptions, get, is_registered, names
from bench.workloads.workload import OPTIMIZERS, SIZES, Loader, Workload, WorkloadLike

__all__ = [
    "OPTIMIZERS",
    "SIZES",
    "Loader",
    "TensorLoader",
    "Workload",
    "WorkloadLike",
    "describe",
    "descriptions",
    "get",
    "is_registered",
    "names",
]
