"""``fngd-bench tune``: equal-budget Optuna studies on each workload's validation split."""

from __future__ import annotations

import argparse
from pathlib import Path

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
from bench.labels import VARIANTS

EXIT_INTERRUPTED = 130

DESCRIPTION = """\
Tune every optimizer with the same budget: one Optuna study per workload x optimizer label,
named <workload>__<label>, each run until it holds --trials COMPLETE trials.

A trial trains one cell for --epochs epochs (seed --seed) with hyperparameters drawn from a
seeded scrambled Sobol sequence over its family's search space (bench/campaign/search_spaces.py: lr,
weight decay, damping for kfac/ngd/fngd, the schedule's warm-up fraction). Its score is the
training time (evaluation excluded) until the workload's metric on the VALIDATION split
reaches the target; a trial that does not reach it (or diverges, or runs out of memory)
scores +inf and keeps its best validation metric. Every trial writes ordinary records to
OUT/trials/<study>/; the best trial of each study is written to OUT/best_hparams.json, for
`fngd-bench run --hparams-from OUT/best_hparams.json` (final runs on the test split).

Resumable: Ctrl-C keeps every finished trial, and the same command runs only what is
missing. Parallel: --workers K processes, or several commands on one --storage.
"""

CONFIG = "bench.campaign.tune:TuneConfig"


def add_arguments(tune: argparse.ArgumentParser) -> None:
    tune.add_argument(
        "--workload",
        "--workloads",
        dest="workloads",
        nargs="+",
        action="extend",
        required=True,
        metavar="W",
        help="workloads (with a validation split): names of `fngd-bench list`, or "
        "references, module:build or path/to/file.py:build",
    )
    tune.add_argument(
        "--optimizer",
        "--optimizers",
        dest="optimizers",
        nargs="+",
        action="extend",
        required=True,
        metavar="O",
        help=f"optimizer labels: {', '.join(VARIANTS)}; a plugin's optimizer; or a "
        "reference, module:factory or path/to/file.py:factory",
    )
    tune.add_argument(
        "--trials", type=positive_int, required=True, metavar="N", help="complete trials per study"
    )
    tune.add_argument(
        "--epochs", type=positive_int, required=True, metavar="E", help="epoch budget per trial"
    )
    tune.add_argument(
        "--max-steps-per-epoch",
        type=positive_int,
        metavar="N",
        help="cut every epoch of a trial after N steps (part of the study's settings)",
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
    add_device(tune)
    tune.add_argument("--data-root", type=Path, help="where datasets are read from")
    tune.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_threads(tune)
    add_warm_start(tune)


def handle(args: argparse.Namespace) -> int:
    from bench.campaign.search_spaces import space_for
    from bench.campaign.tune import BEST_FILE, print_best, tune
    from bench.cell import CellSpec
    from bench.host.progress import Progress
    from bench.labels import resolve_label

    check_optimizers(args.optimizers)
    check_workloads(args.workloads)
    for label in args.optimizers:
        try:
            space_for(resolve_label(label).family)
        except ValueError as exc:
            raise UsageError(f"--optimizer {label}: {exc}") from None
    check_cells(
        [CellSpec(w, o, size=args.size) for w in args.workloads for o in args.optimizers],
        data_root=args.data_root,
    )
    check_device(args.device)
    check_out_dir(args.out)
    if args.storage is not None and "://" not in args.storage:
        raise UsageError(f"--storage {args.storage}: not a URL (e.g. sqlite:///studies.db)")
    config_type = library_function(CONFIG)
    data_root = str(args.data_root) if args.data_root else None
    config = config_type(**options_for(config_type, args, data_root=data_root))
    progress = Progress.auto(not args.no_progress and args.workers == 1)
    try:
        best = tune(config, progress=progress)
    except KeyboardInterrupt:
        say(
            f"interrupted; finished trials are kept in {config.storage_url}. "
            "Run the same command again to continue."
        )
        return EXIT_INTERRUPTED
    except ValueError as exc:  # a study run with other settings, a workload without val
        raise UsageError(str(exc)) from None
    print_best(best)
    print(f"best hyperparameters: {args.out / BEST_FILE} (storage {config.storage_url})")
    return 0


COMMAND = Subcommand(
    name="tune",
    help="equal-budget hyperparameter studies on the validation split",
    description=DESCRIPTION,
    add_arguments=add_arguments,
    handle=handle,
    library=(CONFIG,),
    own=frozenset({"no_progress"}),
)
