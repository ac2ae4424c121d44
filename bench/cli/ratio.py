"""``fngd-bench ratio``: step-time ratios to SGD, the variants interleaved."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.arguments import add_device, non_negative_int, positive_int
from bench.cli.checks import check_device, check_out_file, check_workloads
from bench.cli.command import Subcommand, library_function, options_for
from bench.measure.step_ratio import DEFAULT_VARIANTS
from bench.measure.step_variants import STEP_VARIANTS

DESCRIPTION = """\
Time single training steps of several step variants on one fixed batch, interleaved (every
round runs one step of each, in a fresh random order) so that a shared machine's drift cancels;
print the medians and their ratios to SGD, and write them as JSON with --out. Variants hold
an optimizer in one phase: fngd-weighted-sum, fngd-inversion, kfac-inverse, kfac-no-inverse.
"""

RATIO = "bench.measure.step_ratio:main"


def add_arguments(ratio: argparse.ArgumentParser) -> None:
    ratio.add_argument(
        "--workload",
        "--workloads",
        dest="workloads",
        nargs="+",
        default=["mlp-digits"],
        metavar="W",
        help="workload name(s), or mlp-random-<width>: MLP 784-W-W-10 on random tensors "
        "(batch 128), for the per-layer cost alone, or references (module:build)",
    )
    ratio.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        metavar="V",
        help=f"step variants (default: all): {', '.join(STEP_VARIANTS)}; or any optimizer "
        "label (a plugin's, a reference module:factory), timed as it steps",
    )
    ratio.add_argument(
        "--rounds", type=positive_int, default=200, help="timed rounds (default: 200)"
    )
    ratio.add_argument(
        "--threads", type=non_negative_int, default=1, help="CPU intra-op threads (default: 1)"
    )
    ratio.add_argument("--size", choices=("small", "paper"), default="small", help="workload size")
    ratio.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    add_device(ratio)


def handle(args: argparse.Namespace) -> int:
    from bench.cli.checks import UsageError
    from bench.measure.step_variants import step_variant

    check_workloads(args.workloads)
    for name in args.variants:
        try:
            step_variant(name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    check_device(args.device)
    if args.out is not None:
        check_out_file(args.out)
    main = library_function(RATIO)
    return int(main(**options_for(main, args)))


COMMAND = Subcommand(
    name="ratio",
    help="step-time ratios to SGD, variants interleaved so machine drift cancels",
    description=DESCRIPTION,
    add_arguments=add_arguments,
    handle=handle,
    library=(RATIO,),
)
