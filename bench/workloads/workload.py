"""What a workload is: the :class:`WorkloadLike` protocol the runner trains, and the
:class:`Workload` record every registered workload module builds.

A workload bundles everything the runner needs to train and evaluate one model on one data
set: the model (already on the target device), the loss, the training loader, an evaluation
function, the metric and its target, default batch size, epochs and per-optimizer
hyperparameters, and an honest account of where the data came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from bench.workloads.loader import TensorLoader

#: The sizes every workload accepts: ``small`` runs on a CPU in seconds, ``paper`` is the
#: GPU-sized configuration.
SIZES = ("small", "paper")
#: The optimizer names every workload's ``hparams`` has an entry for.
OPTIMIZERS = ("sgd", "adamw", "kfac", "ngd", "fngd")
#: What a run evaluates on: ``test`` (reports, the default) or ``val`` (held out from the
#: training data, for tuning; see :func:`eval_function`).
SPLITS = ("test", "val")
EvalFn = Callable[[nn.Module], dict[str, float]]


#: The rule every workload's ``per_sample_loss`` follows: per-sample losses ``l`` (N,) with
#: ``l.mean()`` equal to the batch loss, so that ``(w * l).mean()`` is a reweighted batch
#: loss. A loss averaged over all tokens of a batch (``T`` tokens, ``t_i`` in sample i)
#: counts as a mean over samples, FNGD's ``loss_reduction="mean"`` convention: ``l_i`` is
#: sample i's token-loss sum divided by the mean token count ``T / N``.
PER_SAMPLE = "mean of l equals the batch loss; token losses: sum over tokens / (T / N)"

Batch = tuple[Any, torch.Tensor, torch.Tensor]  # (inputs, targets, CPU sample ids)


class Loader(Protocol):
    """Batches of one epoch per ``iter()``; ``set_epoch(e)`` makes the next one epoch ``e``'s."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def set_epoch(self, epoch: int) -> None: ...


class WorkloadLike(Protocol):
    """What the runner, the profiler and the step timers use of a workload.

    :class:`Workload` is the registered implementation; tests train their own small ones.
    """

    name: str
    model: nn.Module
    train_loader: Loader
    batch_size: int
    epochs: int
    hparams: dict[str, dict[str, Any]]
    data_source: str
    data_note: str
    metric_name: str
    higher_is_better: bool
    target: float

    def forward(self, model: nn.Module, inputs: Any) -> torch.Tensor: ...

    def loss_fn(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def per_sample_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample losses (N,) whose mean is ``loss_fn``'s batch loss (``PER_SAMPLE``);
        only FNGD's reweighted step (``BenchOptimizer.loss_weights``) calls it."""
        ...

    def eval_fn(self, model: nn.Module) -> dict[str, float]: ...

    def reached(self, value: float) -> bool: ...


def default_forward(model: nn.Module, inputs: Any) -> torch.Tensor:
    """How most models are called: ``model(inputs)``."""
    return model(inputs)


@dataclass
class Workload:
    """One model + data set + loss + metric, ready to train.

    ``train_loader`` yields ``(inputs, targets, sample_ids)``; ``sample_ids`` is a CPU int64
    tensor of positions in the training set (stable across epochs). ``forward(model, inputs)``
    returns the outputs ``loss_fn(outputs, targets)`` expects (a scalar mean loss);
    ``per_sample_loss(outputs, targets)`` the (N,) losses whose mean is that loss.
    ``eval_fn(model)`` returns ``{"eval_loss": ..., metric_name: ..., ...}`` on the test
    split; ``val_eval_fn`` the same on a validation split held out from the training data
    (``None``: the workload has none, and cannot be tuned). ``schedule`` holds the
    learning-rate schedule's hyperparameters (``bench.cell.schedules``; empty: constant).
    ``hparams`` maps each optimizer name (``sgd``, ``adamw``, ``kfac``, ``ngd``, ``fngd``)
    to the keyword arguments this workload suggests for it. ``data_source`` is ``"real"`` or
    ``"synthetic"``; ``data_note`` says where the data came from (and, for a synthetic
    stand-in, why the real data could not be used).
    """

    name: str
    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    per_sample_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    train_loader: TensorLoader
    eval_fn: Callable[[nn.Module], dict[str, float]]
    metric_name: str
    higher_is_better: bool
    target: float
    data_source: str
    data_note: str
    batch_size: int
    epochs: int
    hparams: dict[str, dict[str, Any]]
    forward: Callable[[nn.Module, Any], torch.Tensor] = default_forward
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    size: str = "small"
    description: str = ""
    num_train: int = 0
    num_eval: int = 0
    val_eval_fn: EvalFn | None = None
    num_val: int = 0
    schedule: dict[str, Any] = field(default_factory=dict)

    def reached(self, value: float) -> bool:
        """Whether a metric value counts as having reached ``target`` (the one rule)."""
        return value >= self.target if self.higher_is_better else value <= self.target

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


#: What :func:`check_workload` asks of a workload's attributes: (name, kind).
_CONTRACT: tuple[tuple[str, str], ...] = (
    ("name", "str"),
    ("model", "module"),
    ("train_loader", "loader"),
    ("batch_size", "positive int"),
    ("epochs", "positive int"),
    ("hparams", "mapping"),
    ("data_source", "source"),
    ("data_note", "str"),
    ("metric_name", "str"),
    ("higher_is_better", "bool"),
    ("target", "number"),
    ("forward", "callable"),
    ("loss_fn", "callable"),
    ("per_sample_loss", "callable"),
    ("eval_fn", "callable"),
    ("reached", "callable"),
)
#: The honest account of the data every record carries.
DATA_SOURCES = ("real", "synthetic")


def check_workload(workload: object) -> None:
    """That ``workload`` keeps the contract the runner relies on (:class:`WorkloadLike`);
    the first broken part is a ``TypeError`` / ``ValueError`` saying what was found."""
    for attr, kind in _CONTRACT:
        if not hasattr(workload, attr):
            raise TypeError(
                f"the workload ({type(workload).__name__}) has no {attr!r}; "
                "build one with bench.workloads.Workload"
            )
        value = getattr(workload, attr)
        ok = {
            "str": isinstance(value, str),
            "module": isinstance(value, nn.Module),
            "loader": all(hasattr(value, m) for m in ("__iter__", "__len__", "set_epoch")),
            "positive int": isinstance(value, int) and not isinstance(value, bool) and value > 0,
            "mapping": isinstance(value, dict)
            and all(isinstance(v, dict) for v in value.values()),
            "source": value in DATA_SOURCES,
            "bool": isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "callable": callable(value),
        }[kind]
        if not ok:
            want = {
                "loader": "a loader (__iter__, __len__, set_epoch)",
                "mapping": "a dict of per-optimizer dicts",
                "source": f"one of {', '.join(DATA_SOURCES)}",
                "module": "an nn.Module",
            }.get(kind, f"a {kind}")
            raise TypeError(f"the workload's {attr} must be {want}, got {value!r:.80}")


def eval_function(workload: WorkloadLike, split: str) -> EvalFn:
    """``workload``'s evaluation on ``split`` (``test``: ``eval_fn``; ``val``: ``val_eval_fn``)."""
    if split == "test":
        return workload.eval_fn
    if split == "val":
        fn = getattr(workload, "val_eval_fn", None)
        if fn is None:
            raise ValueError(f"{workload.name}: no validation split (needed to tune on it)")
        return fn
    raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
