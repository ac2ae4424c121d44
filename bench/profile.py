"""``fngd-bench profile``: a torch.profiler trace of each phase of one optimiser, for TensorBoard.

``profile_run`` builds the workload and the optimiser as the runner does
(``bench.runner.build_cell``: label, hyperparameters, ``steps_per_epoch``), trains under
``torch.profiler.profile`` with one ``prof.step()`` per training step (so ``ProfilerStep#N``
is training step ``N``), and records a window of steps chosen so that every mode of the
optimiser is in it:

- FNGD (``fngd``, ``fngd-iter``): epoch 0 runs in full (its steps invert: Gram and solve)
  and the window covers its last steps and the first steps of epoch 1 (weighted sums);
- KFAC: the window holds a step whose index is a multiple of ``inv_update_steps`` (inverse
  update) and steps that are not (``inverse`` / ``no_inverse``);
- SGD, AdamW, NGD (one mode): the window starts after a few warm-up steps.

Every epoch of a profile replays the sample order of the first epoch (when the loader has
``set_epoch``), so that FNGD with ``share="sample"`` finds a stored coefficient for every
sample of every batch of epoch 1 even when epochs are cut short by
``max_steps_per_epoch`` or lose their last partial batch; a step's cost does not depend on
which samples it draws. The mode of each step is read from ``opt.mode`` after the step.

The trace goes to ``OUT/<workload>/<optimizer>/<host>_<pid>.<timestamp>.pt.trace.json``
(TensorBoard: ``tensorboard --logdir OUT``), replacing earlier traces there. It is then read
back (``bench.trace_summary``) into ``profile`` records in
``OUT/<workload>/<optimizer>/profile.jsonl``: per profiled step and phase, ``cpu_time`` and
(on CUDA) ``gpu_time`` in seconds and ``count`` (calls), with the step's ``mode``, ``epoch``,
``warmup`` and the enclosing phase in ``parent``; records with ``phase`` null hold the whole
step (the ``ProfilerStep#N`` range and the kernels launched in it). Summed over a run they
give the per-phase totals the report shows.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench import trace_summary
from bench.records import RecordWriter
from bench.step import train_step
from fngd.phases import phase

__all__ = [
    "DEFAULT_MAX_STEPS_PER_EPOCH",
    "DEFAULT_STEPS",
    "ProfileResult",
    "Window",
    "expected_modes",
    "format_table",
    "main",
    "plan_window",
    "profile_run",
    "summary_records",
]

DEFAULT_STEPS = 10
#: Epochs of a profile are cut to this many steps (FNGD's first epoch runs in full).
DEFAULT_MAX_STEPS_PER_EPOCH = 50
#: Steps before the window of one-mode optimisers (as the runner's warm-up steps).
MIN_START = 3
#: Profiler warm-up steps (traced, then discarded) before the window.
PROFILER_WARMUP = 1
RECORDS_NAME = "profile.jsonl"


# -- the window ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Steps ``start .. start + active - 1`` are recorded; ``warmup`` steps before them are
    traced and discarded (the profiler's own warm-up)."""

    start: int
    active: int
    note: str = ""

    @property
    def warmup(self) -> int:
        return min(PROFILER_WARMUP, self.start)

    @property
    def total(self) -> int:
        """Training steps to run: the window ends the run."""
        return self.start + self.active

    @property
    def steps(self) -> range:
        return range(self.start, self.total)

    def schedule(self) -> Callable[[int], Any]:
        return torch.profiler.schedule(
            wait=self.start - self.warmup, warmup=self.warmup, active=self.active, repeat=1
        )


def _inv_update_steps(opt: Any) -> int | None:
    value = (getattr(opt, "hparams", None) or {}).get("inv_update_steps")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _fngd_shares(opt: Any) -> bool:
    """FNGD that stores coefficients (not ``share="none"``: exact NGD, one mode)."""
    if getattr(opt, "name", None) != "fngd":
        return False
    share = getattr(getattr(opt, "preconditioner", None), "share", None)
    if share is None:
        share = (getattr(opt, "hparams", None) or {}).get("share", "sample")
    return share != "none"


def expected_modes(opt: Any) -> tuple[str, ...]:
    """The modes a window should show for ``opt`` (empty: one-mode optimiser)."""
    if _fngd_shares(opt):
        return ("inversion", "weighted_sum")
    if getattr(opt, "name", None) == "kfac" and (_inv_update_steps(opt) or 0) > 1:
        return ("inverse", "no_inverse")
    return ()


def plan_window(opt: Any, steps_per_epoch: int, steps: int = DEFAULT_STEPS) -> Window:
    """The steps to record so that every mode of ``opt`` is in the window (module docstring)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
    modes = expected_modes(opt)
    if modes and steps < 2:
        raise ValueError(
            f"{opt.name} has two modes ({' / '.join(modes)}): profile at least 2 steps"
        )
    before = max(1, steps // 2)
    if modes and modes[0] == "inversion":
        before = min(before, max(1, steps_per_epoch - 1))
        start = max(0, steps_per_epoch - before)
        note = (
            f"steps {start}..{start + before - 1}: end of epoch 0 (inversion), "
            f"{steps_per_epoch}..{start + steps - 1}: start of epoch 1 (weighted sum)"
        )
        return Window(start, steps, note)
    if modes and modes[0] == "inverse":
        k = _inv_update_steps(opt) or 1
        target = k * math.ceil((MIN_START + before) / k)
        start = target - before
        return Window(start, steps, f"inverse update at step {target} (every {k} steps)")
    return Window(MIN_START, steps, f"after {MIN_START} warm-up steps")


# -- the run ------------------------------------------------------------------------------------


@dataclass
class ProfileResult:
    run_dir: Path
    traces: list[Path]
    records_path: Path
    window: Window
    modes: dict[int, Any]  # training step -> opt.mode after it (every step run)
    summary: trace_summary.TraceSummary
    records: list[dict[str, Any]] = field(default_factory=list)
    workload: str = ""
    optimizer: str = ""
    device: str = "cpu"
    missing_modes: tuple[str, ...] = ()
    stopped: str = ""  # why training stopped before the window's end, if it did

    @property
    def complete(self) -> bool:
        """The whole window was traced and read back, with every expected mode."""
        return (
            not self.stopped
            and not self.missing_modes
            and self.summary.step_numbers == list(self.window.steps)
        )


def _clear_previous(run_dir: Path) -> None:
    """A profile replaces the previous one in its directory (traces and records)."""
    for p in trace_summary.trace_files(run_dir):
        p.unlink()
    records = run_dir / RECORDS_NAME
    if records.exists():
        records.unlink()


def _activities(device: torch.device) -> list[torch.profiler.ProfilerActivity]:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda" and torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return activities


def profile_run(
    workload: str,
    optimizer: str,
    out_dir: str | os.PathLike[str] = "runs",
    device: str | torch.device = "auto",
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    *,
    size: str = "small",
    batch_size: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    max_steps_per_epoch: int | None = DEFAULT_MAX_STEPS_PER_EPOCH,
    overrides: Mapping[str, Any] | None = None,
    use_gzip: bool = False,
    workload_factory: Callable[..., Any] | None = None,
) -> ProfileResult:
    """Profile ``steps`` training steps of ``workload`` with optimiser label ``optimizer``.

    Writes the trace and ``profile.jsonl`` to ``out_dir/<workload>/<optimizer>`` (module
    docstring) and returns what was written. ``max_steps_per_epoch`` (None: whole epochs)
    cuts each epoch, ``overrides`` are hyperparameters on top of the workload's,
    ``workload_factory`` replaces ``bench.workloads.get``. Training that diverges
    (``FloatingPointError``) ends the run early; ``result.stopped`` says so.
    """
    from bench.runner import CellSpec, build_cell, environment, resolve_device, to_device

    if max_steps_per_epoch is not None and max_steps_per_epoch < 1:
        raise ValueError(f"max_steps_per_epoch must be at least 1, got {max_steps_per_epoch}")
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    spec = CellSpec(
        workload,
        optimizer,
        seed,
        overrides=dict(overrides or {}),
        max_steps_per_epoch=max_steps_per_epoch,
        batch_size=batch_size,
        size=size,
    )
    wl, opt = build_cell(spec, dev, data_root=data_root, workload_factory=workload_factory)
    loader = wl.train_loader
    per_epoch = len(loader)
    if max_steps_per_epoch is not None:
        per_epoch = min(per_epoch, int(max_steps_per_epoch))
    if per_epoch < 1:
        raise RuntimeError(f"{workload}: the train loader gives no batch")
    window = plan_window(opt, per_epoch, steps)

    run_dir = Path(out_dir) / workload / optimizer
    run_dir.mkdir(parents=True, exist_ok=True)
    _clear_previous(run_dir)

    modes: dict[int, Any] = {}
    epochs: dict[int, int] = {}
    stopped = ""
    replay = callable(getattr(loader, "set_epoch", None))
    handler = torch.profiler.tensorboard_trace_handler(str(run_dir), use_gzip=use_gzip)
    opt.optimizer.zero_grad(set_to_none=True)
    wl.model.train()
    with torch.profiler.profile(
        activities=_activities(dev),
        schedule=window.schedule(),
        on_trace_ready=handler,
        record_shapes=True,
        profile_memory=True,
        with_stack=False,
    ) as prof:
        step = 0
        epoch = 0
        while step < window.total and not stopped:
            if replay:
                loader.set_epoch(0)
            batches = iter(loader)
            in_epoch = 0
            while in_epoch < per_epoch and step < window.total:
                try:
                    with phase("data"):
                        batch = next(batches, None)
                        if batch is not None:
                            inputs, targets, sample_ids = batch
                            if dev.type == "cuda":
                                inputs = to_device(inputs, dev)
                                targets = to_device(targets, dev)
                    if batch is None:
                        break
                    train_step(wl, opt, inputs, targets, sample_ids)
                except FloatingPointError as exc:  # an optimiser's finiteness check
                    stopped = f"step {step}: {type(exc).__name__}: {exc}"
                    break
                modes[step] = opt.mode
                epochs[step] = epoch
                step += 1
                in_epoch += 1
                prof.step()
            del batches
            if in_epoch == 0 and not stopped:
                raise RuntimeError(f"{workload}: the train loader gave no batch")
            epoch += 1

    traces = trace_summary.trace_files(run_dir)
    if not traces:
        raise RuntimeError(f"no trace was written to {run_dir} ({stopped or 'no active step'})")
    summaries = [trace_summary.summarize_file(p) for p in traces]
    summary = _merge(summaries)

    seen = {modes.get(n) for n in summary.step_numbers}
    missing = tuple(m for m in expected_modes(opt) if m not in seen)

    env = environment(dev)
    base = {
        "run_id": f"{spec.run_id}__profile",
        "workload": workload,
        "optimizer": optimizer,
        "family": spec.family,
        "impl": opt.impl,
        "hparams": opt.hparams,
        "seed": seed,
        "data_source": getattr(wl, "data_source", None),
        "batch_size": getattr(wl, "batch_size", None),
        "size": size,
        "steps_per_epoch": per_epoch,
        "max_steps_per_epoch": max_steps_per_epoch,
        "replay_first_epoch": replay,
        **env,
    }
    step_traces = {st.step: Path(t.path or "").name for t in summaries for st in t.steps}
    records = summary_records(summary, modes, epochs, step_traces=step_traces)
    path = run_dir / RECORDS_NAME
    with RecordWriter(path, base) as writer:
        writer.write_many(records, flush=True)
    return ProfileResult(
        run_dir=run_dir,
        traces=traces,
        records_path=path,
        window=window,
        modes=modes,
        summary=summary,
        records=[{**base, **r} for r in records],
        workload=workload,
        optimizer=optimizer,
        device=dev.type,
        missing_modes=missing,
        stopped=stopped,
    )


def _merge(summaries: list[trace_summary.TraceSummary]) -> trace_summary.TraceSummary:
    """One summary of several traces (one per schedule cycle); steps keep their numbers."""
    if len(summaries) == 1:
        return summaries[0]
    steps = sorted((s for t in summaries for s in t.steps), key=lambda s: s.step)
    return trace_summary.TraceSummary(
        steps=steps,
        has_gpu=any(t.has_gpu for t in summaries),
        kernels=sum(t.kernels for t in summaries),
        unattributed_gpu_time=sum(t.unattributed_gpu_time for t in summaries),
        fallback_kernels=sum(t.fallback_kernels for t in summaries),
        path=", ".join(str(t.path) for t in summaries),
    )


def summary_records(
    summary: trace_summary.TraceSummary,
    modes: Mapping[int, Any],
    epochs: Mapping[int, int] | None = None,
    *,
    warmup_steps: int = MIN_START,
    step_traces: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    """``profile`` records of a summary: per step, one set for the whole step (``phase``
    null) and one per (phase, parent); ``gpu_time`` only when the trace has kernels.

    ``warmup`` follows the runner: one of the first ``warmup_steps`` steps, or the first
    step of a mode not seen in an earlier step of the run (traced or not).
    """
    epochs = epochs or {}
    first_of_mode: dict[Any, int] = {}
    for n in sorted(modes):
        first_of_mode.setdefault(modes[n], n)
    step_traces = step_traces or {}
    now = time.time()
    out: list[dict[str, Any]] = []
    for s in summary.steps:
        mode = modes.get(s.step)
        common = {
            "kind": "profile",
            "epoch": epochs.get(s.step),
            "step": s.step,
            "mode": mode,
            "warmup": s.step < warmup_steps or first_of_mode.get(mode) == s.step,
            "trace": step_traces.get(s.step),
            "time": now,
        }
        values: list[tuple[str | None, str | None, str, float]] = [
            (None, None, "cpu_time", s.cpu_time)
        ]
        if summary.has_gpu:
            values.append((None, None, "gpu_time", s.gpu_time))
        for (name, parent), p in s.phases.items():
            values.append((name, parent, "cpu_time", p.cpu_time))
            if summary.has_gpu:
                values.append((name, parent, "gpu_time", p.gpu_time))
            values.append((name, parent, "count", p.count))
        for ph, parent, key, value in values:
            out.append({**common, "phase": ph, "parent": parent, "name": key, "value": value})
    return out


# -- output -------------------------------------------------------------------------------------


def format_table(result: ProfileResult) -> str:
    """Per mode and phase: calls and mean CPU (and GPU) milliseconds per step."""
    s = result.summary
    modes = result.modes
    traced = s.step_numbers
    order: list[Any] = []
    for n in traced:
        if modes.get(n) not in order:
            order.append(modes.get(n))
    by_mode = ", ".join(
        f"{m if m is not None else 'steps'} {sum(modes.get(n) == m for n in traced)}" for m in order
    )
    lines = [
        f"profile {result.workload} / {result.optimizer} on {result.device}: "
        f"{len(traced)} steps traced ({by_mode}); {result.window.note}",
    ]
    gpu = s.has_gpu
    header = f"{'mode':<13} {'phase':<19} {'calls':>6} {'CPU ms/step':>12}"
    if gpu:
        header += f" {'GPU ms/step':>12}"
    lines += [header, "-" * len(header)]
    for m in order:
        steps = [st for st in s.steps if modes.get(st.step) == m]
        n = len(steps)
        label = str(m) if m is not None else "-"
        row = f"{label:<13} {'(step)':<19} {n:>6} {1e3 * sum(x.cpu_time for x in steps) / n:>12.3f}"
        if gpu:
            row += f" {1e3 * sum(x.gpu_time for x in steps) / n:>12.3f}"
        lines.append(row)
        totals = s.totals(modes, m)
        for name in s.phase_names():
            if name not in totals:
                continue
            t = totals[name]
            row = f"{label:<13} {name:<19} {t.count:>6} {1e3 * t.cpu_time / n:>12.3f}"
            if gpu:
                row += f" {1e3 * t.gpu_time / n:>12.3f}"
            lines.append(row)
    if gpu and s.unattributed_gpu_time > 0:
        lines.append(f"GPU kernel time outside any step: {1e3 * s.unattributed_gpu_time:.3f} ms")
    lines.append("phase times are inclusive (a phase nested in another counts in both)")
    lines.append(f"trace: {', '.join(str(p) for p in result.traces)}")
    lines.append(f"records: {result.records_path}")
    lines.append(f"view: tensorboard --logdir {result.run_dir.parent.parent}")
    if result.missing_modes:
        lines.append(f"warning: no step of mode {', '.join(result.missing_modes)} was traced")
    if result.stopped:
        lines.append(f"warning: training stopped early ({result.stopped})")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """``fngd-bench profile``: ``args.workload``, ``optimizer``, ``out``, ``device``,
    ``steps`` (and, if present, ``seed``, ``size``, ``data_root``, ``batch_size``,
    ``max_steps_per_epoch``). Returns 0 if the whole window was traced with every mode."""
    result = profile_run(
        args.workload,
        args.optimizer,
        out_dir=getattr(args, "out", None) or "runs",
        device=getattr(args, "device", None) or "auto",
        steps=int(getattr(args, "steps", None) or DEFAULT_STEPS),
        seed=int(getattr(args, "seed", None) or 0),
        size=getattr(args, "size", None) or "small",
        batch_size=getattr(args, "batch_size", None),
        data_root=getattr(args, "data_root", None),
        max_steps_per_epoch=getattr(args, "max_steps_per_epoch", DEFAULT_MAX_STEPS_PER_EPOCH),
    )
    print(format_table(result))
    return 0 if result.complete else 1
