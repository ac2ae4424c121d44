"""The machine a measurement runs on: device, threads, seeds, memory probes, identity.

Every command resolves its device, sets its CPU threads and describes the machine here, so
records, ratio files and benchmark extras name the machine the same way.
"""

from __future__ import annotations

import functools
import platform
import random
import resource
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "cpu_name",
    "cpu_threads",
    "device_name",
    "environment",
    "git_commit",
    "memory_baseline",
    "peak_rss",
    "reset_peak",
    "resolve_device",
    "seed_everything",
    "synchronize",
]


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


@contextmanager
def cpu_threads(threads: int | None, device: str | torch.device = "auto") -> Iterator[None]:
    """Run with ``threads`` intra-op threads on the CPU (None or 0: leave torch's own).

    The CPU workloads are small, and on a shared machine spinning worker threads make step
    times erratic; the commands use one thread unless told otherwise.
    """
    previous = torch.get_num_threads()
    if threads and resolve_device(device).type == "cpu":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # all devices
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so a host clock reads it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- identity ----------------------------------------------------------------------------------


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


# -- memory ------------------------------------------------------------------------------------


def reset_peak(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or the process's peak RSS on Linux."""
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


def memory_baseline(device: torch.device) -> dict[str, Any]:
    """What the process holds before training (model, data, framework): CUDA's allocated
    bytes (``baseline_allocated``) or the resident set (``baseline_rss``); the report shows
    the peak above it, which is what training itself added."""
    if device.type == "cuda":
        return {"name": "baseline_allocated", "value": torch.cuda.memory_allocated(device)}
    return {"name": "baseline_rss", "value": _status_kib("VmRSS:") * 1024 or peak_rss()}


def _status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (0 where there is none: not Linux)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (since the last reset on Linux)."""
    hwm = _status_kib("VmHWM:")
    if hwm:
        return hwm * 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)
