"""``fngd-bench profile``: a torch.profiler trace of one workload and optimizer."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.arguments import add_device, non_negative_int, positive_int
from bench.cli.checks import check_device, check_optimizers, check_out_dir, check_workloads
from bench.cli.command import Subcommand, library_function, options_for
from bench.labels import VARIANTS

DESCRIPTION = """\
Profile a window of training steps of one workload and optimizer with torch.profiler (for
FNGD: the end of the inversion epoch and the start of the weighted-sum epoch; for KFAC:
steps with and without an inverse update). Writes a TensorBoard trace and per-phase
`profile` records to OUT/<workload>/<optimizer>/ (view: tensorboard --logdir OUT, or the
*.pt.trace.json file in Perfetto, https://ui.perfetto.dev).
"""

PROFILE = "bench.measure.profile:main"


def add_arguments(profile: argparse.ArgumentParser) -> None:
    profile.add_argument(
        "--workload",
        required=True,
        metavar="W",
        help="workload name, or a reference (module:build, path/to/file.py:build)",
    )
    profile.add_argument(
        "--optimizer",
        required=True,
        metavar="O",
        help=f"one of: {', '.join(VARIANTS)}; a plugin's optimizer; or a reference, "
        "module:factory or path/to/file.py:factory",
    )
    profile.add_argument(
        "--out", type=Path, default=Path("runs"), help="trace directory (default: runs/)"
    )
    add_device(profile)
    # Options left unset are absent from the namespace: bench.measure.profile applies its defaults.
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


def handle(args: argparse.Namespace) -> int:
    check_optimizers([args.optimizer])
    check_workloads([args.workload])
    check_device(args.device)
    check_out_dir(args.out)
    main = library_function(PROFILE)
    return int(main(**options_for(main, args)))


COMMAND = Subcommand(
    name="profile",
    help="profile a few steps of one workload and optimizer",
    description=DESCRIPTION,
    add_arguments=add_arguments,
    handle=handle,
    library=(PROFILE,),
)
