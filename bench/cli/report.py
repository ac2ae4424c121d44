"""``fngd-bench report``: one HTML report from the records of results directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.campaign.launch import report_path, write_report
from bench.cli.checks import check_out_file, has_records, say
from bench.cli.command import Subcommand, UsageError

DESCRIPTION = """\
Build one HTML report (tables and figures) from the records (*.parquet, *.jsonl) of
RESULTS_DIR(s).
"""

BUILD = "bench.campaign.launch:write_report"


def add_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument("results", nargs="+", type=Path, metavar="RESULTS_DIR")
    report.add_argument(
        "-o",
        "--out",
        type=Path,
        default=None,
        help="output HTML file (default: RESULTS_DIR/report/index.html of the first one with "
        "records)",
    )


def handle(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.results if not p.is_dir()]
    if missing:
        raise UsageError(f"not a directory: {', '.join(missing)}")
    empty = [str(p) for p in args.results if not has_records(p)]
    if len(empty) == len(args.results):
        raise UsageError(
            f"no records (*.parquet, *.jsonl) in {', '.join(empty)}; no report written "
            "(fngd-bench run --out DIR writes them)"
        )
    if empty:
        say(f"no records (*.parquet, *.jsonl) in {', '.join(empty)}; reporting the others")
    first = next(p for p in args.results if str(p) not in empty)
    out = args.out or report_path(first)
    check_out_file(out, "-o/--out")
    print(f"report: {write_report(args.results, out)}")
    return 0


COMMAND = Subcommand(
    name="report",
    help="build the HTML report from results directories",
    description=DESCRIPTION,
    add_arguments=add_arguments,
    handle=handle,
    library=(BUILD,),
    own=frozenset({"results", "out"}),
)
