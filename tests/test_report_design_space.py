"""The "FNGD design space" section on hand-built records whose answers are known.

Each cell's design is read from its hyperparameters; the times are ratios to SGD in the same
setting; the final metric is a median over runs with min and max; staleness is a median over
runs per epoch and block. The records are test fixtures in the runner's schema, never results.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from reports import build_report
from reports.tables.convergence import final_values
from reports.tables.epochs import epoch_times
from reports.tables.speedup import time_to_target
from reports.tables.steps import step_times
from reports.topics.design_space import (
    design_of,
    design_space,
    staleness,
    staleness_summary,
)
from tests.test_report_ratios import _epochs, _frame, _record, _section, _target

NET = {"scope": "network", "share": "sample", "damping": 0.1, "damping_mode": "constant"}
REL = {"scope": "layer", "share": "sample", "damping": 0.1, "damping_mode": "relative"}
SCHED = {"scope": "layer", "share": "iteration", "damping": "geometric:1.0:0.01:200"}
NGD = {"scope": "layer", "damping": 0.1, "share": "none"}


def _cell(
    label: str,
    family: str,
    hp: dict,
    seed: int,
    step_s: float,
    mode: str | None,
    epoch_s: tuple[float, ...],
    accuracy: float,
) -> list[dict]:
    run = f"{label}-{seed}"
    kw = {"family": family, "hparams": hp, "seed": seed}
    recs = [
        _record("step", label, run, epoch=1, step=i, seconds=step_s, warmup=False, mode=mode, **kw)
        for i in range(3)
    ]
    recs += _epochs(label, run, epoch_s, **kw)
    recs.append(
        _record("eval", label, run, epoch=len(epoch_s) - 1, name="accuracy", value=accuracy, **kw)
    )
    return recs


def _stale(
    label: str,
    family: str,
    hp: dict,
    seed: int,
    epoch: int,
    key: str,
    cosine: float,
    norm_ratio: float,
) -> dict:
    return _record(
        "staleness",
        label,
        f"{label}-{seed}",
        family=family,
        hparams=hp,
        seed=seed,
        epoch=epoch,
        name=key,
        value=cosine,
        norm_ratio=norm_ratio,
        seconds=1.0,
        probe_seconds=0.01,
    )


def _records() -> list[dict]:
    """SGD: 1 s steps, 2 s epochs, accuracy 0.9. fngd-net (3 seeds): 1.2 s weighted-sum
    steps (1.2x), later epochs 2.6 s (1.3x), accuracy 0.8 / 0.85 / 0.9, two runs reach 0.85
    after 4 and 6 s. fngd-rel: one run, diverged. fngd-sched and ngd: one run each."""
    recs = _cell("sgd", "sgd", {"lr": 0.1}, 0, 1.0, None, (2.0, 2.0, 2.0), 0.9)
    for seed, acc in enumerate((0.8, 0.85, 0.9)):
        recs += _cell("fngd-net", "fngd", NET, seed, 1.2, "weighted_sum", (10.0, 2.6, 2.6), acc)
        recs += [
            _stale(
                "fngd-net",
                "fngd",
                NET,
                seed,
                1,
                "network",
                (0.9, 0.8, 0.95)[seed],
                (1.1, 1.2, 1.3)[seed],
            ),
            _stale("fngd-net", "fngd", NET, seed, 2, "network", 0.7, 1.5),
        ]
    for seed, secs in ((1, 4.0), (2, 6.0)):
        recs.append(
            _target(
                "fngd-net", f"fngd-net-{seed}", 0.85, secs, family="fngd", hparams=NET, seed=seed
            )
        )
    recs += _cell("fngd-rel", "fngd", REL, 0, 1.5, "weighted_sum", (9.0, 3.0), 0.5)
    recs.append(
        _record(
            "cell",
            "fngd-rel",
            "fngd-rel-0",
            family="fngd",
            hparams=REL,
            name="diverged",
            value="non-finite train loss",
        )
    )
    recs += [
        _stale("fngd-rel", "fngd", REL, 0, 1, "net.0", 0.6, 0.5),
        _stale("fngd-rel", "fngd", REL, 0, 1, "network", 0.65, 0.55),
    ]
    recs += _cell("fngd-sched", "fngd", SCHED, 0, 1.1, "weighted_sum", (8.0, 2.2), 0.88)
    recs += _cell("ngd", "ngd", NGD, 0, 4.0, "inversion", (8.0, 8.0), 0.92)
    return recs


def _table(df: pd.DataFrame) -> pd.DataFrame:
    return design_space(
        df, step_times(df), epoch_times(df), final_values(df), time_to_target(df)
    ).set_index("optimizer")


def test_design_of_reads_the_hyperparameters() -> None:
    assert design_of(NET, "fngd") == {
        "scope": "network",
        "sharing": "sample",
        "damping": "0.1",
        "damping_strategy": "constant",
    }
    assert design_of(REL, "fngd")["damping"] == "relative: 0.1"
    assert design_of({**NET, "normalize": True}, "fngd")["damping_strategy"] == "normalised"
    sched = design_of(SCHED, "fngd")
    assert sched["damping_strategy"] == "schedule" and sched["sharing"] == "iteration"
    assert sched["damping"] == "schedule geometric:1.0:0.01:200"
    assert design_of({"share": "sample", "damping": 0.1}, "ngd")["sharing"] == "none"
    assert design_of({}, "fngd")["scope"] == "layer"
    assert design_of({"lr": 0.1}, "sgd")["scope"] == ""


def test_design_space_table_has_the_known_answers(tmp_path: Path) -> None:
    t = _table(_frame(tmp_path, _records()))
    assert list(t.index) == ["sgd", "fngd-rel", "fngd-sched", "ngd", "fngd-net"]  # layer first
    net = t.loc["fngd-net"]
    assert (net["scope"], net["sharing"], net["damping"]) == ("network", "sample", "0.1")
    assert net["ws_step_ratio"] == pytest.approx(1.2)
    assert net["later_epoch_ratio"] == pytest.approx(1.3)
    assert net["epoch_over_step"] == pytest.approx(1.3 / 1.2)
    assert net["runs"] == 3 and net["diverged"] == 0
    assert (net["metric_median"], net["metric_min"], net["metric_max"]) == pytest.approx(
        (0.85, 0.8, 0.9)
    )
    assert net["reached"] == 2 and net["time_to_target_s"] == pytest.approx(5.0)
    rel = t.loc["fngd-rel"]
    assert rel["diverged"] == 1 and rel["ws_step_ratio"] == pytest.approx(1.5)
    assert rel["later_epoch_ratio"] == pytest.approx(1.5)
    assert rel["reached"] == 0 and math.isnan(rel["time_to_target_s"])
    ngd = t.loc["ngd"]
    assert ngd["sharing"] == "none" and math.isnan(ngd["ws_step_ratio"])  # no weighted sum
    assert ngd["later_epoch_ratio"] == pytest.approx(4.0)
    assert t.loc["sgd", "later_epoch_ratio"] == pytest.approx(1.0)


def test_staleness_is_a_median_over_runs_per_epoch_and_block(tmp_path: Path) -> None:
    table = staleness(_frame(tmp_path, _records()))
    net = table.loc[table["optimizer"] == "fngd-net"].set_index("epoch")
    assert list(net["key"]) == ["network", "network"]
    assert (net.loc[1, "cosine_median"], net.loc[1, "cosine_min"], net.loc[1, "cosine_max"]) == (
        pytest.approx((0.9, 0.8, 0.95))
    )
    assert net.loc[1, "norm_ratio_median"] == pytest.approx(1.2) and net.loc[1, "n"] == 3
    assert net.loc[1, "scope"] == "network"
    rel = table.loc[table["optimizer"] == "fngd-rel"]
    assert list(rel["key"]) == ["network", "net.0"]  # the whole network first
    summary = staleness_summary(table).set_index(["optimizer", "key"])
    row = summary.loc[("fngd-net", "network")]
    assert (row["first_epoch"], row["last_epoch"]) == (1, 2)
    assert (row["first_cosine"], row["last_cosine"], row["min_cosine"]) == pytest.approx(
        (0.9, 0.7, 0.7)
    )
    assert row["last_norm_ratio"] == pytest.approx(1.5)


def test_design_space_section_reaches_the_report(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "records.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in _records()), encoding="utf-8"
    )
    out = build_report([tmp_path / "in"], tmp_path / "r.html")
    html = _section(out.read_text(encoding="utf-8"), "design-space")
    assert "FNGD design space" in html and "<img" in html  # the staleness figure
    assert "1.30" in html  # fngd-net's later epoch ×SGD
    csv = pd.read_csv(tmp_path / "r_design_space.csv").set_index("optimizer")
    assert csv.loc["fngd-net", "ws_step_ratio"] == pytest.approx(1.2)
    stale = pd.read_csv(tmp_path / "r_staleness.csv")
    assert len(stale) == 4


def test_staleness_figure_with_many_variants_lays_out_without_warnings(tmp_path: Path) -> None:
    """The ablation's 24 variants: the legend goes below the axes, the layout still fits."""
    import warnings

    from reports.topics.design_space import LEGEND_BESIDE_MAX, staleness_figure

    recs = []
    labels = [f"fngd-v{i}" for i in range(LEGEND_BESIDE_MAX + 16)]
    for label in labels:
        recs += [
            _stale(label, "fngd", NET, 0, e, "network", 0.9 - 0.1 * e, 1.0 + e) for e in (1, 2)
        ]
    table = staleness(_frame(tmp_path, recs))
    setting = table.iloc[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "constrained_layout not applied"
        fig = staleness_figure(table, setting)
        assert fig is not None
        fig.canvas.draw()  # the layout runs at draw time
    assert fig.legends and len(fig.legends[0].get_texts()) == len(labels)
    assert not any(ax.get_legend() for ax in fig.axes)
