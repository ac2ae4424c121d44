"""The ``fngd-bench`` parser and ``main``: mistakes are one line and exit 2, other errors one
line and exit 1 (their traceback under ``--debug``). A plugin that cannot be used (a
``PluginError``: not found, fails to import, clashes, breaks the contract) counts as a
mistake: its message names the plugin and what to change, wherever it is raised."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bench.cli import listing, profile, ratio, report, run, tune
from bench.cli.arguments import add_debug
from bench.cli.checks import say
from bench.cli.command import Formatter, Parser, Subcommand, UsageError
from fngd.optimizers.plugins import PluginError

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
  ratio    step-time ratios to SGD, the variants interleaved so a machine's drift cancels
  list     show the workloads, optimizer labels and presets

`fngd-bench SUBCOMMAND --help` explains each one.
"""

#: Every subcommand, in the order ``--help`` lists them.
COMMANDS: dict[str, Subcommand] = {
    c.name: c
    for c in (
        run.COMMAND,
        tune.COMMAND,
        report.COMMAND,
        profile.COMMAND,
        ratio.COMMAND,
        listing.COMMAND,
    )
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fngd-bench", description=MAIN_HELP, formatter_class=Formatter)
    add_debug(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for command in COMMANDS.values():
        child = sub.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            formatter_class=Formatter,
        )
        command.add_arguments(child)
        add_debug(child, argparse.SUPPRESS)  # also after the subcommand, where people put it
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Mistakes on the command line and unusable plugins print one line
    and return 2; any other error prints one line and returns 1, or is raised again under
    ``--debug``."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        say(str(exc))
        return EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    args.argv = argv  # for `run --nproc K`, which starts the same command under torchrun
    try:
        return COMMANDS[args.command].handle(args)
    except (UsageError, PluginError) as exc:
        if args.debug:
            raise
        say(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.debug:
            raise
        say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`fngd-bench list | head`): not an error
        sys.stderr.close()
        return 0
    except Exception as exc:  # noqa: BLE001 - a bug or a broken setup: one line unless --debug
        if args.debug:
            raise
        say(f"{type(exc).__name__}: {exc} (run again with --debug for the traceback)")
        return EXIT_ERROR
