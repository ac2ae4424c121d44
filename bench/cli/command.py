"""What every subcommand is: a parser, a handler, and the library functions its options go to.

A handler passes a library function only the options that function declares
(:func:`options_for`), never the whole namespace, and every option of a subcommand is either
a keyword of one of its library functions or one the handler uses itself (``own``):
``tests/test_cli_wiring.py`` checks both against the functions' signatures, so an option
that reaches nothing, or a keyword no option feeds, fails a test instead of a user's call.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

__all__ = [
    "Formatter",
    "Parser",
    "Subcommand",
    "UsageError",
    "library_function",
    "options_for",
]


class UsageError(ValueError):
    """A mistake on the command line: one line on stderr, no traceback, exit code 2. A
    ``ValueError``, so that the checks of ``bench.cli.checks`` serve the Python API
    (``bench.api``) too."""


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


class Parser(argparse.ArgumentParser):
    """argparse's errors as :class:`UsageError`, so that they read like every other."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("fngd-bench").strip()
        hint = f"fngd-bench {command} --help".replace("  ", " ")
        raise UsageError(f"{command + ': ' if command else ''}{message} (see {hint})")


@dataclass(frozen=True)
class Subcommand:
    """One ``fngd-bench`` subcommand.

    ``library``: ``"module:qualname"`` of each function (or class) the handler calls with
    the options; ``own``: the options the handler reads itself instead."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handle: Callable[[argparse.Namespace], int]
    library: tuple[str, ...] = ()
    own: frozenset[str] = field(default_factory=frozenset)


def library_function(path: str) -> Callable[..., Any]:
    """The object that ``"module:qualname"`` names (``qualname`` may be ``Class.method``)."""
    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def keywords(function: Callable[..., Any]) -> list[str]:
    """The parameters of ``function`` that can be passed by name (``self`` left out)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind in kinds and p.name != "self"
    ]


def options_for(
    function: Callable[..., Any], args: argparse.Namespace, **computed: Any
) -> dict[str, Any]:
    """The keywords for ``function``: each of its parameters that ``args`` holds (an option
    left unset with ``default=SUPPRESS`` is absent, so the function's default applies), with
    ``computed`` values in place of the options' own. A ``computed`` name that ``function``
    does not take is a bug here, not a user's mistake: ``TypeError``."""
    names = keywords(function)
    stray = sorted(set(computed) - set(names))
    if stray:
        raise TypeError(f"{function.__qualname__} takes no {', '.join(stray)}")
    held: Mapping[str, Any] = {**vars(args), **computed}
    return {name: held[name] for name in names if name in held}
