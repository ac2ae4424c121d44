"""A classification workload from its parts: a model, tensors per split, and its settings.

Cross-entropy (batch and per sample), accuracy against a target on the test split (and on
the validation split where there is one), the model called as ``model(x)``: what every
classifier here shares, written once. A workload module loads its data and its model and
hands both over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.workloads.common import classification_eval, cross_entropy, per_sample_cross_entropy
from bench.workloads.loader import TensorLoader
from bench.workloads.workload import Workload

__all__ = ["Classifier", "Split", "classification_workload"]

#: ``(inputs, labels)`` of one split, already on the device.
Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Classifier:
    """What a classification workload declares about itself (beside its data and model)."""

    name: str
    description: str
    batch_size: int
    epochs: int
    target: float  # test accuracy
    hparams: dict[str, dict[str, Any]]  # what differs from fngd.optimizers.DEFAULTS
    schedule: dict[str, Any] = field(default_factory=dict)
    eval_batch_size: int = 1000  # samples per evaluation forward pass


def classification_workload(
    spec: Classifier,
    *,
    model: nn.Module,
    train: Split,
    test: Split,
    val: Split | None,
    batch_size: int | None,
    seed: int,
    size: str,
    data_source: str,
    data_note: str,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> Workload:
    """The workload ``spec`` describes, training on ``train`` in shuffled batches (``seed``)."""
    batch = batch_size or spec.batch_size
    loader = TensorLoader(*train, batch, shuffle=True, drop_last=False, seed=seed, augment=augment)

    def evaluate(split: Split) -> Callable[[nn.Module], dict[str, float]]:
        return classification_eval(lambda m, x: m(x), *split, batch_size=spec.eval_batch_size)

    return Workload(
        name=spec.name,
        model=model,
        loss_fn=cross_entropy,
        per_sample_loss=per_sample_cross_entropy,
        train_loader=loader,
        eval_fn=evaluate(test),
        val_eval_fn=evaluate(val) if val is not None else None,
        metric_name="accuracy",
        higher_is_better=True,
        target=spec.target,
        data_source=data_source,
        data_note=data_note,
        batch_size=batch,
        epochs=spec.epochs,
        hparams={k: dict(v) for k, v in spec.hparams.items()},
        schedule=dict(spec.schedule),
        device=train[0].device,
        seed=seed,
        size=size,
        description=spec.description,
        num_train=len(train[1]),
        num_eval=len(test[1]),
        num_val=len(val[1]) if val is not None else 0,
    )
