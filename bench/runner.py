"""One cell, built and driven one way: ``build_cell``, ``run_steps``, ``record_base``.

A *cell* is one (workload, optimiser label, seed) run. ``build_cell`` is the one place that
turns a ``CellSpec`` into a ``Cell``: it seeds, builds the workload and the optimiser,
merges the hyperparameters and decides the steps per epoch and whether epochs replay the
first one. ``run_steps`` is the one training loop: the runner, the profiler, the overhead
measurement and the benchmarks' phase medians all drive a cell through it. ``record_base``
gives the fields every record of a cell carries.

``run_cell`` trains a cell and writes to a ``RecordWriter``:

- a ``cell`` record ``started`` once the workload and optimiser are built;
- per step, a ``step`` record and one ``phase`` record per phase (``data`` around fetching
  the batch, then what ``bench.step.train_step`` and the optimiser time), with ``mode`` (what
  the optimiser's step did) and ``warmup``;
- per epoch, an ``epoch`` record (wall time on the host clock after a synchronisation, mean
  train loss), then ``eval`` records (one per key ``eval_fn`` returns; evaluation is not
  training time, its own duration is in ``eval_seconds``), then a ``target`` record the
  first time the workload's metric reaches its target; for FNGD with stored coefficients,
  from the second epoch on, ``staleness`` records from one fixed probe batch
  (``bench.staleness``; like evaluation, not training time);
- once built, before training, a ``memory`` record of what the process already holds:
  ``baseline_allocated`` (CUDA) or ``baseline_rss`` (CPU);
- at the end, ``memory`` records: ``peak_allocated`` (CUDA) or ``peak_rss`` (CPU), the
  optimiser state in total (``optimizer_state``) and by component (``optimizer_state/<k>``).

It returns ``("finished", "")`` or ``("diverged", message)``; the caller (``bench.sweep``)
writes the closing ``cell`` record and turns exceptions into ``oom``/``error``.

Warm-up rule (``LoopState.warmup``): a step is ``warmup: true`` if it is one of the first
``warmup_steps`` steps of the cell, or if it is the first step with a ``mode`` the cell has
not seen before. The second part covers FNGD's first weighted-sum step (a new code path at
the start of epoch 2: new kernels, allocator growth) and KFAC's first step without an
inverse, wherever they fall.

Timing: the train loss is accumulated on the device and read once per epoch, and phase times
are read once per epoch (``bench.timing.StepTimer``), so training is never synchronised
more than once per epoch by the harness. A non-finite epoch loss (or a ``FloatingPointError``
from an optimiser's finiteness check) ends the cell as ``diverged``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.distributed import device_for, merge_timings, world
from bench.env import (
    environment,
    memory_baseline,
    peak_rss,
    reset_peak,
    resolve_device,
    seed_everything,
    synchronize,
)
from bench.presets import resolve_label
from bench.progress import Progress, as_progress
from bench.records import RecordWriter
from bench.schedules import make_scheduler, split_schedule
from bench.staleness import KeepFirst, probed, staleness_records
from bench.step import train_step
from bench.timing import NullTimer, StepTimer
from bench.workloads.workload import Loader, WorkloadLike, eval_function
from fngd import phases
from fngd.optimizers import DEFAULTS, BenchOptimizer, build
from fngd.phases import _profiler_enabled

__all__ = [
    "WARMUP_STEPS",
    "Cell",
    "CellSpec",
    "LoopState",
    "build_cell",
    "record_base",
    "run_cell",
    "run_steps",
]

WorkloadFactory = Callable[..., WorkloadLike]
#: Steps at the start of a cell marked ``warmup`` (and run before a profile's window).
WARMUP_STEPS = 3


@dataclass
class CellSpec:
    """One cell: what to train, with what, for how long."""

    workload: str
    optimizer: str  # a label, see bench.presets
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None  # None: the workload's own
    max_steps_per_epoch: int | None = None
    batch_size: int | None = None  # None: the workload's own
    size: str = "small"
    warmup_steps: int = WARMUP_STEPS
    preset: str | None = None
    eval_split: str = "test"  # "val" while tuning: the test split stays for final reports
    study: str | None = None  # the tuning study this cell is a trial of, or took hparams from
    trial: int | None = None  # the study's trial this cell is (tuning runs only)
    hparams_source: str = "preset"  # where the overrides came from ("study S trial N")
    #: End the cell after the epoch whose evaluation first reaches the target (tuning
    #: trials: their score is the time to target, and later epochs cannot change it).
    stop_at_target: bool = False
    #: Processes the cell trains on at once (torchrun; ``bench.distributed``).
    world_size: int = 1

    @property
    def run_id(self) -> str:
        run_id = f"{self.workload}__{self.optimizer}__s{self.seed}"
        if self.world_size > 1:
            run_id += f"__w{self.world_size}"
        return run_id if self.trial is None else f"{run_id}__t{self.trial}"

    @property
    def family(self) -> str:
        return resolve_label(self.optimizer).family


@dataclass
class Cell:
    """A built cell: the workload, the optimiser and what ``build_cell`` decided."""

    spec: CellSpec
    device: torch.device
    workload: WorkloadLike
    opt: BenchOptimizer
    epochs: int
    steps_per_epoch: int
    replay: bool  # every epoch replays the first epoch's batches (``replays_first_epoch``)
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None  # per step (bench.schedules)
    #: What the training loop's forward pass calls: the workload's model, or it in
    #: ``DistributedDataParallel`` under torchrun (evaluation uses the workload's own).
    model: torch.nn.Module | None = None

    def loop_state(self) -> LoopState:
        return LoopState(warmup_steps=self.spec.warmup_steps)


# -- building ----------------------------------------------------------------------------------


def default_workload_factory() -> WorkloadFactory:
    from bench import workloads

    return workloads.get


def cell_hparams(spec: CellSpec, workload: WorkloadLike) -> dict[str, Any]:
    """Defaults < workload.schedule < workload.hparams[family] < workload.hparams[label] <
    label < cell overrides (the schedule's keys: ``bench.schedules``)."""
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
    if "steps_per_epoch" in DEFAULTS.get(family, {}) and hp.get("steps_per_epoch") is None:
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


# -- the loop ----------------------------------------------------------------------------------


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x if x.device == device else x.to(device, non_blocking=True)
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a namedtuple
        return type(x)(*(to_device(v, device) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x


_record_function = torch.profiler.record_function


@dataclass
class LoopState:
    """What carries over between epochs of a cell."""

    step: int = 0  # global step index
    warmup_steps: int = WARMUP_STEPS
    seen_modes: set[Any] = field(default_factory=set)

    def warmup(self, mode: Any) -> bool:
        """The warm-up rule (module docstring) for the current step, which ran ``mode``."""
        warm = self.step < self.warmup_steps or mode not in self.seen_modes
        self.seen_modes.add(mode)
        return warm


#: Called after each step with (step index, mode, warmup).
OnStep = Callable[[int, Any, bool], None]


def run_steps(
    workload: WorkloadLike,
    opt: BenchOptimizer,
    batches: Iterator[Any],
    n: int,
    *,
    timer: StepTimer | NullTimer,
    epoch: int,
    state: LoopState,
    device: torch.device,
    loss_sum: torch.Tensor,
    on_step: OnStep | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    model: torch.nn.Module | None = None,
) -> int:
    """Up to ``n`` steps from ``batches``, timed by ``timer`` (a ``NullTimer``: untimed);
    adds each loss into ``loss_sum`` (on the device); steps ``scheduler`` (the cell's
    learning-rate schedule) after each step, inside its time. ``model``: what the forward
    pass calls (``Cell.model``; default the workload's). Returns the number of steps done
    (fewer when ``batches`` runs out)."""
    on_cuda = device.type == "cuda"
    # The ``data`` phase calls the timer directly, and carries the profiler label only while
    # a profiler runs: ``record_function`` costs microseconds even when nothing listens.
    profiling = _profiler_enabled()
    done = 0
    while done < n:
        timer.start_step(state.step, epoch)
        try:
            label = _record_function("data") if profiling else None
            if label is not None:
                label.__enter__()
            token = timer.begin("data")
            try:
                batch = next(batches, None)
                if batch is not None:
                    inputs, targets, sample_ids = batch
                    if on_cuda:
                        inputs = to_device(inputs, device)
                        targets = to_device(targets, device)
            finally:
                timer.end(token)
                if label is not None:
                    label.__exit__(None, None, None)
            if batch is None:
                timer.discard_step()
                break
            loss = train_step(workload, opt, inputs, targets, sample_ids, model)
            if scheduler is not None:
                scheduler.step()
        except BaseException:
            timer.discard_step()
            raise
        mode = opt.mode
        warmup = state.warmup(mode)
        timer.end_step(mode=mode, warmup=warmup)
        loss_sum += loss.float()
        step = state.step
        state.step += 1
        done += 1
        if on_step is not None:
            on_step(step, mode, warmup)
    return done


def run_cell(
    spec: CellSpec,
    writer: RecordWriter,
    *,
    device: str | torch.device = "auto",
    data_root: str | os.PathLike[str] | None = None,
    workload_factory: WorkloadFactory | None = None,
    progress: bool | Progress = False,
    attempt: int = 1,
) -> tuple[str, str]:
    """Train one cell, writing its records; returns ``(status, message)``.

    Exceptions (including out-of-memory and ``KeyboardInterrupt``) propagate; records
    written so far are flushed first.
    """
    dev = device_for(resolve_device(device), world())
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    writer.update_base(**record_base(spec, dev, preset=spec.preset, attempt=attempt))
    try:
        reset_peak(dev)
        cell = build_cell(spec, dev, data_root=data_root, workload_factory=workload_factory)
        writer.update_base(
            **record_base(
                spec,
                dev,
                cell,
                epochs=cell.epochs,
                steps_per_epoch=cell.steps_per_epoch,
                replay_first_epoch=cell.replay,
            )
        )
        note = cell.workload.data_note
        writer.write({"kind": "cell", "name": "started", "value": note or ""}, flush=True)
        writer.write({"kind": "memory", **memory_baseline(dev)})
        return _train(cell, writer, progress)
    finally:
        writer.flush()


def _train(cell: Cell, writer: RecordWriter, progress: bool | Progress) -> tuple[str, str]:
    spec, dev, workload, opt = cell.spec, cell.device, cell.workload, cell.opt
    epochs, per_epoch = cell.epochs, cell.steps_per_epoch
    model = workload.model
    loader = workload.train_loader
    timer = StepTimer(dev)
    state = cell.loop_state()
    train_seconds = 0.0
    eval_total = 0.0  # evaluation time: kept out of train_seconds, recorded beside it
    evaluate = eval_function(workload, spec.eval_split)
    reached = False
    status, message = "finished", ""
    last_epoch = 0
    probe: KeepFirst | None = None  # keeps epoch 0's first batch for the staleness probe
    probe_batch: Any = None

    previous = phases.set_recorder(timer)
    shown = as_progress(progress).cell(spec.run_id, epochs, per_epoch)
    try:
        for epoch in range(epochs):
            last_epoch = epoch
            shown.start_epoch(epoch)
            model.train()
            loss_sum = torch.zeros((), device=dev)
            synchronize(dev)
            t0 = time.perf_counter()
            if cell.replay:
                loader.set_epoch(0)
            batches = iter(loader)
            if epoch == 0 and probed(opt):
                batches = probe = KeepFirst(batches)
            try:
                done = run_steps(
                    workload,
                    opt,
                    batches,
                    per_epoch,
                    timer=timer,
                    epoch=epoch,
                    state=state,
                    device=dev,
                    loss_sum=loss_sum,
                    on_step=shown.on_step,
                    scheduler=cell.scheduler,
                    model=cell.model,
                )
            except FloatingPointError as exc:  # an optimiser's own finiteness check
                writer.write_many(timer.flush())
                status, message = "diverged", f"epoch {epoch}: {type(exc).__name__}: {exc}"
                break
            finally:
                del batches  # a cut-short DataLoader iterator shuts its workers down
            if done == 0:
                raise RuntimeError(f"{spec.workload}: the train loader gave no batch")
            synchronize(dev)
            epoch_seconds = time.perf_counter() - t0
            # under torchrun: the slowest rank's step and epoch times, the ranks' mean loss
            timings, epoch_seconds, train_loss = merge_timings(
                timer.flush(), epoch_seconds, float(loss_sum.item()) / done
            )
            train_seconds += epoch_seconds
            writer.write_many(timings)
            writer.write(
                {
                    "kind": "epoch",
                    "epoch": epoch,
                    "seconds": epoch_seconds,
                    "name": "train_loss",
                    "value": train_loss,
                    "steps": done,
                    "train_seconds": train_seconds,
                }
            )
            if not math.isfinite(train_loss):
                status = "diverged"
                message = f"non-finite train loss ({train_loss}) in epoch {epoch}"
                break

            phases.set_recorder(None)
            try:
                t_eval = time.perf_counter()
                model.eval()
                with torch.no_grad():
                    result = evaluate(model)
                synchronize(dev)
                eval_seconds = time.perf_counter() - t_eval
                eval_total += eval_seconds
            finally:
                model.train()
                phases.set_recorder(timer)
            for name, value in result.items():
                writer.write(
                    {
                        "kind": "eval",
                        "epoch": epoch,
                        "name": name,
                        "value": float(value),
                        "seconds": train_seconds,
                        "eval_seconds": eval_seconds,
                        "split": spec.eval_split,
                    }
                )
            metric = workload.metric_name
            shown.end_epoch(
                epoch, train_loss, (metric, float(result[metric])) if metric in result else None
            )
            if not reached and metric in result:
                value = float(result[metric])
                if workload.reached(value):
                    reached = True
                    writer.write(
                        {
                            "kind": "target",
                            "epoch": epoch,
                            "name": "time_to_target",
                            "value": float(workload.target),
                            "seconds": train_seconds,
                            "metric": metric,
                            "metric_value": value,
                            "split": spec.eval_split,
                            "eval_seconds": eval_total,
                        }
                    )
                    if spec.stop_at_target:
                        message = f"stopped at the target in epoch {epoch}"
                        writer.flush()
                        break
            if probe is not None and probe_batch is None and probe.first is not None:
                x, y, ids = probe.first
                probe_batch = (to_device(x, dev), to_device(y, dev), ids)
            if epoch > 0 and probe_batch is not None:
                phases.set_recorder(None)
                try:
                    writer.write_many(
                        staleness_records(
                            workload,
                            opt,
                            probe_batch,
                            dev,
                            epoch=epoch,
                            train_seconds=train_seconds,
                        )
                    )
                finally:
                    phases.set_recorder(timer)
            writer.flush()
        writer.write_many({**r, "epoch": last_epoch} for r in memory_records(dev, opt))
        return status, message
    finally:
        shown.close()
        phases.set_recorder(previous)
