"""``fngd-bench``: run benchmark sweeps, profile one configuration, build the HTML report."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.env import cpu_threads
from bench.presets import PRESETS, VARIANTS
from bench.step_ratio import DEFAULT_VARIANTS as DEFAULT_RATIO_VARIANTS
from bench.step_variants import STEP_VARIANTS

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

MAIN_HELP = """\
Benchmark and profile FNGD (Fast Natural Gradient Descent) against KFAC, SGD and AdamW.

subcommands:
  run      train a sweep of cells (workload x optimizer x seed) with phase timers and write
           JSON Lines records to --out, then build the HTML report
  report   build the HTML report from one or more results directories
  profile  capture a torch.profiler trace of a few steps of one workload and optimizer
  list     show the workloads, optimizer labels and presets

`fngd-bench SUBCOMMAND --help` explains each one.
"""

RUN_HELP = """\
Train every cell of a preset (workloads x optimizers x seeds), one after another.

Each cell writes OUT/<workload>__<optimizer>__s<seed>.jsonl: per-step and per-phase times
(data, forward, backward, the optimizer's own phases, update), per-epoch train loss and
evaluation, time to target, peak memory and optimizer-state memory, and a cell status
(finished / diverged / oom / error). A failing cell is recorded and the sweep goes on.
The runner's own timing overhead is measured and written as OUT/overhead__*.jsonl.

--resume skips cells that are already complete (finished, diverged or oom) in OUT and
reruns the others from the start; an interrupted attempt is renamed to *.partial so that
the report counts each cell once.

Optimizer labels: {labels}
Presets:
{presets}
"""

REPORT_HELP = """\
Build one HTML report (tables and figures) from the *.jsonl records of RESULTS_DIR(s).
"""

PROFILE_HELP = """\
Profile a window of training steps of one workload and optimizer with torch.profiler (for
FNGD: the end of the inversion epoch and the start of the weighted-sum epoch; for KFAC:
steps with and without an inverse update). Writes a TensorBoard trace and per-phase
`profile` records to OUT/<workload>/<optimizer>/ (view: tensorboard --logdir OUT).
"""

RATIO_HELP = """\
Time single training steps of several step variants on one fixed batch, interleaved (every
round runs one step of each, in a rotating order) so that a shared machine's drift cancels;
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fngd-bench", description=MAIN_HELP, formatter_class=_Formatter
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,report,profile,ratio,list}")

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
    run.add_argument("--epochs", type=int, help="epochs per cell (default: the preset's)")
    run.add_argument(
        "--seeds", type=int, nargs="+", metavar="S", help="seeds (default: the preset's)"
    )
    run.add_argument(
        "--max-steps-per-epoch",
        type=int,
        metavar="N",
        help="cut every epoch after N steps (recorded in max_steps_per_epoch)",
    )
    run.add_argument(
        "--size", choices=("small", "paper"), help="workload size (default: the preset's)"
    )
    run.add_argument(
        "--warmup-steps",
        type=int,
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
    run.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="CPU intra-op threads on the CPU device (default: 1; 0: torch's default). The "
        "CPU workloads are small, and on a shared machine spinning worker threads make step "
        "times erratic; recorded as `threads`",
    )

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
        help="output HTML file (default: RESULTS_DIR/report/index.html of the first one)",
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
        type=int,
        default=argparse.SUPPRESS,
        help="profiled steps (a window that holds every mode of the optimizer; default: 10)",
    )
    profile.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    profile.add_argument(
        "--size", choices=("small", "paper"), default="small", help="workload size"
    )
    profile.add_argument(
        "--batch-size",
        type=int,
        default=argparse.SUPPRESS,
        metavar="B",
        help="batch size (default: the workload's)",
    )
    profile.add_argument(
        "--max-steps-per-epoch",
        type=int,
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
    ratio.add_argument("--rounds", type=int, default=200, help="timed rounds (default: 200)")
    ratio.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (default: 1)")
    ratio.add_argument("--size", choices=("small", "paper"), default="small", help="workload size")
    ratio.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    _device_arg(ratio)

    sub.add_parser("list", help="list workloads, optimizer labels and presets")
    return parser


def _device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CUDA when available, else CPU (default: auto)",
    )


# -- helpers -----------------------------------------------------------------------------------


class UsageError(Exception):
    """Bad names on the command line: printed without a traceback, exit code 2."""


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
            f"unknown {kind}{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}\n"
            f"valid {kind}s: {', '.join(valid)}"
        )


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


def cmd_run(args: argparse.Namespace) -> int:
    from bench.sweep import run_sweep

    preset = PRESETS[args.preset]
    _check("optimizer", preset.optimizers_for(args.optimizers), list(VARIANTS))
    _check("workload", preset.workloads_for(args.workloads), _workload_names())
    for value, flag in ((args.epochs, "--epochs"), (args.max_steps_per_epoch, "--max-steps")):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1")
    if args.threads < 0:
        raise UsageError("--threads must be 0 or more")
    out = args.out or Path("results") / preset.name
    cells = preset.cells(
        args.workloads,
        args.optimizers,
        seeds=args.seeds,
        epochs=args.epochs,
        max_steps_per_epoch=args.max_steps_per_epoch,
        size=args.size,
        warmup_steps=args.warmup_steps,
    )
    overhead = [] if args.no_overhead else preset.overhead_for(args.workloads, args.optimizers)

    progress = not args.no_progress
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
            )
    except KeyboardInterrupt:
        _err(f"interrupted; records so far are in {out}. Rerun with --resume to continue.")
        return EXIT_INTERRUPTED
    minutes = (time.perf_counter() - start) / 60

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
        try:
            html = _build_report([out], out / "report" / "index.html")
        except Exception as exc:  # noqa: BLE001 - the records are safe; say what failed
            _err(f"report failed: {type(exc).__name__}: {exc}")
            return 1
        if html is not None:
            print(f"report: {html}")
    return code


def cmd_report(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.results if not p.is_dir()]
    if missing:
        raise UsageError(f"not a directory: {', '.join(missing)}")
    out = args.out or args.results[0] / "report" / "index.html"
    html = _build_report(args.results, out)
    if html is None:
        return 1
    print(f"report: {html}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    _check("optimizer", [args.optimizer], list(VARIANTS))
    _check("workload", [args.workload], _workload_names())
    try:
        from bench import profile
    except ImportError as exc:
        _err(f"profiling is not available (bench.profile): {exc}")
        return 1
    options = {k: v for k, v in vars(args).items() if k != "command"}
    result = profile.main(**options)
    return int(result) if isinstance(result, int) else 0


def cmd_ratio(args: argparse.Namespace) -> int:
    from bench.workloads.registry import family

    _check("workload", [w for w in args.workload if family(w) is None], _workload_names())
    _check("variant", args.variants, list(STEP_VARIANTS))
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
    "report": cmd_report,
    "profile": cmd_profile,
    "ratio": cmd_ratio,
    "list": cmd_list,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
