"""``fngd-bench run``: a sweep of cells with phase timers, then the HTML report."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.campaign.presets import PRESETS
from bench.cli.arguments import (
    add_device,
    add_threads,
    add_warm_start,
    non_negative_int,
    positive_int,
)
from bench.cli.checks import (
    check_cells,
    check_device,
    check_optimizers,
    check_out_dir,
    check_workloads,
    say,
)
from bench.cli.command import Subcommand, UsageError, library_function, options_for
from bench.host import distributed
from bench.host.progress import Progress, as_progress
from bench.labels import VARIANTS

EXIT_INTERRUPTED = 130

DESCRIPTION = """\
Train every cell of a preset (workloads x optimizers x seeds), one after another.

Each cell writes OUT/<workload>__<optimizer>__s<seed>.jsonl while it runs (JSON Lines,
flushed per epoch) and .parquet once it is closed: per-step times with their phases
(data, forward, backward, the optimizer's own phases, update), per-epoch train loss and
evaluation, time to target, peak memory and optimizer-state memory, and a cell status
(finished / diverged / oom / error). A failing cell is recorded and the sweep goes on.
The runner's own timing overhead is measured and written as OUT/overhead__*.jsonl.

--resume skips cells that are already complete (finished, diverged or oom) in OUT and
reruns the others from the start; an interrupted attempt is renamed to *.partial so that
the report counts each cell once.

--nproc K (or `torchrun --nproc-per-node K -m bench.cli run ...`) trains every cell on K
processes in DistributedDataParallel (gloo on the CPU, one GPU per process with CUDA), each
global batch split across them: cells are OUT/<workload>__<optimizer>__s<seed>__wK.jsonl,
written by rank 0, a step's time the slowest rank's (bench/host/distributed.py).

Optimizer labels: {labels}
Presets:
{presets}
"""

CELLS = "bench.campaign.presets:Preset.cells"
SWEEP = "bench.campaign.launch:run_cells"


def presets_help() -> str:
    return "\n".join(
        textwrap.fill(
            f"{p.name}: {p.description}", width=92, initial_indent="  ", subsequent_indent="    "
        )
        for p in PRESETS.values()
    )


def add_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--preset", choices=list(PRESETS), default="quick", help="what to run (default: quick)"
    )
    run.add_argument(
        "--out", type=Path, default=None, help="results directory (default: results/PRESET)"
    )
    run.add_argument(
        "--workload",
        "--workloads",
        dest="workloads",
        nargs="+",
        action="extend",
        metavar="W",
        help="only these workloads (default: the preset's): names of `fngd-bench list`, or "
        "references, module:build or path/to/file.py:build",
    )
    run.add_argument(
        "--optimizer",
        "--optimizers",
        dest="optimizers",
        nargs="+",
        action="extend",
        metavar="O",
        help="only these optimizer labels (default: the preset's): labels of `fngd-bench "
        "list`, or references, module:factory or path/to/file.py:factory",
    )
    run.add_argument("--epochs", type=positive_int, help="epochs per cell (default: the preset's)")
    run.add_argument(
        "--seeds",
        type=non_negative_int,
        nargs="+",
        metavar="S",
        help="seeds (default: the preset's)",
    )
    run.add_argument(
        "--max-steps-per-epoch",
        type=positive_int,
        metavar="N",
        help="cut every epoch after N steps (recorded in max_steps_per_epoch)",
    )
    run.add_argument(
        "--size", choices=("small", "paper"), help="workload size (default: the preset's)"
    )
    run.add_argument(
        "--warmup-steps",
        type=non_negative_int,
        metavar="N",
        help="first N steps of a cell are marked warmup (default: 3)",
    )
    add_device(run)
    run.add_argument("--data-root", type=Path, help="where datasets are read from or downloaded to")
    run.add_argument("--resume", action="store_true", help="skip cells already complete in --out")
    run.add_argument(
        "--no-report", action="store_true", help="do not build the HTML report at the end"
    )
    run.add_argument(
        "--no-overhead", action="store_true", help="skip the timer-overhead measurement"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_threads(run)
    run.add_argument(
        "--hparams-from",
        metavar="SOURCE",
        help="each optimizer's hyperparameters from the best trial of its study "
        "(<workload>__<label>): a storage URL (sqlite:///OUT/studies.db) or the JSON file "
        "`tune` writes (OUT/best_hparams.json); epochs default to the study's. Recorded in "
        "`hparams_source`",
    )
    add_warm_start(run)
    run.add_argument(
        "--nproc",
        type=positive_int,
        default=1,
        metavar="K",
        help="train every cell on K local processes at once: starts `torchrun "
        "--nproc-per-node K -m bench.cli run ...` with the other options (default: 1)",
    )


def without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without its ``--nproc K`` (or ``--nproc=K``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _launch(args: argparse.Namespace) -> int:
    """``fngd-bench run --nproc K``: the same run under torchrun, on K processes."""
    command = distributed.torchrun_command(args.nproc, without_nproc(args.argv))
    print("starting: " + " ".join(command[1:]), flush=True)
    return subprocess.run(command, check=False).returncode


def handle(args: argparse.Namespace) -> int:
    launched = distributed.from_env()
    if args.nproc > 1 and not launched.distributed:
        return _launch(args)
    if launched.distributed and args.nproc not in (1, launched.size):
        raise UsageError(f"--nproc {args.nproc}, but torchrun started {launched.size} processes")
    world = distributed.start(args.device)
    try:
        return _run(args, world)
    finally:
        distributed.finish()


def _run(args: argparse.Namespace, world: distributed.World) -> int:
    from bench.campaign.launch import report_path, write_report
    from bench.campaign.sweep import resume_conflicts

    preset = PRESETS[args.preset]
    check_optimizers(preset.optimizers_for(args.optimizers))
    check_workloads(preset.workloads_for(args.workloads))
    check_device(args.device)
    out = args.out or Path("results") / preset.name
    check_out_dir(out)
    cells = preset.cells(**options_for(library_function(CELLS), args))
    if args.hparams_from:
        _apply_hparams_from(args.hparams_from, cells, study_epochs=args.epochs is None)
    check_cells(cells, data_root=args.data_root)
    if world.distributed:
        cells = [dataclasses.replace(c, world_size=world.size) for c in cells]
    if args.resume:
        # rank 0 reads the directory before any rank writes to it
        conflicts = distributed.broadcast(resume_conflicts(cells, out) if world.main else None)
        if conflicts:
            more = f" and {len(conflicts) - 1} more" if len(conflicts) > 1 else ""
            raise UsageError(
                f"--resume: {out} holds cells run with other settings ({conflicts[0]}{more}); "
                "resume with the same options, or use another --out"
            )
    overhead = [] if args.no_overhead else preset.overhead_for(args.workloads, args.optimizers)

    progress = Progress.auto(not args.no_progress) if world.main else as_progress(False)
    sweep = library_function(SWEEP)
    start = time.perf_counter()
    try:
        result = sweep(
            cells, **options_for(sweep, args, out=out, progress=progress, overhead=overhead)
        )
    except KeyboardInterrupt:
        say(f"interrupted; records so far are in {out}. Rerun with --resume to continue.")
        return EXIT_INTERRUPTED
    minutes = (time.perf_counter() - start) / 60
    code = 0 if all(s != "error" for s in result.statuses.values()) else 1
    if not world.main:  # rank 0 prints and writes the report
        return code

    counts = Counter(result.statuses.values())
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing run"
    if result.skipped:
        summary += f", {len(result.skipped)} skipped (complete)"
    print(f"{len(cells)} cells in {minutes:.1f} min: {summary}; records in {out}")
    for key, value in result.overhead.items():
        if value is not None:
            print(f"runner overhead on {key}: {100 * value:.2f} % of a step")
    for run_id, status in result.statuses.items():
        if status != "finished":
            print(f"  {run_id}: {status}")
    if not args.no_report:
        progress.stage(f"writing the report from {out}")
        try:
            html = write_report([out], report_path(out))
        except Exception as exc:  # noqa: BLE001 - the records are safe; say what failed
            say(f"report failed: {type(exc).__name__}: {exc}")
            return 1
        print(f"report: {html}")
    return code


def _apply_hparams_from(source: str, cells: Sequence[Any], *, study_epochs: bool) -> None:
    from bench.campaign.tune import apply_best, load_best
    from fngd import hparams

    if "://" not in source and not Path(source).is_file():
        raise UsageError(f"--hparams-from {source}: neither a storage URL nor a file")
    try:
        best = load_best(source)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--hparams-from {source}: cannot read studies ({exc})") from None
    missing = apply_best(cells, best, study_epochs=study_epochs)
    if missing:
        names = ", ".join(dict.fromkeys(missing))
        raise UsageError(
            f"--hparams-from {source}: no complete trial for {names} "
            f"(studies there: {', '.join(best) or 'none'})"
        )
    for found in best.values():  # checked here, before any cell runs (``fngd.hparams``)
        family = VARIANTS[found.optimizer].family if found.optimizer in VARIANTS else None
        # a plugin's hyperparameters are checked by its own spec when its cell is built
        for name, value in found.params.items():
            if family is None or name not in hparams.RULES:
                continue
            try:
                hparams.check(name, value, owner=family, positive_damping=family == "kfac")
            except (TypeError, ValueError) as exc:
                raise UsageError(f"--hparams-from {source}: {found.study}: {exc}") from None


COMMAND = Subcommand(
    name="run",
    help="run a benchmark sweep and build the report",
    description=DESCRIPTION.format(labels=", ".join(VARIANTS), presets=presets_help()),
    add_arguments=add_arguments,
    handle=handle,
    library=(CELLS, SWEEP),
    own=frozenset(
        {"preset", "out", "hparams_from", "no_report", "no_overhead", "no_progress", "nproc"}
    ),
)
