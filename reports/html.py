"""Render the sections into one self-contained HTML file (jinja2) and write the CSV tables.

The HTML embeds its figures as ``data:`` PNG URIs and its style inline, so it opens from disk
without a server or network. Each table is also written beside it as
``<html stem>_<table>.csv`` with full-precision values.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import pandas as pd

from reports.common import count_runs, prepare, record_count, workload_label
from reports.context import Context
from reports.load import load_records
from reports.section import Section, TableBlock
from reports.topics import (
    batch_size,
    cells,
    convergence,
    design_space,
    distributed,
    environment,
    epoch_time,
    memory,
    phases,
    problems,
    profile,
    speedup,
    step_time,
    verdict,
)
from reports.vocabulary import display_name, family_rank

log = logging.getLogger(__name__)

TEMPLATE = "report.html"
#: Tables with more columns than this are set in a smaller font (the template's ``wide``).
WIDE_TABLE = 8
#: Cells with more characters than this may break anywhere (paths, lists); others only
#: between words, so that short words never split.
LONG_TEXT = 40
#: The report's topics in page order; each has ``ID``, ``TITLE`` and ``section(ctx)``.
TOPICS = (
    verdict,
    environment,
    speedup,
    convergence,
    step_time,
    epoch_time,
    phases,
    design_space,
    memory,
    batch_size,
    distributed,
    profile,
    cells,
    problems,
)


def build_sections(ctx: Context) -> list[Section]:
    """Every topic's section; one that raises is shown as an error, the others still render."""
    out = []
    for topic in TOPICS:
        try:
            out.append(topic.section(ctx))
        except Exception as exc:  # one broken section must not take the report down
            log.exception("report section %s failed", topic.ID)
            out.append(
                Section(
                    topic.ID,
                    topic.TITLE,
                    error=f"This section could not be built: {type(exc).__name__}: {exc}",
                )
            )
    return out


def has_content(sec: Section) -> bool:
    """Whether ``sec`` has anything to show: a figure, a table with rows, a note or an error.
    A section with none of these is left out of the page and listed under "Not shown"."""
    if sec.error or sec.notes or sec.warnings:
        return True
    return any(not (isinstance(b, TableBlock) and b.frame.empty) for b in sec.blocks)


def not_shown(secs: list[Section]) -> list[dict]:
    """The sections left out, grouped by why (their "missing" sentences), in page order."""
    reasons: dict[str, list[str]] = {}
    for sec in secs:
        if not has_content(sec):
            why = " ".join(sec.missing) or "No data for it in these records."
            reasons.setdefault(why, []).append(sec.title)
    return [{"titles": titles, "reason": why} for why, titles in reasons.items()]


def _number(x: float) -> str:
    """At most 3-4 significant digits, never in scientific notation for ordinary sizes."""
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    if a >= 0.001:
        return f"{x:.3g}"
    return f"{x:.2e}"


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def format_cell(value: object, fmt: str) -> tuple[str, list[str]]:
    """Display text and CSS classes of one table cell."""
    blank = fmt.endswith("?")  # a missing value is left blank instead of "n/a"
    fmt = fmt.rstrip("?")
    if _is_missing(value) or (fmt != "text" and isinstance(value, str) and value == ""):
        return ("n/a", ["na"]) if fmt != "text" and not blank else ("", [])
    classes: list[str] = []
    if fmt == "text":
        text = str(value)
    else:
        try:
            x = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(value), []
        if fmt == "int":
            text = f"{int(round(x))}"
        elif fmt == "ms":
            text = _number(x * 1e3)
        elif fmt == "s":
            text = _number(x)
        elif fmt == "x":
            text = f"{x:.2f}×"
            classes.append("faster" if x > 1.0 else "slower" if x < 1.0 else "")
        elif fmt == "ratio":
            text = f"{x:.2f}"
        elif fmt == "mib":
            text = _number(x / 2**20)
        elif fmt == "pct":
            text = f"{100 * x:.1f}%"
        else:
            text = f"{x:.4g}"
    if "synthetic" in text.lower():
        classes.append("synthetic")
    return text, [c for c in classes if c]


def _group_label(row: pd.Series, cols: list[str]) -> tuple[str, bool]:
    parts = [
        workload_label(row) if "size" in cols else str(row["workload"]),
        str(row["device_name"]),
    ]
    if "world_size" in cols and int(row.get("world_size", 1) or 1) > 1:
        parts.append(f"{int(row['world_size'])} processes")
    if "batch_size" in cols and int(row["batch_size"]):
        parts.append(f"batch {int(row['batch_size'])}")
    source = str(row["data_source"])
    synthetic = source == "synthetic"
    if not synthetic and source != "real":  # synthetic: the template adds a red tag
        parts.append(f"data: {source}")
    return " · ".join(parts), synthetic


def table_view(block: TableBlock, csv_name: str) -> dict:
    """Header and rows of one table, ready for the template.

    Tables that show the setting columns get one group row per setting instead of those
    columns (the CSV keeps them); columns named in ``drop_constant`` are left out when every
    row has the same value.
    """
    frame = block.frame
    shown = frame if not block.max_rows else frame.head(block.max_rows)
    cols = [c for c in block.columns if c[0] in frame.columns]
    names = [c[0] for c in cols]
    group = [c for c in block.group if c in names]
    if not {"workload", "data_source", "device_name"} <= set(group):
        group = []
    cols = [c for c in cols if c[0] not in group]
    cols = [
        c
        for c in cols
        if not (c[0] in block.drop_constant and frame[c[0]].nunique(dropna=False) <= 1)
    ]
    rows = []
    current = None
    for _, r in shown.iterrows():
        if group:
            label, synthetic = _group_label(r, group)
            if label != current:
                current = label
                rows.append({"group": label, "synthetic": synthetic, "cells": []})
        cells = []
        for col, _header, fmt in cols:
            text, classes = format_cell(r[col], fmt)
            if len(text) > LONG_TEXT:
                classes.append("long")
            cells.append({"text": text, "cls": " ".join(classes), "num": fmt.rstrip("?") != "text"})
        rows.append({"group": "", "synthetic": False, "cells": cells})
    return {
        "title": block.title,
        "headers": [{"text": h, "num": f.rstrip("?") != "text"} for _c, h, f in cols],
        "rows": rows,
        "note": block.note,
        "csv": csv_name,
        "show": block.show,
        "collapsed": block.collapsed,
        "empty": frame.empty,
        "hidden": len(frame) - len(shown),
        "wide": len(cols) > WIDE_TABLE,
    }


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _summary(df: pd.DataFrame, inputs: list[str], n_problems: int) -> dict:
    synth = sorted(set(df.loc[df["data_source"] == "synthetic", "workload"])) if len(df) else []
    opts = sorted(set(df["optimizer"]), key=family_rank) if len(df) else []
    return {
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "inputs": inputs,
        "records": record_count(df),
        "runs": count_runs(df),
        "workloads": sorted(set(df["workload"])) if len(df) else [],
        "optimizers": [display_name(o) for o in opts],
        "devices": sorted(set(df["device_name"])) if len(df) else [],
        "synthetic": synth,
        "problems": n_problems,
    }


def render(secs: list[Section], summary: dict, csv_names: dict[int, str]) -> str:
    """The page: the sections with something to show, then the list of those left out."""
    views = []
    for sec in filter(has_content, secs):
        blocks = []
        for b in sec.blocks:
            if isinstance(b, TableBlock):
                blocks.append({"kind": "table", **table_view(b, csv_names.get(id(b), ""))})
            else:
                blocks.append(
                    {
                        "kind": "figure",
                        "title": b.title,
                        "uri": b.uri,
                        "alt": b.alt,
                        "synthetic": b.synthetic,
                        "id": b.element_id,
                        "lead": b.lead,
                    }
                )
        views.append(
            {
                "id": sec.id,
                "title": sec.title,
                "intro": sec.intro,
                "findings": sec.findings,
                "details": sec.details,
                "missing": sec.missing,
                "notes": sec.notes,
                "warnings": sec.warnings,
                "error": sec.error,
                "blocks": blocks,
            }
        )
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(sections=views, summary=summary, not_shown=not_shown(secs))
    )


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def build_report(results_dirs: Iterable[Path | str] | Path | str, out_html: Path | str) -> Path:
    """Read every records file (``*.parquet``, ``*.jsonl``) under ``results_dirs`` and write the
    report to ``out_html``.

    Also writes each table as ``<stem>_<table>.csv`` beside the HTML. Returns the HTML path.
    Missing or corrupt input never raises: the report says what is missing where.
    """
    if isinstance(results_dirs, (str, Path)):
        results_dirs = [results_dirs]
    inputs = [str(d) for d in results_dirs]
    records, unusable = load_records(inputs)
    ctx = Context(prepare(records), unusable, inputs)
    del records  # the frame as read is not kept beside the prepared one
    return _write_report(ctx, out_html)


def build_frame_report(
    records: pd.DataFrame,
    out_html: Path | str,
    *,
    problems: Iterable[str] = (),
    inputs: Iterable[str] = (),
) -> Path:
    """The report of ``records``, a frame as :func:`reports.load_records` returns it (or rows
    of one), at ``out_html``, as :func:`build_report` writes it; ``problems``: what reading
    them met, listed under "Input problems"; ``inputs``: where they came from, named in the
    summary. ``records`` is left as it was. Returns the HTML path."""
    return _write_report(Context(prepare(records), list(problems), list(inputs)), out_html)


def _write_report(ctx: Context, out_html: Path | str) -> Path:
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    secs = build_sections(ctx)
    csv_names: dict[int, str] = {}
    for sec in secs:
        for block in sec.tables:
            name = f"{out.stem}_{block.name}.csv"
            block.frame.to_csv(out.parent / name, index=False)
            csv_names[id(block)] = name
    summary = _summary(ctx.records, ctx.inputs, len(ctx.problems) + len(ctx.errors))
    _write_text(out, render(secs, summary, csv_names))
    return out
