"""Compiled against eager step times: SGD and FNGD's weighted sum under ``torch.compile``.

Each variant is a held step (``bench.measure.step_variants``) whose forward runs through
``torch.compile(model, backend=...)`` or the eager model; ``fngd-weighted-sum/eager-op`` is
the eager step with the blocks' ``torch.library`` custom ops in place of the pybind blocks
(what eager would cost if it used them). Rounds are interleaved in a fresh seeded order, as
in ``fngd-bench ratio``; medians are printed as JSON.

    python -m bench.measure.compile_steps --workload mlp-digits --rounds 200
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

import torch

from bench.cell.step import train_step
from bench.host.env import cpu_threads, device_name, synchronize
from bench.measure.step_variants import STEP_VARIANTS, HeldStep, prepare

#: ``(label, step variant, compile backend or None, eager custom ops)``.
VARIANTS = (
    ("sgd/eager", "sgd", None, False),
    ("sgd/aot_eager", "sgd", "aot_eager", False),
    ("fngd-weighted-sum/eager", "fngd-weighted-sum", None, False),
    ("fngd-weighted-sum/eager-op", "fngd-weighted-sum", None, True),
    ("fngd-weighted-sum/aot_eager", "fngd-weighted-sum", "aot_eager", False),
)
INDUCTOR = (
    ("sgd/inductor", "sgd", "inductor", False),
    ("fngd-weighted-sum/inductor", "fngd-weighted-sum", "inductor", False),
)


def _held(workload: str, variant: str, backend: str | None, custom_ops: bool) -> tuple:
    held = prepare(workload, STEP_VARIANTS[variant], "cpu", "small")
    if custom_ops:
        for block in held.opt.preconditioner.blocks:
            block.native_op = block.traced_op  # the instance's: eager through the custom op
    model = held.workload.model
    forward = model if backend is None else torch.compile(model, backend=backend)
    return held, forward


def _step(held: HeldStep, forward: torch.nn.Module) -> None:
    train_step(held.workload, held.opt, *held.batch, model=forward)
    synchronize(held.cell.device)


def measure(workload: str, rounds: int, warmup: int, inductor: bool, seed: int = 0) -> dict:
    variants = VARIANTS + (INDUCTOR if inductor else ())
    with cpu_threads(1, "cpu"):
        held = {label: _held(workload, v, b, c) for label, v, b, c in variants}
        for h, forward in held.values():  # compile (and recompile) before any timing
            for _ in range(3):
                _step(h, forward)
        times: dict[str, list[float]] = {label: [] for label in held}
        rng = random.Random(seed)
        order = list(held)
        for r in range(warmup + rounds):
            rng.shuffle(order)
            for label in order:
                h, forward = held[label]
                t0 = time.perf_counter()
                _step(h, forward)
                if r >= warmup:
                    times[label].append(time.perf_counter() - t0)
        for label, (h, _) in held.items():
            if h.opt.mode != h.variant.mode:
                raise RuntimeError(f"{label} ran {h.opt.mode!r}")
    base = statistics.median(times["sgd/eager"])
    result: dict[str, Any] = {
        "workload": workload,
        "device_name": device_name(torch.device("cpu")),
        "threads": 1,
        "torch_version": torch.__version__,
        "rounds": rounds,
        "method": "interleaved rounds, one step of each variant per round, seeded random order",
        "variants": {
            label: {
                "median_ms": statistics.median(t) * 1e3,
                "ratio_to_sgd_eager": statistics.median(t) / base,
            }
            for label, t in times.items()
        },
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="mlp-digits")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--inductor", action="store_true", help="also time inductor")
    args = parser.parse_args()
    result = measure(args.workload, args.rounds, args.warmup, args.inductor)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
