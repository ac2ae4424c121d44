"""Every option of every subcommand reaches a library function that declares it, or the
handler that reads it: checked against the functions' signatures, so a handler cannot pass a
keyword its function lacks (``fngd-bench profile`` once passed ``argv``) or drop an option."""

from __future__ import annotations

import argparse

import pytest

from bench import cli
from bench.cli.command import keywords, library_function, options_for

#: Options every subcommand has, that no library function takes.
CLI_ONLY = {"help", "debug"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _dests(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in parser._actions} - CLI_ONLY


def test_every_subcommand_has_a_parser():
    assert set(_subparsers()) == set(cli.COMMANDS)


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_option_reaches_a_library_keyword_or_the_handler(name):
    command = cli.COMMANDS[name]
    dests = _dests(_subparsers()[name])
    declared = {k for path in command.library for k in keywords(library_function(path))}
    assert dests <= declared | command.own, sorted(dests - declared - command.own)
    assert command.own <= dests, sorted(command.own - dests)  # no stale names


@pytest.mark.parametrize("name", ["profile", "ratio"])
def test_single_function_subcommands_take_exactly_its_keywords(name):
    """``profile`` and ``ratio`` are their library function's keywords, one to one."""
    command = cli.COMMANDS[name]
    (path,) = command.library
    assert not command.own
    assert _dests(_subparsers()[name]) == set(keywords(library_function(path)))


def _f(a: int, *, b: int = 2, c: int = 3) -> tuple[int, int, int]:
    return a, b, c


def test_options_for_passes_only_declared_keywords():
    args = argparse.Namespace(a=1, b=5, argv=["x"], debug=True)
    assert options_for(_f, args) == {"a": 1, "b": 5}  # c unset: _f's default applies
    assert options_for(_f, args, c=9) == {"a": 1, "b": 5, "c": 9}
    assert _f(**options_for(_f, args)) == (1, 5, 3)
    with pytest.raises(TypeError, match="takes no argv"):
        options_for(_f, args, argv=[])


def test_a_suppressed_option_leaves_the_function_default():
    parsed = cli.build_parser().parse_args(
        ["profile", "--workload", "mlp-digits", "--optimizer", "sgd"]
    )
    main = library_function(cli.COMMANDS["profile"].library[0])
    options = options_for(main, parsed)
    assert "steps" not in options and "batch_size" not in options
    assert options["workload"] == "mlp-digits" and "argv" not in options
