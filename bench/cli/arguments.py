"""Option types and the options several subcommands share, spelled once."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = [
    "add_debug",
    "add_device",
    "add_threads",
    "add_warm_start",
    "non_negative_int",
    "positive_int",
]


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def add_debug(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the traceback of any error (for bug reports)",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CUDA when available, else CPU (default: auto)",
    )


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=non_negative_int,
        default=1,
        metavar="N",
        help="CPU intra-op threads on the CPU device (default: 1; 0: torch's default). The "
        "CPU workloads are small, and on a shared machine spinning worker threads make step "
        "times erratic; recorded as `threads`",
    )


def add_warm_start(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-warm-start",
        dest="warm_start",
        action="store_false",
        help="skip the discarded warm-up run before the first timed cell (it keeps the "
        "process's cold start off whichever optimizer runs first)",
    )
