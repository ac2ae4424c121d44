"""``fngd-bench list``: the workloads, optimizer labels and presets, and where each came
from (built in, or the plugin distribution that registered it)."""

from __future__ import annotations

import argparse

from bench.cli.command import Subcommand, UsageError
from bench.cli.run import presets_help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def handle(args: argparse.Namespace) -> int:
    from bench.labels import VARIANTS, plugin_families
    from bench.workloads import registry as workloads
    from fngd.optimizers import registry as optimizers
    from fngd.optimizers.plugins import PluginError

    try:
        found = workloads.registrations()
        families = {n: optimizers.registration(n) for n in optimizers.names()}
        plugins = plugin_families()  # one named like a label of the table is an error
    except PluginError as exc:
        raise UsageError(str(exc)) from None
    print("workloads:")
    for name, entry in found.items():
        shown = name if not name.endswith(workloads.FAMILY_MARK) else name[:-1] + "<...>"
        try:
            line = workloads.description(name)
        except PluginError as exc:  # a broken plugin is listed, with why it cannot run
            line = f"(cannot be loaded: {exc})"
        print(f"  {shown:<22} {line}  [{entry.origin}]")
    print("optimizers:")
    for v in VARIANTS.values():
        print(f"  {v.label:<22} {v.note}  [{families[v.family].origin}]")
    for name in plugins:
        entry = families[name]
        try:
            note = optimizers.get(name).spec.note
        except PluginError as exc:
            note = f"(cannot be loaded: {exc})"
        print(f"  {name:<22} {note}  [{entry.origin}]")
    print("  (or any reference: module:function or path/to/file.py:function)")
    print("presets:")
    print(presets_help())
    return 0


COMMAND = Subcommand(
    name="list",
    help="list workloads, optimizer labels and presets, and where each came from",
    description="Show the workloads, optimizer labels and presets, and the distribution "
    "that registered each one (built in, or a plugin: docs/PLUGINS.md).",
    add_arguments=add_arguments,
    handle=handle,
)
