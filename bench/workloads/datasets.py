"""A workload from plain parts: a model factory, ``Dataset``s, a loss, a metric, a target.

What wrapping an existing training script needs (docs/PLUGINS.md): ``from_datasets`` takes
the splits as ``torch.utils.data.Dataset``s of ``(input, target)`` pairs (or as ``(X, y)``
tensors), holds each whole on the device as the suite's own workloads do (one index gather
per batch: nothing makes the ``data`` phase noisy), and attaches the sample ids FNGD looks
its coefficients up by (positions in the training set, through ``TensorLoader``). The loss
is ``"cross_entropy"``, ``"mse"`` or a per-sample callable; the metric ``"accuracy"``,
``"mse"``, ``"mae"`` or a :class:`Metric`; every metric is a mean over samples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.workloads.common import build_model, check_size, eval_mode
from bench.workloads.loader import TensorLoader
from bench.workloads.workload import DATA_SOURCES, Workload

__all__ = ["LOSSES", "METRICS", "Metric", "from_datasets", "materialise"]

PerSample = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Split = tuple[torch.Tensor, torch.Tensor]


def _flat_pair(outputs: torch.Tensor, targets: torch.Tensor, what: str) -> Split:
    """Outputs and targets as (N, D) alike, so that (N, 1) outputs never broadcast
    against (N,) targets into an (N, N) loss."""
    n = outputs.shape[0]
    out, tgt = outputs.reshape(n, -1), targets.reshape(targets.shape[0], -1)
    if out.shape != tgt.shape:
        raise ValueError(
            f"{what}: outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} do "
            "not hold the same numbers per sample"
        )
    return out, tgt.to(out.dtype)


def per_sample_mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each sample's mean squared error (N,); its mean is ``F.mse_loss``'s."""
    out, tgt = _flat_pair(outputs, targets, "mse")
    return (out - tgt).square().mean(dim=1)


def per_sample_mae(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    out, tgt = _flat_pair(outputs, targets, "mae")
    return (out - tgt).abs().mean(dim=1)


def per_sample_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(outputs, targets, reduction="none")


def per_sample_correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs.argmax(dim=1) == targets).to(outputs.dtype)


#: The losses by name: per-sample (N,), whose mean is the batch loss (``PER_SAMPLE``).
LOSSES: dict[str, PerSample] = {"cross_entropy": per_sample_cross_entropy, "mse": per_sample_mse}


@dataclass(frozen=True)
class Metric:
    """An evaluation metric: its name in the records, its per-sample values (their mean
    over a split is the metric), and whether higher is better."""

    name: str
    per_sample: PerSample
    higher_is_better: bool


#: The metrics by name.
METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", per_sample_correct, True),
    "mse": Metric("mse", per_sample_mse, False),
    "mae": Metric("mae", per_sample_mae, False),
}


def materialise(data: Any, device: torch.device, what: str) -> Split:
    """``(X, y)`` on ``device`` from a ``Dataset`` of ``(input, target)`` pairs, a
    ``TensorDataset``, or an ``(X, y)`` pair of tensors or arrays."""
    tensors = getattr(data, "tensors", None)  # TensorDataset: no per-item loop
    if tensors is None and isinstance(data, tuple | list) and len(data) == 2:
        tensors = data
    if tensors is not None:
        if len(tensors) != 2:
            raise ValueError(f"{what}: expected (inputs, targets), got {len(tensors)} tensors")
        x, y = (torch.as_tensor(t) for t in tensors)
    else:
        if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
            raise TypeError(
                f"{what}: expected a torch.utils.data.Dataset of (input, target) pairs or "
                f"an (X, y) pair, got {type(data).__name__}"
            )
        if len(data) == 0:
            raise ValueError(f"{what}: the data set is empty")
        pairs = [data[i] for i in range(len(data))]
        if not all(isinstance(p, tuple | list) and len(p) == 2 for p in pairs[:1]):
            raise TypeError(f"{what}: items must be (input, target) pairs, got {pairs[0]!r:.60}")
        x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        y = torch.stack([torch.as_tensor(p[1]) for p in pairs])
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{what}: {len(x)} inputs and {len(y)} targets")
    if x.is_floating_point() and x.dtype == torch.float64:
        x = x.float()  # the model's dtype; a model in float64 casts it back
    return x.to(device), y.to(device)


def _evaluate(
    split: Split,
    forward: Callable[[nn.Module, Any], torch.Tensor],
    loss: PerSample,
    metric: Metric,
    batch_size: int,
) -> Callable[[nn.Module], dict[str, float]]:
    x, y = split

    def eval_fn(model: nn.Module) -> dict[str, float]:
        with eval_mode(model), torch.no_grad():
            loss_sum = torch.zeros((), dtype=torch.float64, device=y.device)
            metric_sum = torch.zeros((), dtype=torch.float64, device=y.device)
            for start in range(0, len(y), batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                out = forward(model, xb)
                loss_sum += loss(out, yb).double().sum()
                metric_sum += metric.per_sample(out, yb).double().sum()
            return {"eval_loss": loss_sum.item() / len(y), metric.name: metric_sum.item() / len(y)}

    return eval_fn


def from_datasets(
    name: str,
    *,
    model: Callable[[], nn.Module] | nn.Module,
    train: Any,
    test: Any,
    val: Any = None,
    loss: str | PerSample = "cross_entropy",
    metric: str | Metric = "accuracy",
    target: float,
    batch_size: int,
    epochs: int,
    device: torch.device | str = "cpu",
    seed: int = 0,
    size: str = "small",
    hparams: Mapping[str, Mapping[str, Any]] | None = None,
    schedule: Mapping[str, Any] | None = None,
    data_source: str = "real",
    data_note: str = "",
    description: str = "",
    forward: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    eval_batch_size: int = 1000,
) -> Workload:
    """The workload that trains ``model`` on ``train`` and evaluates on ``test`` (and on
    ``val``, held out from training, which ``fngd-bench tune`` needs).

    ``model`` is a factory (called under ``seed``, so every optimiser starts from the same
    weights) or a module. ``loss`` is a name of :data:`LOSSES` or a callable giving the
    per-sample losses (N,) whose mean is the batch loss; ``metric`` a name of
    :data:`METRICS` or a :class:`Metric`; ``target`` the metric value that counts as
    reached. ``hparams`` maps an optimiser family or label to what this workload suggests
    for it (the rest: the optimiser's defaults). ``data_source`` is ``real`` or
    ``synthetic``, and every record says which.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"from_datasets: name must be a non-empty string, got {name!r}")
    check_size(size)
    for arg, value in (("batch_size", batch_size), ("epochs", epochs)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"from_datasets: {arg} must be a positive integer, got {value!r}")
    if data_source not in DATA_SOURCES:
        raise ValueError(
            f"from_datasets: data_source must be one of {', '.join(DATA_SOURCES)}, "
            f"got {data_source!r}"
        )
    per_sample = _loss(loss)
    chosen = _metric(metric)
    device = torch.device(device)
    splits = {
        k: materialise(v, device, f"from_datasets {k}")
        for k, v in (("train", train), ("test", test), ("val", val))
        if v is not None
    }
    net = build_model(model, seed, device) if not isinstance(model, nn.Module) else model.to(device)
    call = forward or (lambda m, x: m(x))
    ev = {k: _evaluate(s, call, per_sample, chosen, eval_batch_size) for k, s in splits.items()}
    x_train, y_train = splits["train"]
    _check_per_sample(net, call, (x_train[:2], y_train[:2]), per_sample, chosen)
    return Workload(
        name=name,
        model=net,
        loss_fn=lambda out, tgt: per_sample(out, tgt).mean(),
        per_sample_loss=per_sample,
        train_loader=TensorLoader(x_train, y_train, batch_size, shuffle=True, seed=seed),
        eval_fn=ev["test"],
        val_eval_fn=ev.get("val"),
        metric_name=chosen.name,
        higher_is_better=chosen.higher_is_better,
        target=float(target),
        data_source=data_source,
        data_note=data_note,
        batch_size=batch_size,
        epochs=epochs,
        hparams={k: dict(v) for k, v in (hparams or {}).items()},
        schedule=dict(schedule or {}),
        forward=call,
        device=device,
        seed=seed,
        size=size,
        description=description,
        num_train=len(y_train),
        num_eval=len(splits["test"][1]),
        num_val=len(splits["val"][1]) if "val" in splits else 0,
    )


def _check_per_sample(
    model: nn.Module,
    forward: Callable[[nn.Module, Any], torch.Tensor],
    batch: Split,
    loss: PerSample,
    metric: Metric,
) -> None:
    """The loss and the metric give one value per sample (N,): a batch mean would make
    every evaluation and FNGD's reweighted step silently wrong."""
    x, y = batch
    with eval_mode(model), torch.no_grad():
        out = forward(model, x)
        for what, fn in (("loss", loss), (f"metric {metric.name!r}", metric.per_sample)):
            got = fn(out, y)
            if not isinstance(got, torch.Tensor) or got.shape != (len(y),):
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                raise ValueError(
                    f"from_datasets: the {what} must give one value per sample, shape "
                    f"({len(y)},) for {len(y)} samples, got {shape}"
                )


def _loss(loss: str | PerSample) -> PerSample:
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(
            f"from_datasets: loss must be one of {', '.join(LOSSES)} or a callable, got {loss!r}"
        )
    return LOSSES[loss]


def _metric(metric: str | Metric) -> Metric:
    if isinstance(metric, Metric):
        return metric
    if metric not in METRICS:
        raise ValueError(
            f"from_datasets: metric must be one of {', '.join(METRICS)} or a Metric, got {metric!r}"
        )
    return METRICS[metric]
