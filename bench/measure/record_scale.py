"""Records at scale: a generated record set shaped like a paper schedule, written through the
real writer, and what reporting it costs.

What the scale benchmark (``bench/suite/test_records_scale.py``) and the report's scaling test
(``tests/test_report_scale.py``) read: one cell per (workload, optimiser label) of the
``paper`` preset, each written as the runner writes it (``bench.records.RecordWriter``: a
base line, per epoch its steps, the ``epoch``, ``eval``, ``target`` and ``staleness``
records and a flush; ``cell`` and ``memory`` records around them) and, once closed,
compacted to Parquet (``bench.records.parquet.compact``), as ``bench.campaign.sweep`` does.

A step holds the phases its optimiser family times (``fngd.phases``): FNGD inverts in its
first epoch (Gram, solve, weighted sum) and from the second on runs its weighted sum inside
``backward``, once per block; exact NGD inverts at every step; KFAC computes its inverse every
10 steps (``kfac-inv1``: every step). Times are lognormal around a per-phase base, drawn as
full float64 values: every byte of their mantissas random, the hardest case for compression
(CUDA event times divided by 1000 look like that; CPU clock differences compress better).

``FULL``: 2 workloads x 7 labels x 100 epochs x 391 steps (CIFAR-100 at batch 128), about
4.1 million step-phase entries (a step and each phase entry it timed), one seed of the
paper schedule run to the end. ``measure_report`` runs ``fngd-bench report`` on a record set
in a child process: its wall time, CPU time and peak resident memory.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.campaign.presets import PRESETS
from bench.labels import resolve_label
from bench.records import RecordWriter, parquet, phase_key
from fngd import phases as ph

__all__ = ["FULL", "RecordSet", "ReportCost", "Schedule", "measure_report", "write_record_set"]

#: Weighted sums FNGD runs per step inside ``backward`` (one per block) in later epochs.
BLOCKS = 5
#: KFAC's inverse interval (``kfac``) in steps.
KFAC_INVERSE_EVERY = 10
_SIGMA = 0.08  # spread of the lognormal step and phase times


@dataclass(frozen=True)
class Schedule:
    """Which cells, and how long each runs."""

    workloads: tuple[str, ...] = PRESETS["paper"].workloads
    labels: tuple[str, ...] = PRESETS["paper"].optimizers
    epochs: int = 100
    steps_per_epoch: int = 391
    seed: int = 0

    @property
    def cells(self) -> int:
        return len(self.workloads) * len(self.labels)

    @property
    def steps(self) -> int:
        return self.cells * self.epochs * self.steps_per_epoch

    def scaled(self, epochs: int) -> Schedule:
        """The same cells, ``epochs`` long."""
        return replace(self, epochs=epochs)


#: One seed of the full paper schedule.
FULL = Schedule()


@dataclass
class RecordSet:
    """What ``write_record_set`` wrote."""

    directory: Path
    files: list[Path]
    steps: int
    entries: int  # step-phase entries: each step, and each phase entry it timed
    records: int  # records written (a step with its phases is one)

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    @property
    def bytes_per_step(self) -> float:
        return self.bytes / self.steps if self.steps else math.nan


# (name, parent, entries, base seconds) per phase: the steps of each kind of optimiser
_COMMON = [(ph.DATA, None, 1, 2e-4), (ph.FORWARD, None, 1, 9e-3), (ph.BACKWARD, None, 1, 1.8e-2)]
_UPDATE = [(ph.UPDATE, None, 1, 1.5e-3)]
_INVERSION = [
    (ph.FNGD_GRAM, None, 1, 2.2e-2),
    (ph.FNGD_SOLVE, None, 1, 4e-3),
    (ph.FNGD_WEIGHTED_SUM, None, 1, 6e-3),
]
_WEIGHTED_SUM = [(ph.FNGD_WEIGHTED_SUM, ph.BACKWARD, BLOCKS, 8e-4)]
_KFAC = [(ph.KFAC_FACTORS, None, 1, 1.1e-2), (ph.KFAC_PRECONDITION, None, 1, 5e-3)]
_KFAC_INVERSE = [(ph.KFAC_INVERSE, None, 1, 6e-2)]


def _step_kind(family: str, label: str, epoch: int, step: int) -> tuple[str | None, list]:
    """The mode and the phases of one step of ``label``."""
    if family in ("sgd", "adamw"):
        return None, _COMMON + _UPDATE
    if family == "kfac":
        every = 1 if label.endswith("inv1") else KFAC_INVERSE_EVERY
        inverse = step % every == 0
        return ("inverse" if inverse else "no_inverse"), (
            _COMMON + _KFAC + (_KFAC_INVERSE if inverse else []) + _UPDATE
        )
    if family == "ngd" or epoch == 0:
        return "inversion", _COMMON + _INVERSION + _UPDATE
    return "weighted_sum", _COMMON + _WEIGHTED_SUM + _UPDATE


def _base(workload: str, label: str, family: str, schedule: Schedule) -> dict[str, Any]:
    """The constant fields of a cell, as ``bench.cell.build.record_base`` gives them on a GPU."""
    hparams = {
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "nesterov": False,
        "schedule": "cosine",
        "warmup_fraction": 0.05,
    }
    if family in ("fngd", "ngd"):
        hparams.update(
            damping=1e-3,
            share="iteration" if "iter" in label else "sample",
            scope="layer",
            damping_mode="constant",
            normalize=False,
            gram="auto",
            steps_per_epoch=schedule.steps_per_epoch,
            skip_layers=[],
        )
    if family == "kfac":
        hparams.update(
            damping=1e-3,
            factor_decay=0.95,
            inv_update_steps=1 if label.endswith("inv1") else KFAC_INVERSE_EVERY,
        )
    return {
        "run_id": f"{workload}__{label}__s{schedule.seed}",
        "workload": workload,
        "optimizer": label,
        "family": family,
        "impl": "builtin" if family in ("fngd", "ngd", "kfac") else "torch",
        "hparams": hparams,
        "seed": schedule.seed,
        "size": "paper",
        "device": "cuda",
        "device_name": "NVIDIA H100 80GB HBM3",
        "data_source": "real",
        "batch_size": 128,
        "torch_version": "2.13.0+cu128",
        "cuda_version": "12.8",
        "git_commit": "0" * 40,
        "threads": 8,
        "attempt": 1,
        "epochs": schedule.epochs,
        "steps_per_epoch": schedule.steps_per_epoch,
        "max_steps_per_epoch": None,
        "replay_first_epoch": False,
        "preset": "paper",
        "hparams_source": "preset",
        "study": None,
        "trial": None,
    }


def _steps(
    family: str, label: str, epoch: int, schedule: Schedule, rng: random.Random, seen: set
) -> Iterator[dict[str, Any]]:
    for i in range(schedule.steps_per_epoch):
        step = epoch * schedule.steps_per_epoch + i
        mode, kinds = _step_kind(family, label, epoch, step)
        phases: dict[str, float] = {}
        count = 0
        for name, parent, entries, base in kinds:
            key = phase_key(name, parent)
            for _ in range(entries):
                phases[key] = phases.get(key, 0.0) + base * rng.lognormvariate(0.0, _SIGMA)
            count += entries
        warmup = step < 3 or mode not in seen
        seen.add(mode)
        yield {
            "kind": "step",
            "step": step,
            "epoch": epoch,
            "seconds": sum(phases.values()) * rng.uniform(1.01, 1.05),
            "warmup": warmup,
            "mode": mode,
            "phases": phases,
            "phase_count": count,
        }


def _write_cell(path: Path, workload: str, label: str, schedule: Schedule) -> tuple[int, int]:
    """One cell's records; returns (records, step-phase entries)."""
    family = resolve_label(label).family
    rng = random.Random(f"{schedule.seed}/{workload}/{label}")
    records = entries = 0
    train = 0.0
    seen: set = set()
    reached = False
    with RecordWriter(path, _base(workload, label, family, schedule)) as writer:
        writer.write({"kind": "cell", "name": "started", "value": ""}, flush=True)
        writer.write({"kind": "memory", "name": "baseline_allocated", "value": 2_100_000_000})
        for epoch in range(schedule.epochs):
            steps = list(_steps(family, label, epoch, schedule, rng, seen))
            seconds = sum(s["seconds"] for s in steps) * 1.002
            train += seconds
            loss = 4.6 * math.exp(-epoch / 30) * rng.uniform(0.98, 1.02)
            accuracy = 0.78 * (1 - math.exp(-(epoch + 1) / 25))
            writer.write_many(steps)
            out: list[dict[str, Any]] = [
                {
                    "kind": "epoch",
                    "epoch": epoch,
                    "seconds": seconds,
                    "name": "train_loss",
                    "value": loss,
                    "steps": len(steps),
                    "train_seconds": train,
                },
            ]
            out += [
                {
                    "kind": "eval",
                    "epoch": epoch,
                    "name": name,
                    "value": value,
                    "seconds": train,
                    "eval_seconds": 3.5,
                    "split": "test",
                }
                for name, value in (("eval_loss", loss * 1.1), ("accuracy", accuracy))
            ]
            if not reached and accuracy >= 0.5:
                reached = True
                out.append(
                    {
                        "kind": "target",
                        "epoch": epoch,
                        "name": "time_to_target",
                        "value": 0.5,
                        "seconds": train,
                        "metric": "accuracy",
                        "metric_value": accuracy,
                        "split": "test",
                        "eval_seconds": 3.5 * (epoch + 1),
                    }
                )
            if family == "fngd" and epoch > 0:
                out += [
                    {
                        "kind": "staleness",
                        "epoch": epoch,
                        "name": f"layer{b}",
                        "value": rng.uniform(0.9, 1.0),
                        "norm_ratio": rng.uniform(0.8, 1.2),
                        "seconds": train,
                        "probe_seconds": 0.02,
                    }
                    for b in range(BLOCKS)
                ]
            writer.write_many(out)
            writer.flush()
            records += len(steps) + len(out)
            entries += sum(1 + s["phase_count"] for s in steps)
        memory = [
            {"kind": "memory", "name": "peak_allocated", "value": 9_800_000_000},
            {"kind": "memory", "name": "optimizer_state", "value": 450_000_000},
        ]
        writer.write_many({**m, "epoch": schedule.epochs - 1} for m in memory)
        writer.write({"kind": "cell", "name": "finished", "value": ""}, flush=True)
        records += 4 + len(memory)
    return records, entries


def write_record_set(
    directory: str | Path, schedule: Schedule = FULL, *, compact: bool = True
) -> RecordSet:
    """Write ``schedule``'s cells into ``directory`` (compacted to Parquet unless not
    ``compact``: then the JSON Lines a running sweep holds)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    records = entries = 0
    for workload in schedule.workloads:
        for label in schedule.labels:
            path = directory / f"{workload}__{label}__s{schedule.seed}.jsonl"
            n, e = _write_cell(path, workload, label, schedule)
            records += n
            entries += e
            files.append(parquet.compact(path) if compact else path)
    return RecordSet(directory, files, schedule.steps, entries, records)


@dataclass
class ReportCost:
    """What ``fngd-bench report`` took, measured from outside its process."""

    seconds: float  # wall time, the interpreter's start and imports included
    cpu_seconds: float  # user + system
    peak_rss: int  # bytes: the process's peak resident set size


def measure_report(directory: str | Path, out_html: str | Path) -> ReportCost:
    """Run ``fngd-bench report directory -o out_html`` in a child process and measure it.

    A child of its own, so the peak memory is the report's alone (not the generator's or the
    test runner's). Raises ``RuntimeError`` with the child's error output if it fails."""
    code = "import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))"
    args = [sys.executable, "-c", code, "report", str(directory), "-o", str(out_html)]
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        _pid, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            err.seek(0)
            message = err.read().decode(errors="replace").strip()
            raise RuntimeError(f"fngd-bench report failed ({child.returncode}): {message}")
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return ReportCost(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * unit)
