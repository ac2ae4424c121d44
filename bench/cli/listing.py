"""``fngd-bench list``: the workloads, optimizer labels and presets."""

from __future__ import annotations

import argparse

from bench.cli.checks import workload_names
from bench.cli.command import Subcommand, UsageError
from bench.cli.run import presets_help
from bench.labels import VARIANTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def handle(args: argparse.Namespace) -> int:
    try:
        names = workload_names()
    except UsageError as exc:
        names = [f"({exc})"]
    print("workloads:  " + ", ".join(names))
    print("optimizers:")
    for v in VARIANTS.values():
        print(f"  {v.label:<10} {v.note}")
    print("presets:")
    print(presets_help())
    return 0


COMMAND = Subcommand(
    name="list",
    help="list workloads, optimizer labels and presets",
    description="Show the workloads, optimizer labels and presets.",
    add_arguments=add_arguments,
    handle=handle,
)
