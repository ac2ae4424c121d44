"""``fngd-bench``: run benchmark sweeps, profile one configuration, build the HTML report."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from bench import distributed
from bench.env import cpu_threads
from bench.presets import PRESETS, VARIANTS
from bench.progress import Progress, as_progress
from bench.records import RECORD_SUFFIXES, record_files
from bench.step_ratio import DEFAULT_VARIANTS as DEFAULT_RATIO_VARIANTS
from bench.step_variants import STEP_VARIANTS

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

MAIN_HELP = """\
Benchmark and profile FNGD (Fast Natural Gradient Descent) against KFAC, SGD and AdamW.

subcommands:
  run      train a sweep of cells (workload x optimizer x seed) with phase timers and write
           JSON Lines records to --out, then build the HTML report
  report   build the HTML report from one or more results directories
  tune     equal-budget hyperparameter studies (Optuna) on each workload's validation split
  profile  capture a torch.profiler trace of a few steps of one workload and optimizer
  list     show the workloads, optimizer labels and presets

`fngd-bench SUBCOMMAND --help` explains each one.
"""

RUN_HELP = """\
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
written by rank 0, a step's time the slowest rank's (bench/distributed.py).

Optimizer labels: {labels}
Presets:
{presets}
"""

TUNE_HELP = """\
Tune every optimizer with the same budget: one Optuna study per workload x optimizer label,
named <workload>__<label>, each run until it holds --trials COMPLETE trials.

A trial trains one cell for --epochs epochs (seed --seed) with hyperparameters drawn from a
seeded scrambled Sobol sequence over its family's search space (bench/search_spaces.py: lr,
weight decay, damping for kfac/ngd/fngd, the schedule's warm-up fraction). Its score is the
training time (evaluation excluded) until the workload's metric on the VALIDATION split
reaches the target; a trial that does not reach it (or diverges, or runs out of memory)
scores +inf and keeps its best validation metric. Every trial writes ordinary records to
OUT/trials/<study>/; the best trial of each study is written to OUT/best_hparams.json, for
`fngd-bench run --hparams-from OUT/best_hparams.json` (final runs on the test split).

Resumable: Ctrl-C keeps every finished trial, and the same command runs only what is
missing. Parallel: --workers K processes, or several commands on one --storage.
"""

REPORT_HELP = """\
Build one HTML report (tables and figures) from the records (*.parquet, *.jsonl) of
RESULTS_DIR(s).
"""

PROFILE_HELP = """\
Profile a window of training steps of one workload and optimizer with torch.profiler (for
FNGD: the end of the inversion epoch and the start of the weighted-sum epoch; for KFAC:
steps with and without an inverse update). Writes a TensorBoard trace and per-phase
`profile` records to OUT/<workload>/<optimizer>/ (view: tensorboard --logdir OUT).
"""

RATIO_HELP = """\
Time single training steps of several step variants on one fixed batch, interleaved (every
round runs one step of each, in a fresh random order) so that a shared machine's drift cancels;
print the medians and their ratios to SGD, and write them as JSON with --out. Variants hold
an optimizer in one phase: fngd-weighted-sum, fngd-inversion, kfac-inverse, kfac-no-inverse.
"""


def _presets_help() -> str:
    return "\n".join(
        textwrap.fill(
            f"{p.name}: {p.description}", width=92, initial_indent="  ", subsequent_indent="    "
        )
        for p in PRESETS.values()
    )


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


class UsageError(Exception):
    """A mistake on the command line: one line on stderr, no traceback, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse's errors as :class:`UsageError`, so that they read like every other."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("fngd-bench").strip()
        hint = f"fngd-bench {command} --help".replace("  ", " ")
        raise UsageError(f"{command + ': ' if command else ''}{message} (see {hint})")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def _debug_arg(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the traceback of any error (for bug reports)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fngd-bench", description=MAIN_HELP, formatter_class=_Formatter)
    _debug_arg(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="{run,tune,report,profile,ratio,list}")

    run = sub.add_parser(
        "run",
        help="run a benchmark sweep and build the report",
        description=RUN_HELP.format(labels=", ".join(VARIANTS), presets=_presets_help()),
        formatter_class=_Formatter,
    )
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
        help="only these workloads (default: the preset's)",
    )
    run.add_argument(
        "--optimizer",
        "--optimizers",
        dest="optimizers",
        nargs="+",
        action="extend",
        metavar="O",
        help="only these optimizer labels (default: the preset's)",
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
    _device_arg(run)
    run.add_argument("--data-root", type=Path, help="where datasets are read from or downloaded to")
    run.add_argument("--resume", action="store_true", help="skip cells already complete in --out")
    run.add_argument(
        "--no-report", action="store_true", help="do not build the HTML report at the end"
    )
    run.add_argument(
        "--no-overhead", action="store_true", help="skip the timer-overhead measurement"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    _threads_arg(run)
    run.add_argument(
        "--hparams-from",
        metavar="SOURCE",
        help="each optimizer's hyperparameters from the best trial of its study "
        "(<workload>__<label>): a storage URL (sqlite:///OUT/studies.db) or the JSON file "
        "`tune` writes (OUT/best_hparams.json); epochs default to the study's. Recorded in "
        "`hparams_source`",
    )
    _warm_start_arg(run)
    run.add_argument(
        "--nproc",
        type=positive_int,
        default=1,
        metavar="K",
        help="train every cell on K local processes at once: starts `torchrun "
        "--nproc-per-node K -m bench.cli run ...` with the other options (default: 1)",
    )

    tune = sub.add_parser(
        "tune",
        help="equal-budget hyperparameter studies on the validation split",
        description=TUNE_HELP,
        formatter_class=_Formatter,
    )
    tune.add_argument(
        "--workload",
        "--workloads",
        dest="workloads",
        nargs="+",
        action="extend",
        required=True,
        metavar="W",
        help="workloads (with a validation split)",
    )
    tune.add_argument(
        "--optimizer",
        "--optimizers",
        dest="optimizers",
        nargs="+",
        action="extend",
        required=True,
        metavar="O",
        help=f"optimizer labels: {', '.join(VARIANTS)}",
    )
    tune.add_argument(
        "--trials", type=positive_int, required=True, metavar="N", help="complete trials per study"
    )
    tune.add_argument(
        "--epochs", type=positive_int, required=True, metavar="E", help="epoch budget per trial"
    )
    tune.add_argument(
        "--out", type=Path, default=Path("results/tune"), help="results (default: results/tune)"
    )
    tune.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL (default: sqlite:///OUT/studies.db)",
    )
    tune.add_argument(
        "--workers", type=positive_int, default=1, metavar="K", help="processes (default: 1)"
    )
    tune.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        metavar="S",
        help="the sampler's seed and every trial's training seed (default: 0)",
    )
    tune.add_argument("--size", choices=("small", "paper"), default="small", help="workload size")
    _device_arg(tune)
    tune.add_argument("--data-root", type=Path, help="where datasets are read from")
    tune.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    _threads_arg(tune)
    _warm_start_arg(tune)

    report = sub.add_parser(
        "report",
        help="build the HTML report from results directories",
        description=REPORT_HELP,
        formatter_class=_Formatter,
    )
    report.add_argument("results", nargs="+", type=Path, metavar="RESULTS_DIR")
    report.add_argument(
        "-o",
        "--out",
        type=Path,
        default=None,
        help="output HTML file (default: RESULTS_DIR/report/index.html of the first one with "
        "records)",
    )

    profile = sub.add_parser(
        "profile",
        help="profile a few steps of one workload and optimizer",
        description=PROFILE_HELP,
        formatter_class=_Formatter,
    )
    profile.add_argument("--workload", required=True, metavar="W", help="workload name")
    profile.add_argument(
        "--optimizer", required=True, metavar="O", help=f"one of: {', '.join(VARIANTS)}"
    )
    profile.add_argument(
        "--out", type=Path, default=Path("runs"), help="trace directory (default: runs/)"
    )
    _device_arg(profile)
    # Options left unset are absent from the namespace: bench.profile applies its defaults.
    profile.add_argument(
        "--steps",
        type=positive_int,
        default=argparse.SUPPRESS,
        help="profiled steps (a window that holds every mode of the optimizer; default: 10)",
    )
    profile.add_argument("--seed", type=non_negative_int, default=0, help="seed (default: 0)")
    profile.add_argument(
        "--size", choices=("small", "paper"), default="small", help="workload size"
    )
    profile.add_argument(
        "--batch-size",
        type=positive_int,
        default=argparse.SUPPRESS,
        metavar="B",
        help="batch size (default: the workload's)",
    )
    profile.add_argument(
        "--max-steps-per-epoch",
        type=positive_int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="cut epochs to N steps before the window (default: the profiler's, 50)",
    )
    profile.add_argument("--data-root", type=Path, help="datasets directory")

    ratio = sub.add_parser(
        "ratio",
        help="step-time ratios to SGD, variants interleaved so machine drift cancels",
        description=RATIO_HELP,
        formatter_class=_Formatter,
    )
    ratio.add_argument(
        "--workload",
        nargs="+",
        default=["mlp-digits"],
        metavar="W",
        help="workload name(s), or mlp-random-<width>: MLP 784-W-W-10 on random tensors "
        "(batch 128), for the per-layer cost alone",
    )
    ratio.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_RATIO_VARIANTS),
        metavar="V",
        help=f"step variants (default: all): {', '.join(STEP_VARIANTS)}",
    )
    ratio.add_argument(
        "--rounds", type=positive_int, default=200, help="timed rounds (default: 200)"
    )
    ratio.add_argument(
        "--threads", type=non_negative_int, default=1, help="CPU intra-op threads (default: 1)"
    )
    ratio.add_argument("--size", choices=("small", "paper"), default="small", help="workload size")
    ratio.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    _device_arg(ratio)

    sub.add_parser("list", help="list workloads, optimizer labels and presets")
    for command in sub.choices.values():  # also after the subcommand, where people put it
        _debug_arg(command, argparse.SUPPRESS)
    return parser


def _threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=non_negative_int,
        default=1,
        metavar="N",
        help="CPU intra-op threads on the CPU device (default: 1; 0: torch's default). The "
        "CPU workloads are small, and on a shared machine spinning worker threads make step "
        "times erratic; recorded as `threads`",
    )


def _warm_start_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-warm-start",
        dest="warm_start",
        action="store_false",
        help="skip the discarded warm-up run before the first timed cell (it keeps the "
        "process's cold start off whichever optimizer runs first)",
    )


def _device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CUDA when available, else CPU (default: auto)",
    )


# -- helpers -----------------------------------------------------------------------------------


def _workload_names() -> list[str]:
    try:
        from bench import workloads
    except ImportError as exc:
        raise UsageError(
            f"the workload registry (bench.workloads) is not available: {exc}"
        ) from None
    return list(workloads.names())


def _check(kind: str, given: Sequence[str], valid: Sequence[str]) -> None:
    unknown = [name for name in given if name not in valid]
    if unknown:
        raise UsageError(
            f"unknown {kind}{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}; "
            f"valid {kind}s: {', '.join(valid)}"
        )


def _check_device(device: str) -> None:
    """``--device cuda`` on a machine without CUDA is a usage mistake, not a crash."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no usable GPU"
            raise UsageError(
                f"--device cuda: CUDA is not available here (torch {torch.__version__}, "
                f"{build}); use --device cpu or auto"
            )


def _check_out_dir(out: Path, flag: str = "--out") -> None:
    """``out`` is, or can become, a directory this process can write in."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {out}: exists and is a file, not a directory")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"{flag} {out}: {existing} is a file, not a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out}: {existing} is not writable")


def _check_out_file(out: Path, flag: str = "--out") -> None:
    """``out`` is, or can become, a file this process can write."""
    if out.is_dir():
        raise UsageError(f"{flag} {out}: is a directory; name a file")
    _check_out_dir(out.parent, flag=f"{flag} {out}: folder")
    if out.exists() and not os.access(out, os.W_OK):
        raise UsageError(f"{flag} {out}: is not writable")


def _has_records(path: Path) -> bool:
    if path.is_file():
        return path.suffix in RECORD_SUFFIXES
    return bool(record_files(path, recursive=True))


def _err(message: str) -> None:
    print(f"fngd-bench: {message}", file=sys.stderr)


def _build_report(results: Sequence[Path], out: Path) -> Path | None:
    try:
        from reports import build_report
    except ImportError:
        _err("report skipped: reports.build_report is not available")
        return None
    return Path(build_report([Path(r) for r in results], out))


# -- subcommands -------------------------------------------------------------------------------


def _without_nproc(argv: Sequence[str]) -> list[str]:
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
    import subprocess

    argv = _without_nproc(args.argv)
    command = distributed.torchrun_command(args.nproc, argv)
    print("starting: " + " ".join(command[1:]), flush=True)
    return subprocess.run(command, check=False).returncode


def cmd_run(args: argparse.Namespace) -> int:
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
    from bench.sweep import resume_conflicts, run_sweep

    preset = PRESETS[args.preset]
    _check("optimizer", preset.optimizers_for(args.optimizers), list(VARIANTS))
    _check("workload", preset.workloads_for(args.workloads), _workload_names())
    _check_device(args.device)
    out = args.out or Path("results") / preset.name
    _check_out_dir(out)
    cells = preset.cells(
        args.workloads,
        args.optimizers,
        seeds=args.seeds,
        epochs=args.epochs,
        max_steps_per_epoch=args.max_steps_per_epoch,
        size=args.size,
        warmup_steps=args.warmup_steps,
    )
    if args.hparams_from:
        _apply_hparams_from(args.hparams_from, cells, study_epochs=args.epochs is None)
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
    start = time.perf_counter()
    try:
        with cpu_threads(args.threads, args.device):
            result = run_sweep(
                cells,
                out,
                device=args.device,
                data_root=args.data_root,
                resume=args.resume,
                progress=progress,
                overhead=overhead,
                warm_start=args.warm_start,
            )
    except KeyboardInterrupt:
        _err(f"interrupted; records so far are in {out}. Rerun with --resume to continue.")
        return EXIT_INTERRUPTED
    minutes = (time.perf_counter() - start) / 60
    if not world.main:  # rank 0 prints and writes the report
        return 0 if all(s != "error" for s in result.statuses.values()) else 1

    counts = Counter(result.statuses.values())
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing run"
    if result.skipped:
        summary += f", {len(result.skipped)} skipped (complete)"
    print(f"{len(cells)} cells in {minutes:.1f} min: {summary}; records in {out}")
    for key, value in result.overhead.items():
        if value is not None:
            print(f"runner overhead on {key}: {100 * value:.2f} % of a step")
    for run_id, status in result.statuses.items():
        if status not in ("finished",):
            print(f"  {run_id}: {status}")
    code = 0 if all(s != "error" for s in result.statuses.values()) else 1
    if not args.no_report:
        progress.stage(f"writing the report from {out}")
        try:
            html = _build_report([out], out / "report" / "index.html")
        except Exception as exc:  # noqa: BLE001 - the records are safe; say what failed
            _err(f"report failed: {type(exc).__name__}: {exc}")
            return 1
        if html is not None:
            print(f"report: {html}")
    return code


def _apply_hparams_from(source: str, cells: Sequence[Any], *, study_epochs: bool) -> None:
    from bench.tune import apply_best, load_best

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


def cmd_tune(args: argparse.Namespace) -> int:
    from bench.tune import TuneConfig, print_best, tune

    _check("optimizer", args.optimizers, list(VARIANTS))
    _check("workload", args.workloads, _workload_names())
    _check_device(args.device)
    _check_out_dir(args.out)
    if args.storage is not None and "://" not in args.storage:
        raise UsageError(f"--storage {args.storage}: not a URL (e.g. sqlite:///studies.db)")
    config = TuneConfig(
        workloads=args.workloads,
        optimizers=args.optimizers,
        trials=args.trials,
        epochs=args.epochs,
        out=args.out,
        storage=args.storage,
        seed=args.seed,
        workers=args.workers,
        size=args.size,
        device=args.device,
        data_root=str(args.data_root) if args.data_root else None,
        threads=args.threads,
        warm_start=args.warm_start,
    )
    progress = Progress.auto(not args.no_progress and args.workers == 1)
    try:
        best = tune(config, progress=progress)
    except KeyboardInterrupt:
        _err(
            f"interrupted; finished trials are kept in {config.storage_url}. "
            "Run the same command again to continue."
        )
        return EXIT_INTERRUPTED
    except ValueError as exc:  # a study run with other settings, a workload without val
        raise UsageError(str(exc)) from None
    print_best(best)
    print(f"best hyperparameters: {args.out / 'best_hparams.json'} (storage {config.storage_url})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.results if not p.is_dir()]
    if missing:
        raise UsageError(f"not a directory: {', '.join(missing)}")
    empty = [str(p) for p in args.results if not _has_records(p)]
    if len(empty) == len(args.results):
        raise UsageError(
            f"no records (*.parquet, *.jsonl) in {', '.join(empty)}; no report written "
            "(fngd-bench run --out DIR writes them)"
        )
    if empty:
        _err(f"no records (*.parquet, *.jsonl) in {', '.join(empty)}; reporting the others")
    first = next(p for p in args.results if str(p) not in empty)
    out = args.out or first / "report" / "index.html"
    _check_out_file(out, "-o/--out")
    html = _build_report(args.results, out)
    if html is None:
        return 1
    print(f"report: {html}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    _check("optimizer", [args.optimizer], list(VARIANTS))
    _check("workload", [args.workload], _workload_names())
    _check_device(args.device)
    _check_out_dir(args.out)
    try:
        from bench import profile
    except ImportError as exc:
        _err(f"profiling is not available (bench.profile): {exc}")
        return 1
    options = {k: v for k, v in vars(args).items() if k not in ("command", "debug")}
    result = profile.main(**options)
    return int(result) if isinstance(result, int) else 0


def cmd_ratio(args: argparse.Namespace) -> int:
    from bench.workloads.registry import family

    _check("workload", [w for w in args.workload if family(w) is None], _workload_names())
    _check("variant", args.variants, list(STEP_VARIANTS))
    _check_device(args.device)
    if args.out is not None:
        _check_out_file(args.out)
    from bench import step_ratio

    return step_ratio.main(
        workloads=args.workload,
        variants=args.variants,
        device=args.device,
        size=args.size,
        rounds=args.rounds,
        threads=args.threads,
        out=args.out,
    )


def cmd_list(args: argparse.Namespace) -> int:
    try:
        names = _workload_names()
    except UsageError as exc:
        names = [f"({exc})"]
    print("workloads:  " + ", ".join(names))
    print("optimizers:")
    for v in VARIANTS.values():
        print(f"  {v.label:<10} {v.note}")
    print("presets:")
    print(_presets_help())
    return 0


COMMANDS: dict[str, Any] = {
    "run": cmd_run,
    "tune": cmd_tune,
    "report": cmd_report,
    "profile": cmd_profile,
    "ratio": cmd_ratio,
    "list": cmd_list,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Mistakes on the command line print one line and return 2; any
    other error prints one line and returns 1, or is raised again under ``--debug``."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        if args.debug:
            raise
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.debug:
            raise
        _err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug or a broken setup: one line unless --debug
        if args.debug:
            raise
        _err(f"{type(exc).__name__}: {exc} (run again with --debug for the traceback)")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
