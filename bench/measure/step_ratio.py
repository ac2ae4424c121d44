"""Step-time ratios to SGD, measured interleaved so that machine drift cancels.

pytest-benchmark times one variant after another; on a shared machine the load can change
between them by more than the effect being measured. Here every round times one step of
each variant, in a fresh random order (seeded), on the same fixed batch; the medians over
rounds and their ratios to SGD's are written as JSON (with device, versions and settings)
and printed. The order is shuffled, not rotated: in a rotation every variant follows the
same neighbour in almost every round, and what that neighbour leaves in the caches (an
inversion's allocations, say) would bias its time.

    fngd-bench ratio --workload mlp-digits --rounds 200 --out results/ratio.json
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.host.env import cpu_threads, device_name, resolve_device
from bench.measure.step_variants import STEP_VARIANTS, prepare, step_variant

#: Every registered step variant (SGD first: the ratios' base), so a new one is timed too.
DEFAULT_VARIANTS = ("sgd", *(v for v in STEP_VARIANTS if v != "sgd"))


def measure(
    workload: str,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    *,
    device: str | torch.device = "cpu",
    size: str = "small",
    rounds: int = 200,
    warmup: int = 10,
    threads: int | None = 1,
    timer: Callable[[], float] = time.perf_counter,
    seed: int = 0,
) -> dict[str, Any]:
    """Median step seconds per variant and the ratio to ``sgd`` (first if absent).

    ``timer`` reads the clock around each step (seconds); a test can pass a fake one.
    ``seed`` seeds the per-round shuffle of the variants' order.
    """
    chosen = [step_variant(v) for v in variants]  # unknown names fail before any step
    dev = resolve_device(device)
    with cpu_threads(threads, dev):
        held = [prepare(workload, v, dev, size) for v in chosen]
        times: dict[str, list[float]] = {v: [] for v in variants}
        rng = random.Random(seed)
        order = list(held)
        for r in range(warmup + rounds):
            rng.shuffle(order)
            for h in order:
                h.before_step()
                t0 = timer()
                h.step()
                if r >= warmup:
                    times[h.variant.label].append(timer() - t0)
        for h in held:
            # a label outside the variants' table (a rival, a plugin) runs its own modes
            if h.variant.mode is not None and h.opt.mode != h.variant.mode:
                raise RuntimeError(f"{h.variant.label} ran {h.opt.mode!r}")
        threads_used = torch.get_num_threads()
    base = "sgd" if "sgd" in variants else variants[0]
    medians = {v: statistics.median(t) for v, t in times.items()}
    spread = {v: _iqr(t) for v, t in times.items()}
    w = held[0].workload
    return {
        "workload": workload,
        "size": size,
        "batch_size": w.batch_size,
        "data_source": w.data_source,
        "device": dev.type,
        "device_name": device_name(dev),
        "threads": threads_used,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "rounds": rounds,
        "method": "interleaved rounds, one step of each variant per round, in a fresh seeded "
        "random order each round",
        "baseline": base,
        "variants": {
            v: {
                "median_s": medians[v],
                "iqr_s": spread[v],
                "ratio_to_baseline": medians[v] / medians[base],
                "hparams": {
                    k: val for k, val in h.opt.hparams.items() if not isinstance(val, tuple)
                },
            }
            for v, h in zip(variants, held, strict=True)
        },
        "time": time.time(),
    }


def _iqr(times: list[float]) -> float:
    """The interquartile range (0 for a single round: nothing spreads)."""
    if len(times) < 2:
        return 0.0
    low, _, high = statistics.quantiles(times, n=4)
    return high - low


def format_result(result: dict[str, Any]) -> str:
    width = max(20, *(len(v) for v in result["variants"]))  # a reference is a long name
    lines = [
        f"{result['workload']} ({result['size']}, batch {result['batch_size']}, "
        f"{result['data_source']} data) on {result['device_name']}, "
        f"{result['threads']} thread(s), torch {result['torch_version']}, "
        f"{result['rounds']} interleaved rounds",
        f"{'variant':<{width}} {'median ms':>10} {'IQR ms':>8} {'/ ' + result['baseline']:>8}",
    ]
    for v, r in result["variants"].items():
        lines.append(
            f"{v:<{width}} {r['median_s'] * 1e3:>10.3f} {r['iqr_s'] * 1e3:>8.3f} "
            f"{r['ratio_to_baseline']:>8.3f}"
        )
    return "\n".join(lines)


def main(
    *,
    workloads: Sequence[str] = ("mlp-digits",),
    variants: Sequence[str] = DEFAULT_VARIANTS,
    device: str = "auto",
    size: str = "small",
    rounds: int = 200,
    threads: int | None = 1,
    out: str | os.PathLike[str] | None = None,
) -> int:
    """``fngd-bench ratio``: measure each workload, print the table, write JSON to ``out``."""
    dev = resolve_device(device)
    results = []
    for workload in workloads:
        result = measure(
            workload, tuple(variants), device=dev, size=size, rounds=rounds, threads=threads
        )
        print(format_result(result))
        results.append(result)
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"written: {path}")
    return 0
