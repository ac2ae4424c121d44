"""Training one cell and writing its records: ``run_cell``.

A *cell* is one (workload, optimiser label, seed) run, built by ``bench.cell.build`` and
trained through the one loop, ``bench.cell.loop.run_steps``. ``run_cell`` writes to a
``RecordWriter``:

- a ``cell`` record ``started`` once the workload and optimiser are built;
- per step, a ``step`` record holding its phases (``data`` around fetching the batch, then
  what ``bench.cell.step.train_step`` and the optimiser time), with ``mode`` (what the
  optimiser's step did) and ``warmup`` (``bench.cell.spec.LoopState``);
- per epoch, an ``epoch`` record (wall time on the host clock after a synchronisation, mean
  train loss), then ``eval`` records (one per key ``eval_fn`` returns; evaluation is not
  training time, its own duration is in ``eval_seconds``), then a ``target`` record the
  first time the workload's metric reaches its target (its ``seconds``: training time only);
  for FNGD with stored coefficients, from the second epoch on, ``staleness`` records from
  one fixed probe batch (``bench.cell.staleness``; like evaluation, not training time);
- once built, before training, a ``memory`` record of what the process already holds:
  ``baseline_allocated`` (CUDA) or ``baseline_rss`` (CPU);
- at the end, ``memory`` records: ``peak_allocated`` (CUDA) or ``peak_rss`` (CPU), the
  optimiser state in total (``optimizer_state``) and by component (``optimizer_state/<k>``).

It returns ``("finished", "")`` or ``("diverged", message)``; the caller
(``bench.campaign.sweep``) writes the closing ``cell`` record and turns exceptions into
``oom``/``error``. The train loss and phase times are read once per epoch, so training is
never synchronised more than once per epoch by the harness. A non-finite epoch loss (or a
``FloatingPointError`` from an optimiser's finiteness check) ends the cell as ``diverged``.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import torch

from bench.cell.build import build_cell, memory_records, record_base
from bench.cell.loop import run_steps, to_device
from bench.cell.spec import Cell, CellSpec, WorkloadFactory
from bench.cell.staleness import KeepFirst, probed, staleness_records
from bench.cell.timing import StepTimer
from bench.host.distributed import device_for, merge_timings, world
from bench.host.env import memory_baseline, reset_peak, resolve_device, synchronize
from bench.host.progress import Progress, as_progress
from bench.records import RecordWriter
from bench.workloads.workload import eval_function
from fngd import phases

__all__ = ["run_cell"]


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
        return _Training(cell, writer, progress).run()
    finally:
        writer.flush()


class _Training:
    """One cell's epochs: train, record the epoch, evaluate, the target, the probe."""

    def __init__(self, cell: Cell, writer: RecordWriter, progress: bool | Progress) -> None:
        self.cell, self.writer = cell, writer
        self.timer = StepTimer(cell.device)
        self.state = cell.loop_state()
        self.shown = as_progress(progress).cell(cell.spec.run_id, cell.epochs, cell.steps_per_epoch)
        self.evaluate = eval_function(cell.workload, cell.spec.eval_split)
        self.train_seconds = 0.0
        self.eval_total = 0.0  # evaluation time: kept out of train_seconds, recorded beside it
        self.reached = False
        self.probe: KeepFirst | None = None  # keeps epoch 0's first batch for the probe
        self.probe_batch: Any = None

    def run(self) -> tuple[str, str]:
        status, message, last_epoch = "finished", "", 0
        previous = phases.set_recorder(self.timer)
        try:
            for epoch in range(self.cell.epochs):
                last_epoch = epoch
                outcome = self._epoch(epoch)
                if outcome is not None:
                    status, message = outcome
                    break
            dev, opt = self.cell.device, self.cell.opt
            self.writer.write_many({**r, "epoch": last_epoch} for r in memory_records(dev, opt))
            return status, message
        finally:
            self.shown.close()
            phases.set_recorder(previous)

    def _epoch(self, epoch: int) -> tuple[str, str] | None:
        """Train, record and evaluate one epoch; ``(status, message)`` if the cell ends."""
        done, train_loss = self._train(epoch)
        if done is None:
            return "diverged", train_loss  # the optimiser's own message
        if not math.isfinite(train_loss):
            return "diverged", f"non-finite train loss ({train_loss}) in epoch {epoch}"
        result = self._eval(epoch)
        metric = self.cell.workload.metric_name
        value = float(result[metric]) if metric in result else None
        self.shown.end_epoch(epoch, train_loss, (metric, value) if value is not None else None)
        if value is not None and self._target(epoch, value) and self.cell.spec.stop_at_target:
            self.writer.flush()
            return "finished", f"stopped at the target in epoch {epoch}"
        self._staleness(epoch)
        self.writer.flush()
        return None

    def _train(self, epoch: int) -> tuple[int | None, Any]:
        """The epoch's steps, timed; ``(steps, mean train loss)``, or ``(None, message)``
        when the optimiser's finiteness check stopped it."""
        cell, dev = self.cell, self.cell.device
        self.shown.start_epoch(epoch)
        cell.workload.model.train()
        cell.opt.train()  # Schedule-Free: gradients at its training point
        loss_sum = torch.zeros((), device=dev)
        synchronize(dev)
        t0 = time.perf_counter()
        if cell.replay:
            cell.workload.train_loader.set_epoch(0)
        batches = iter(cell.workload.train_loader)
        if epoch == 0 and probed(cell.opt):
            batches = self.probe = KeepFirst(batches)
        try:
            done = run_steps(
                cell.workload,
                cell.opt,
                batches,
                cell.steps_per_epoch,
                timer=self.timer,
                epoch=epoch,
                state=self.state,
                device=dev,
                loss_sum=loss_sum,
                on_step=self.shown.on_step,
                scheduler=cell.scheduler,
                model=cell.model,
            )
        except FloatingPointError as exc:  # an optimiser's own finiteness check
            self.writer.write_many(self.timer.flush())
            return None, f"epoch {epoch}: {type(exc).__name__}: {exc}"
        finally:
            del batches  # a cut-short DataLoader iterator shuts its workers down
        if done == 0:
            raise RuntimeError(f"{cell.spec.workload}: the train loader gave no batch")
        synchronize(dev)
        epoch_seconds = time.perf_counter() - t0
        # under torchrun: the slowest rank's step and epoch times, the ranks' mean loss
        timings, epoch_seconds, train_loss = merge_timings(
            self.timer.flush(), epoch_seconds, float(loss_sum.item()) / done
        )
        self.train_seconds += epoch_seconds
        self.writer.write_many(timings)
        self.writer.write(
            {
                "kind": "epoch",
                "epoch": epoch,
                "seconds": epoch_seconds,
                "name": "train_loss",
                "value": train_loss,
                "steps": done,
                "train_seconds": self.train_seconds,
            }
        )
        return done, train_loss

    def _eval(self, epoch: int) -> dict[str, float]:
        """Evaluate on the cell's split, outside every recorded phase and training time."""
        model, dev, opt = self.cell.workload.model, self.cell.device, self.cell.opt
        phases.set_recorder(None)
        try:
            t_eval = time.perf_counter()
            model.eval()
            opt.eval()  # Schedule-Free: evaluate its averaged parameters
            with torch.no_grad():
                result = self.evaluate(model)
            synchronize(dev)
            eval_seconds = time.perf_counter() - t_eval
            self.eval_total += eval_seconds
        finally:
            model.train()
            opt.train()
            phases.set_recorder(self.timer)
        for name, value in result.items():
            self.writer.write(
                {
                    "kind": "eval",
                    "epoch": epoch,
                    "name": name,
                    "value": float(value),
                    "seconds": self.train_seconds,
                    "eval_seconds": eval_seconds,
                    "split": self.cell.spec.eval_split,
                }
            )
        return result

    def _target(self, epoch: int, value: float) -> bool:
        """Record the first epoch whose metric reaches the target; whether this one did."""
        workload = self.cell.workload
        if self.reached or not workload.reached(value):
            return False
        self.reached = True
        self.writer.write(
            {
                "kind": "target",
                "epoch": epoch,
                "name": "time_to_target",
                "value": float(workload.target),
                "seconds": self.train_seconds,
                "metric": workload.metric_name,
                "metric_value": value,
                "split": self.cell.spec.eval_split,
                "eval_seconds": self.eval_total,
            }
        )
        return True

    def _staleness(self, epoch: int) -> None:
        """From the second epoch on, the stored coefficients against a fresh solve on the
        probe batch (epoch 0's first), outside every recorded phase."""
        dev = self.cell.device
        if self.probe is not None and self.probe_batch is None and self.probe.first is not None:
            x, y, ids = self.probe.first
            self.probe_batch = (to_device(x, dev), to_device(y, dev), ids)
        if epoch == 0 or self.probe_batch is None:
            return
        phases.set_recorder(None)
        try:
            self.writer.write_many(
                staleness_records(
                    self.cell.workload,
                    self.cell.opt,
                    self.probe_batch,
                    dev,
                    epoch=epoch,
                    train_seconds=self.train_seconds,
                )
            )
        finally:
            phases.set_recorder(self.timer)
