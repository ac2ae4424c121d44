"""The training loop of one cell, with phase timers and records.

A *cell* is one (workload, optimiser label, seed) run. ``run_cell`` seeds everything, builds
the workload and the optimiser, trains, and writes to a ``RecordWriter``:

- a ``cell`` record ``started`` once the workload and optimiser are built;
- per step, a ``step`` record and one ``phase`` record per phase (``data`` around fetching
  the batch, then what ``bench.step.train_step`` and the optimiser time), with ``mode`` (what
  the optimiser's step did) and ``warmup``;
- per epoch, an ``epoch`` record (wall time on the host clock after a synchronisation, mean
  train loss), then ``eval`` records (one per key ``eval_fn`` returns; evaluation is not
  training time, its own duration is in ``eval_seconds``), then a ``target`` record the
  first time the workload's metric reaches its target;
- at the end, ``memory`` records: ``peak_allocated`` (CUDA) or ``peak_rss`` (CPU), the
  optimiser state in total (``optimizer_state``) and by component (``optimizer_state/<k>``).

It returns ``("finished", "")`` or ``("diverged", message)``; the caller (``bench.sweep``)
writes the closing ``cell`` record and turns exceptions into ``oom``/``error``.

Warm-up rule: a step is ``warmup: true`` if it is one of the first ``warmup_steps`` steps of
the cell, or if it is the first step with a ``mode`` the cell has not seen before. The
second part covers FNGD's first weighted-sum step (a new code path at the start of epoch 2:
new kernels, allocator growth) and KFAC's first step without an inverse, wherever they fall.

Timing: the train loss is accumulated on the device and read once per epoch, and phase times
are read once per epoch (``bench.timing.StepTimer``), so training is never synchronised
more than once per epoch by the harness. A non-finite epoch loss (or a ``FloatingPointError``
from an optimiser's finiteness check) ends the cell as ``diverged``.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.presets import resolve_label
from bench.records import RecordWriter
from bench.step import train_step
from bench.timing import StepTimer
from fngd import phases

__all__ = [
    "CellSpec",
    "build_cell",
    "environment",
    "resolve_device",
    "run_cell",
    "run_steps",
    "seed_everything",
]

WorkloadFactory = Callable[..., Any]


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
    warmup_steps: int = 3
    preset: str | None = None

    @property
    def run_id(self) -> str:
        return f"{self.workload}__{self.optimizer}__s{self.seed}"

    @property
    def family(self) -> str:
        return resolve_label(self.optimizer).family


# -- environment -------------------------------------------------------------------------------


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` gets the current device's index."""
    dev = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if str(device) == "auto" else device
    )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda asked for, but CUDA is not available")
        if dev.index is None:  # tensors report cuda:N; compare like with like
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def environment(device: torch.device) -> dict[str, Any]:
    """The fields that identify the machine and the code (in every record)."""
    return {
        "device": device.type,
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "git_commit": git_commit(),
        "threads": torch.get_num_threads(),
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # all devices
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- memory ------------------------------------------------------------------------------------


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) of the process, so each
    # cell of a sweep gets its own peak rather than the largest so far.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (since the last reset on Linux)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def memory_records(device: torch.device, opt: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if device.type == "cuda":
        out.append({"name": "peak_allocated", "value": torch.cuda.max_memory_allocated(device)})
    else:
        out.append({"name": "peak_rss", "value": peak_rss()})
    usage = {str(k): int(v) for k, v in opt.memory_usage().items()}
    out.append({"name": "optimizer_state", "value": sum(usage.values())})
    out.extend({"name": f"optimizer_state/{k}", "value": v} for k, v in sorted(usage.items()))
    return [{"kind": "memory", **r} for r in out]


# -- building ----------------------------------------------------------------------------------


def default_workload_factory() -> WorkloadFactory:
    from bench import workloads

    return workloads.get


def cell_hparams(spec: CellSpec, workload: Any) -> dict[str, Any]:
    """Defaults < workload.hparams[family] < workload.hparams[label] < label < cell overrides."""
    variant = resolve_label(spec.optimizer)
    tuned = dict(getattr(workload, "hparams", None) or {})
    hp = dict(tuned.get(variant.family, {}))
    if variant.label != variant.family:
        hp.update(tuned.get(variant.label, {}))
    hp.update(variant.overrides)
    hp.update(spec.overrides)
    return hp


def steps_per_epoch(spec: CellSpec, loader: Any) -> int:
    n = len(loader)
    if spec.max_steps_per_epoch is not None:
        n = min(n, int(spec.max_steps_per_epoch))
    return n


def replays_first_epoch(spec: CellSpec, loader: Any) -> bool:
    """Whether every (cut) epoch replays the first epoch's batches.

    With ``max_steps_per_epoch`` below the loader's length, a reshuffled epoch would hold
    samples the cut first epoch never saw, and FNGD (``share="sample"``) would run its
    inversion phase again instead of the weighted sum. So cut epochs replay epoch 0's order
    (``loader.set_epoch(0)``, for every optimiser alike): later epochs then time the
    weighted-sum path on the same batches. Recorded as ``replay_first_epoch``.
    """
    return (
        spec.max_steps_per_epoch is not None
        and spec.max_steps_per_epoch < len(loader)
        and callable(getattr(loader, "set_epoch", None))
    )


def build_cell(
    spec: CellSpec,
    device: torch.device,
    *,
    data_root: str | os.PathLike[str] | None = None,
    workload_factory: WorkloadFactory | None = None,
) -> tuple[Any, Any]:
    """Seed, build the workload and the optimiser; returns ``(workload, opt)``."""
    from fngd.optimizers import DEFAULTS, build

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
    family = spec.family
    hp = cell_hparams(spec, workload)
    if "steps_per_epoch" in DEFAULTS.get(family, {}) and hp.get("steps_per_epoch") is None:
        hp["steps_per_epoch"] = steps_per_epoch(spec, workload.train_loader)
    opt = build(family, workload.model, **hp)
    return workload, opt


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


def _profiler_enabled() -> bool:
    check = getattr(torch._C._autograd, "_profiler_enabled", None)
    return True if check is None else bool(check())


@dataclass
class LoopState:
    """What carries over between epochs of a cell."""

    step: int = 0  # global step index
    warmup_steps: int = 3
    seen_modes: set[Any] = field(default_factory=set)


def run_steps(
    workload: Any,
    opt: Any,
    batches: Iterator[Any],
    n: int,
    *,
    timer: StepTimer,
    epoch: int,
    state: LoopState,
    device: torch.device,
    loss_sum: torch.Tensor,
    on_step: Callable[[], None] | None = None,
) -> int:
    """Up to ``n`` timed steps from ``batches``; adds each loss into ``loss_sum`` (on the
    device). Returns the number of steps done (fewer when ``batches`` runs out)."""
    on_cuda = device.type == "cuda"
    # The ``data`` phase calls the timer directly, and carries the profiler label only while
    # a profiler runs: ``record_function`` costs microseconds even when nothing listens.
    profiling = _profiler_enabled()
    done = 0
    while done < n:
        timer.start_step(state.step, epoch, state.step < state.warmup_steps)
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
            loss = train_step(workload, opt, inputs, targets, sample_ids)
        except BaseException:
            timer.discard_step()
            raise
        mode = opt.mode
        warmup = state.step < state.warmup_steps or mode not in state.seen_modes
        state.seen_modes.add(mode)
        timer.end_step(mode=mode, warmup=warmup)
        loss_sum += loss.float()
        state.step += 1
        done += 1
        if on_step is not None:
            on_step()
    return done


def _metric_reached(value: float, target: float, higher_is_better: bool) -> bool:
    return value >= target if higher_is_better else value <= target


def run_cell(
    spec: CellSpec,
    writer: RecordWriter,
    *,
    device: str | torch.device = "auto",
    data_root: str | os.PathLike[str] | None = None,
    workload_factory: WorkloadFactory | None = None,
    progress: bool = False,
    attempt: int = 1,
) -> tuple[str, str]:
    """Train one cell, writing its records; returns ``(status, message)``.

    Exceptions (including out-of-memory and ``KeyboardInterrupt``) propagate; records
    written so far are flushed first.
    """
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    writer.update_base(
        run_id=spec.run_id,
        workload=spec.workload,
        optimizer=spec.optimizer,
        family=spec.family,
        seed=spec.seed,
        size=spec.size,
        max_steps_per_epoch=spec.max_steps_per_epoch,
        preset=spec.preset,
        attempt=attempt,
        hparams=dict(spec.overrides),
        **environment(dev),
    )
    try:
        _reset_peak(dev)
        workload, opt = build_cell(
            spec, dev, data_root=data_root, workload_factory=workload_factory
        )
        loader = workload.train_loader
        epochs = int(spec.epochs if spec.epochs is not None else workload.epochs)
        per_epoch = steps_per_epoch(spec, loader)
        writer.update_base(
            impl=opt.impl,
            hparams=opt.hparams,
            data_source=getattr(workload, "data_source", None),
            batch_size=getattr(workload, "batch_size", None),
            epochs=epochs,
            steps_per_epoch=per_epoch,
            replay_first_epoch=replays_first_epoch(spec, loader),
        )
        note = getattr(workload, "data_note", None)
        writer.write({"kind": "cell", "name": "started", "value": note or ""}, flush=True)
        return _train(spec, writer, workload, opt, dev, epochs, per_epoch, progress)
    finally:
        writer.flush()


def _train(
    spec: CellSpec,
    writer: RecordWriter,
    workload: Any,
    opt: Any,
    dev: torch.device,
    epochs: int,
    per_epoch: int,
    progress: bool,
) -> tuple[str, str]:
    from tqdm import tqdm

    model = workload.model
    loader = workload.train_loader
    replay = replays_first_epoch(spec, loader)
    timer = StepTimer(dev)
    state = LoopState(warmup_steps=spec.warmup_steps)
    train_seconds = 0.0
    target = getattr(workload, "target", None)
    metric = getattr(workload, "metric_name", None)
    higher = bool(getattr(workload, "higher_is_better", True))
    reached = False
    status, message = "finished", ""
    last_epoch = 0

    previous = phases.set_recorder(timer)
    bar = tqdm(
        total=per_epoch,
        desc=spec.run_id,
        unit="step",
        leave=False,
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for epoch in range(epochs):
            last_epoch = epoch
            bar.reset(total=per_epoch)
            bar.set_description(f"{spec.run_id} epoch {epoch + 1}/{epochs}")
            model.train()
            loss_sum = torch.zeros((), device=dev)
            synchronize(dev)
            t0 = time.perf_counter()
            if replay:
                loader.set_epoch(0)
            batches = iter(loader)
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
                    on_step=bar.update if progress else None,
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
            train_seconds += epoch_seconds
            writer.write_many(timer.flush())
            train_loss = float(loss_sum.item()) / done
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
                    result = workload.eval_fn(model)
                synchronize(dev)
                eval_seconds = time.perf_counter() - t_eval
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
                    }
                )
            if target is not None and not reached and metric in result:
                value = float(result[metric])
                if _metric_reached(value, float(target), higher):
                    reached = True
                    writer.write(
                        {
                            "kind": "target",
                            "epoch": epoch,
                            "name": "time_to_target",
                            "value": float(target),
                            "seconds": train_seconds,
                            "metric": metric,
                            "metric_value": value,
                        }
                    )
            writer.flush()
        writer.write_many({**r, "epoch": last_epoch} for r in memory_records(dev, opt))
        return status, message
    finally:
        bar.close()
        phases.set_recorder(previous)
