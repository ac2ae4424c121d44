"""Building a cell: the one place that turns a ``CellSpec`` into a ``Cell``.

``build_cell`` seeds, builds the workload and the optimiser, merges the hyperparameters and
decides the steps per epoch and whether epochs replay the first one; ``record_base`` gives
the fields every record of a cell carries.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from bench.cell.schedules import make_scheduler, split_schedule
from bench.cell.spec import Cell, CellSpec, WorkloadFactory
from bench.host.distributed import world
from bench.host.env import environment, peak_rss, seed_everything
from bench.labels import resolve_label
from bench.workloads.workload import Loader, WorkloadLike
from fngd.optimizers import BenchOptimizer, build, registry

__all__ = [
    "build_cell",
    "cell_hparams",
    "default_workload_factory",
    "memory_records",
    "record_base",
    "replays_first_epoch",
    "steps_per_epoch",
]


def default_workload_factory() -> WorkloadFactory:
    from bench import workloads

    return workloads.get


def cell_hparams(spec: CellSpec, workload: WorkloadLike) -> dict[str, Any]:
    """Defaults < workload.schedule < workload.hparams[family] < workload.hparams[label] <
    label < cell overrides (the schedule's keys: ``bench.cell.schedules``)."""
    variant = resolve_label(spec.optimizer)
    tuned = workload.hparams or {}
    hp = dict(getattr(workload, "schedule", None) or {})
    hp.update(tuned.get(variant.family, {}))
    if variant.label != variant.family:
        hp.update(tuned.get(variant.label, {}))
    hp.update(variant.overrides)
    hp.update(spec.overrides)
    return hp


def steps_per_epoch(spec: CellSpec, loader: Loader) -> int:
    n = len(loader)
    if spec.max_steps_per_epoch is not None:
        n = min(n, int(spec.max_steps_per_epoch))
    return n


def replays_first_epoch(spec: CellSpec, loader: Loader) -> bool:
    """Whether every (cut) epoch replays the first epoch's batches.

    With ``max_steps_per_epoch`` below the loader's length, a reshuffled epoch would hold
    samples the cut first epoch never saw, and FNGD (``share="sample"``) would run its
    inversion phase again instead of the weighted sum. So cut epochs replay epoch 0's order
    (``loader.set_epoch(0)``, for every optimiser alike): later epochs then time the
    weighted-sum path on the same batches. Recorded as ``replay_first_epoch``.
    """
    return spec.max_steps_per_epoch is not None and spec.max_steps_per_epoch < len(loader)


def build_cell(
    spec: CellSpec,
    device: torch.device,
    *,
    data_root: str | os.PathLike[str] | None = None,
    workload_factory: WorkloadFactory | None = None,
) -> Cell:
    """Seed, build the workload and the optimiser, and decide how the cell is driven.

    Under torchrun (``spec.world_size`` processes) each rank takes its part of every global
    batch and the optimiser gets the model in ``DistributedDataParallel``.
    """
    w = world()
    if spec.world_size != w.size:
        raise ValueError(
            f"cell {spec.run_id} is for {spec.world_size} process(es), this run has {w.size}"
        )
    factory = workload_factory or default_workload_factory()
    seed_everything(spec.seed)
    workload = factory(
        spec.workload,
        device=device,
        seed=spec.seed,
        batch_size=spec.batch_size,
        data_root=data_root,
        size=spec.size,
    )
    loader = workload.train_loader
    model: torch.nn.Module = workload.model
    if w.distributed:
        loader.shard(w.rank, w.size)
        model = _ddp(model, device)
    per_epoch = steps_per_epoch(spec, loader)
    family = spec.family
    schedule, hp = split_schedule(cell_hparams(spec, workload))
    takes = registry.get(family).spec.defaults  # FNGD's share="iteration" needs it
    if "steps_per_epoch" in takes and hp.get("steps_per_epoch") is None:
        hp["steps_per_epoch"] = per_epoch
    epochs = int(spec.epochs if spec.epochs is not None else workload.epochs)
    opt = build(family, model, **hp)
    opt.hparams.update(schedule)
    return Cell(
        spec=spec,
        device=device,
        workload=workload,
        opt=opt,
        epochs=epochs,
        steps_per_epoch=per_epoch,
        replay=replays_first_epoch(spec, loader),
        scheduler=make_scheduler(opt, schedule, epochs * per_epoch),
        model=model,
    )


def _ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def record_base(
    spec: CellSpec,
    device: torch.device,
    cell: Cell | None = None,
    *,
    run_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The fields every record of a run of ``spec`` carries: the cell, the machine and,
    once ``cell`` is built, the optimiser and the data; ``fields`` add what this kind of run
    knows (a training run its epochs and attempt, a profile its steps per epoch)."""
    base: dict[str, Any] = {
        "run_id": run_id or spec.run_id,
        "workload": spec.workload,
        "optimizer": spec.optimizer,
        "family": spec.family,
        "seed": spec.seed,
        "size": spec.size,
        "max_steps_per_epoch": spec.max_steps_per_epoch,
        "hparams": dict(spec.overrides),
        "hparams_source": spec.hparams_source,
        "study": spec.study,
        "trial": spec.trial,
        "rank": world().rank,
        "world_size": spec.world_size,
        **environment(device),
    }
    if cell is not None:
        base.update(
            impl=cell.opt.impl,
            hparams=cell.opt.hparams,
            data_source=cell.workload.data_source,
            batch_size=cell.workload.batch_size,
        )
    base.update(fields)
    return base


def memory_records(device: torch.device, opt: BenchOptimizer) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if device.type == "cuda":
        out.append({"name": "peak_allocated", "value": torch.cuda.max_memory_allocated(device)})
    else:
        out.append({"name": "peak_rss", "value": peak_rss()})
    usage = {str(k): int(v) for k, v in opt.memory_usage().items()}
    out.append({"name": "optimizer_state", "value": sum(usage.values())})
    out.extend({"name": f"optimizer_state/{k}", "value": v} for k, v in sorted(usage.items()))
    return [{"kind": "memory", **r} for r in out]
