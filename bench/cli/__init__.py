"""``fngd-bench``: one module per subcommand, each a parser, a handler and the library
functions its options go to (:mod:`bench.cli.command`)."""

from bench.cli.app import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
