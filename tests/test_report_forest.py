"""The forest plot the summary opens with (reports/figures/forest.py), on the summary's
hand-built records with known answers (tests/test_report_verdict.py): three seeds each, SGD
4 s to the target, AdamW and FNGD 2 s (2× SGD's speed), KFAC 1 s (4×); everyone's final
accuracy 0.95 unless a test changes it."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from reports import build_report
from reports.common import higher_is_better
from reports.figures import forest
from reports.section import FigureBlock
from reports.topics import verdict
from tests.test_report_verdict import _context, _records, _write


def _row(table: pd.DataFrame, opt: str, panel: str) -> pd.Series:
    hit = table.loc[(table["opt"] == opt) & (table["panel"] == panel)]
    assert len(hit) == 1, (opt, panel)
    return hit.iloc[0]


def _scale_final(recs: list[dict], optimizer: str, factor: float, name: str) -> None:
    """``optimizer``'s evaluations of ``name`` times ``factor``."""
    for r in recs:
        if r["optimizer"] == optimizer and r["kind"] == "eval" and r["name"] == name:
            r["value"] *= factor


def _texts(fig) -> list[str]:
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    return texts + [t.get_text() for t in fig.texts] + [fig.get_suptitle()]


def test_ratios_point_right_when_better(tmp_path: Path) -> None:
    """Time: SGD's ÷ the optimizer's; metric (accuracy, higher is better): the optimizer's ÷
    SGD's; both above 1 when the optimizer does better."""
    recs = _records(3)
    _scale_final(recs, "fngd", 0.5, "accuracy")
    table = forest.forest_table(_context(tmp_path, recs).records)
    assert set(table["opt"]) == {"adamw", "kfac", "fngd"}  # SGD is the reference, no row
    assert len(table) == 3 * 2
    assert set(table["reference"]) == {"sgd"} and not table["fallback"].any()
    assert set(table["runs"]) == {3} and set(table["reference_runs"]) == {3}
    for opt, speed in (("adamw", 2.0), ("kfac", 4.0), ("fngd", 2.0)):
        t = _row(table, opt, "time_to_target")
        assert t["ratio"] == pytest.approx(speed)
        assert 1.0 < t["ci_low"] <= t["ratio"] <= t["ci_high"]
        assert (t["verdict"], t["status"], t["n"], t["reached"]) == ("better", "ok", 3, 3)
        assert t["target"] == pytest.approx(0.9)
    fngd = _row(table, "fngd", "final_metric")
    assert fngd["higher_is_better"] and fngd["quantity"] == "accuracy"
    assert fngd["ratio"] == pytest.approx(0.5) and fngd["ci_high"] < 1.0
    assert fngd["verdict"] == "worse"
    kfac = _row(table, "kfac", "final_metric")
    assert (kfac["ratio"], kfac["verdict"]) == (pytest.approx(1.0), "no measurable difference")

    words = forest.sentences(table)
    assert len(words) == 3
    soonest, fngd_words, final = words
    assert re.search(r"kfac on w \(small\) at 4\.00× sgd’s speed \[\d\.\d\d, \d\.\d\d\]", soonest)
    assert re.fullmatch(
        r"FNGD against SGD, time to target — faster on w \(small\): fngd 2\.00× "
        r"\[1\.\d\d, 2\.\d\d\] \(t on log ratios, paired, n=3\)\.",
        fngd_words,
    )
    assert "worse on w (small): fngd 0.50× [" in final  # FNGD's loss, said as plainly
    assert final.endswith("no measurable difference in 2 of 3 comparisons.")


def test_a_lower_is_better_metric_is_inverted(tmp_path: Path) -> None:
    """A metric the records show is lower-is-better (met from below its target): SGD's ÷
    the optimizer's, so halving it reads 2× better."""
    recs = _records(3)
    for r in recs:
        if r["kind"] == "eval" and r["name"] == "accuracy":
            r["name"] = "score"
        if r["kind"] == "target":
            r.update(metric="score", metric_value=0.85)  # at or below 0.9: lower is better
    _scale_final(recs, "fngd", 0.5, "score")
    df = _context(tmp_path, recs).records
    assert higher_is_better(df) == {"w": False}
    fngd = _row(forest.forest_table(df), "fngd", "final_metric")
    assert not fngd["higher_is_better"]
    assert fngd["ratio"] == pytest.approx(2.0) and fngd["ci_low"] > 1.0
    assert fngd["verdict"] == "better"


def test_direction_from_the_name_where_the_records_do_not_show_it(tmp_path: Path) -> None:
    recs = _records(3)
    for r in recs:  # met exactly at the target: the value does not say which side
        if r["kind"] == "eval" and r["name"] == "accuracy":
            r["name"] = "val_mse"
        if r["kind"] == "target":
            r["metric"] = "val_mse"
    assert higher_is_better(_context(tmp_path / "mse", recs).records) == {"w": False}
    assert higher_is_better(_context(tmp_path / "acc", _records(3)).records) == {"w": True}


def test_an_optimizer_that_never_reached_the_target_is_shown(tmp_path: Path) -> None:
    recs = [r for r in _records(3) if not (r["optimizer"] == "fngd" and r["kind"] == "target")]
    # AdamW's seed 0 did not reach it either: 2 of its 3 runs did
    recs = [r for r in recs if not (r["run_id"] == "w__adamw__s0" and r["kind"] == "target")]
    table = forest.forest_table(_context(tmp_path, recs).records)
    t = _row(table, "fngd", "time_to_target")
    assert t["status"] == forest.NOT_REACHED and math.isnan(t["ratio"])
    assert (t["reached"], t["runs"]) == (0, 3)
    assert _row(table, "fngd", "final_metric")["status"] == "ok"  # its metric is still there
    adamw = _row(table, "adamw", "time_to_target")
    assert (adamw["status"], adamw["reached"], adamw["runs"]) == ("ok", 2, 3)

    texts = _texts(forest.figure(table))
    assert "not reached (0 of 3 runs)" in texts
    assert "2 of 3 reached" in texts
    fngd_words = forest.sentences(table)[1]
    assert "never reached the target on w (small): fngd." in fngd_words


def test_a_reference_that_reached_the_target_in_fewer_runs_says_so(tmp_path: Path) -> None:
    recs = [r for r in _records(3) if not (r["run_id"] == "w__sgd__s0" and r["kind"] == "target")]
    table = forest.forest_table(_context(tmp_path, recs).records)
    fngd = _row(table, "fngd", "time_to_target")
    assert (fngd["reference_reached"], fngd["reference_runs"], fngd["n"]) == (2, 3, 2)
    assert any("against sgd (n=3, 2 reached the target)" in t for t in _texts(forest.figure(table)))


def test_without_sgd_the_first_baseline_is_the_reference_and_says_so(tmp_path: Path) -> None:
    recs = [r for r in _records(3) if r["optimizer"] != "sgd"]
    table = forest.forest_table(_context(tmp_path, recs).records)
    assert set(table["opt"]) == {"kfac", "fngd"}  # AdamW, first in the family order, is it
    assert set(table["reference"]) == {"adamw"} and table["fallback"].all()
    assert _row(table, "kfac", "time_to_target")["ratio"] == pytest.approx(2.0)
    fngd = _row(table, "fngd", "time_to_target")
    assert fngd["ratio"] == pytest.approx(1.0) and fngd["verdict"] == "no measurable difference"

    texts = _texts(forest.figure(table))
    assert any("against adamw (n=3): no sgd in these records" in t for t in texts)
    assert "first baseline where no SGD ran" in texts[-1]
    soonest, fngd_words, _final = forest.sentences(table)
    assert soonest.startswith("Soonest to the target: kfac on w (small) at 2.00× adamw’s speed")
    assert "no measurable difference on w (small) against adamw: fngd 1.00× [" in fngd_words


def test_no_baseline_no_rows(tmp_path: Path) -> None:
    recs = [r for r in _records(3) if r["optimizer"] == "fngd"]
    table = forest.forest_table(_context(tmp_path, recs).records)
    assert table.empty and list(table.columns) == forest.FOREST.csv
    assert forest.figure(table) is None and forest.sentences(table) == []


def test_log_ticks_name_one_and_stay_few() -> None:
    for lo, hi in ((0.8, 1.25), (0.07, 5.4), (0.5, 40.0), (0.01, 900.0)):
        ticks = forest._ticks(lo, hi)
        assert 1.0 in ticks and 4 <= len(ticks) <= 8, (lo, hi, ticks)
        assert all(lo <= t <= hi for t in ticks)


def test_the_summary_opens_with_the_forest_plot(tmp_path: Path) -> None:
    ctx = _context(tmp_path, _records(3))
    sec = verdict.section(ctx)
    first = sec.blocks[0]
    assert isinstance(first, FigureBlock) and first.lead
    assert first.element_id == "forest-plot" and first.uri.startswith("data:image/png;base64,")
    assert 1 <= len(sec.findings) <= 3
    # the sentences of every comparison are kept, below the figure
    assert sec.details == verdict.findings(verdict.verdict(ctx), ctx.targets)
    (block,) = [b for b in sec.tables if b.name == "forest"]
    assert not block.show
    pd.testing.assert_frame_equal(block.frame, forest.forest_table(ctx.records))


def test_page_places_the_figure_before_the_words(tmp_path: Path) -> None:
    out = build_report([_write(tmp_path / "in", _records(3))], tmp_path / "index.html")
    html = out.read_text(encoding="utf-8")
    first_img = re.search(r"<img [^>]*>", html)
    assert first_img and 'id="forest-plot"' in first_img.group(0)
    summary = re.search(r'<section id="verdict">(.*?)</section>', html, re.S).group(1)
    img, words = summary.index('id="forest-plot"'), summary.index('<ul class="findings">')
    details = summary.index('<details class="details">')
    assert img < words < details < summary.index("<table")
    csv = pd.read_csv(tmp_path / "index_forest.csv")
    assert list(csv.columns) == forest.FOREST.csv and len(csv) == 6


def test_final_metric_is_paired_by_seed_like_the_verdict(tmp_path: Path) -> None:
    """Seeds that move every optimizer's accuracy alike (same weights, same data order): the
    paired interval sees FNGD's 0.9x through them, as the verdict does; Welch's would not."""
    from reports.stats import PAIRED

    recs = _records(5)
    for r in recs:
        if r["kind"] == "eval" and r["name"] == "accuracy":
            r["value"] *= 1.0 + 0.1 * (r["seed"] - 2)
    _scale_final(recs, "fngd", 0.9, "accuracy")
    ctx = _context(tmp_path, recs)
    row = _row(forest.forest_table(ctx.records), "fngd", "final_metric")
    assert row["method"] == PAIRED and row["n"] == 5
    assert row["ratio"] == pytest.approx(0.9) and row["ci_high"] < 1.0
    assert row["verdict"] == "worse"
    table = verdict.verdict(ctx)
    sgd = table.loc[(table["baseline"] == "sgd") & (table["metric"] == "final_metric")].iloc[0]
    assert sgd["ci_high"] < 1.0  # the verdict says the same


def test_records_naming_two_targets_are_compared_at_the_strictest(tmp_path: Path) -> None:
    """A lower-is-better metric whose records name two targets (runs of two versions): the
    forest, the speed-up table and the verdict all compare at the lower (the strictest),
    not at the higher, which every run met sooner."""
    recs = _records(3)
    easy = []
    for r in recs:
        if r["kind"] == "eval" and r["name"] == "accuracy":
            r["name"] = "score"
        if r["kind"] == "target":
            r.update(metric="score", metric_value=0.85)  # met from below: lower is better
            # an easier target, met in 1 s by everyone: it would say no one is faster
            easy.append(dict(r, value=1.2, metric_value=1.1, seconds=1.0, epoch=0))
    ctx = _context(tmp_path, recs + easy)
    fngd = _row(forest.forest_table(ctx.records), "fngd", "time_to_target")
    assert fngd["target"] == pytest.approx(0.9)
    assert fngd["ratio"] == pytest.approx(2.0) and fngd["n"] == 3
    sp = ctx.speed.loc[ctx.speed["baseline"] == "sgd"].iloc[0]
    assert sp["target"] == pytest.approx(0.9) and sp["time_to_target"] == pytest.approx(2.0)
    table = verdict.verdict(ctx)
    tt = table.loc[(table["baseline"] == "sgd") & (table["metric"] == "time_to_target")]
    assert tt.iloc[0]["target"] == pytest.approx(0.9)
