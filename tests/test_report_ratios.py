"""The report's ratios on hand-built records whose answers are known.

Every ratio in the speedup table is baseline time ÷ FNGD time (above 1: FNGD is faster);
time to target is taken at the highest target both optimizers reached; the paper-claims
table quotes those ratios, and the training time FNGD ÷ AdamW. The records are test fixtures
in the runner's schema (bench/records/schema.py, docs/ARCHITECTURE.md "Records"), never results.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from bench.records import FIELDS
from reports import build_report, load_records, paper
from reports.common import SETTING, prepare
from reports.context import Context
from reports.tables.convergence import final_values
from reports.tables.epochs import PROJECT_EPOCHS, cut_epochs, epoch_times
from reports.tables.speedup import SPEEDUP, TIME_TO_TARGET, speedup, time_to_target
from reports.tables.steps import step_times
from reports.topics.speedup import section as speedup_section
from reports.topics.speedup import speedup_gaps

_T0 = 1_732_500_000.0


def _record(kind: str, optimizer: str, run: str, workload: str = "w", **fields: object) -> dict:
    """One record as the runner writes it: every schema field, ``None`` where unused."""
    rec: dict[str, object] = {k: None for k in FIELDS}
    rec.update(
        run_id=run,
        workload=workload,
        optimizer=optimizer,
        family=optimizer,
        impl="torch",
        hparams={"lr": 0.1},
        seed=0,
        device="cpu",
        device_name="cpu-x",
        data_source="real",
        batch_size=4,
        size="small",
        attempt=1,
        kind=kind,
        torch_version="2.4.1",
        git_commit="abc",
        time=_T0,
    )
    rec.update(fields)
    return rec


def _target(optimizer: str, run: str, target: float, seconds: float, **kw: object) -> dict:
    """The ``target`` record of a run that first reached ``target`` after ``seconds``."""
    return _record(
        "target",
        optimizer,
        run,
        epoch=1,
        name="time_to_target",
        value=target,
        seconds=seconds,
        metric="accuracy",
        metric_value=target + 0.01,
        **kw,
    )


def _epochs(optimizer: str, run: str, seconds: tuple[float, ...], **kw: object) -> list[dict]:
    return [
        _record("epoch", optimizer, run, epoch=e, seconds=s, name="train_loss", value=1.0, **kw)
        for e, s in enumerate(seconds)
    ]


def _frame(tmp_path: Path, records: list[dict]) -> pd.DataFrame:
    """The records written as JSON Lines and read back as the report reads them."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    df, problems = load_records([tmp_path])
    assert problems == []
    return prepare(df)


def _speedup(df: pd.DataFrame) -> pd.DataFrame:
    return speedup(step_times(df), epoch_times(df), time_to_target(df))


def _section(html: str, section_id: str) -> str:
    m = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert m, f"section {section_id} not found"
    return m.group(1)


# ---------------------------------------------------------------------- time to target


def _target_race() -> list[dict]:
    """FNGD reaches 0.9 after 1, 2 and 9 s (median 2, mean 4); SGD after 6 s; both take
    1 s epochs, so no other ratio in the table is 3 or 1/3."""
    recs: list[dict] = []
    for seed, secs in enumerate((1.0, 2.0, 9.0)):
        run = f"fngd-{seed}"
        recs += _epochs("fngd", run, (1.0, 1.0), seed=seed)
        recs.append(_target("fngd", run, 0.9, secs, seed=seed))
    recs += _epochs("sgd", "sgd-0", (1.0, 1.0))
    recs.append(_target("sgd", "sgd-0", 0.9, 6.0))
    return recs


def test_time_to_target_speedup_is_baseline_over_fngd(tmp_path: Path) -> None:
    """FNGD's median time to 0.9 is 2 s, SGD's 6 s: the speed-up is 6 / 2 = 3, not 1/3."""
    df = _frame(tmp_path, _target_race())
    reached = time_to_target(df).set_index("optimizer")
    assert reached.loc["fngd", "median_s"] == pytest.approx(2.0)
    assert reached.loc["fngd", "reached"] == 3
    assert reached.loc["sgd", "median_s"] == pytest.approx(6.0)
    (row,) = _speedup(df).to_dict("records")
    assert row["baseline_optimizer"] == "sgd"
    assert row["target"] == pytest.approx(0.9)
    assert row["time_to_target"] == pytest.approx(3.0, rel=1e-12)


def test_a_plugins_family_is_a_baseline_after_the_suites_own(tmp_path: Path) -> None:
    """FNGD is compared with every other family in the records: the suite's own first, then
    a plugin's (``lion``, reached 0.9 after 4 s: 4 / 2 = 2) by name."""
    recs = _target_race()
    recs += _epochs("lion", "lion-0", (1.0, 1.0), impl="my-plugin 1.0")
    recs.append(_target("lion", "lion-0", 0.9, 4.0, impl="my-plugin 1.0"))
    rows = _speedup(_frame(tmp_path, recs)).to_dict("records")
    assert [r["baseline_optimizer"] for r in rows] == ["sgd", "lion"]
    assert rows[1]["time_to_target"] == pytest.approx(2.0, rel=1e-12)


def test_time_to_target_speedup_reaches_the_report(tmp_path: Path) -> None:
    """The CSV and the HTML speedup table carry the same 3.00× (not 0.33×)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "records.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in _target_race()), encoding="utf-8"
    )
    out = build_report([tmp_path / "in"], tmp_path / "r.html")
    speed = pd.read_csv(tmp_path / "r_speedup.csv")
    assert speed["time_to_target"].tolist() == pytest.approx([3.0])
    html = _section(out.read_text(encoding="utf-8"), "speedup")
    assert "3.00×" in html
    assert "0.33×" not in html


@pytest.mark.parametrize("extra", ["fngd", "sgd"])
def test_time_to_target_uses_the_highest_common_target(tmp_path: Path, extra: str) -> None:
    """Both reach 0.8 (FNGD 2 s, SGD 8 s: 4×) and 0.9 (FNGD 4 s, SGD 6 s: 1.5×); one of
    them alone also reaches 0.95. The table reports 0.9 and 1.5×."""
    recs = [
        _target("fngd", "fngd-0", 0.8, 2.0),
        _target("fngd", "fngd-1", 0.9, 4.0, seed=1),
        _target("sgd", "sgd-0", 0.8, 8.0),
        _target("sgd", "sgd-1", 0.9, 6.0, seed=1),
        _target(extra, f"{extra}-2", 0.95, 3.0, seed=2),
    ]
    df = _frame(tmp_path, recs)
    (row,) = _speedup(df).to_dict("records")
    assert row["target"] == pytest.approx(0.9)
    assert row["time_to_target"] == pytest.approx(1.5, rel=1e-12)


def test_time_to_target_needs_a_common_target(tmp_path: Path) -> None:
    """No target reached by both: no time-to-target ratio rather than a made-up one."""
    recs = [_target("fngd", "fngd-0", 0.9, 2.0), _target("sgd", "sgd-0", 0.8, 6.0)]
    (row,) = _speedup(_frame(tmp_path, recs)).to_dict("records")
    assert math.isnan(row["target"]) and math.isnan(row["time_to_target"])


# ------------------------------------------------------------------------ paper claims


def _ours(text: str) -> dict[str, float]:
    """``label: 1.23×`` parts of an "ours" cell, as numbers."""
    return {k.strip(): float(v) for k, v in re.findall(r"([^;]+?): ([0-9.]+)×", text)}


def _claim_row(claims: pd.DataFrame, baseline: str) -> dict:
    rows = claims.loc[claims["compared"] == f"fngd vs {baseline}"].to_dict("records")
    assert len(rows) == 1, claims
    return rows[0]


def test_paper_speed_claim_quotes_baseline_over_fngd(tmp_path: Path) -> None:
    """FNGD against KFAC on a ResNet-18/CIFAR-100 workload with known times.

    Steps: KFAC 3 s, FNGD 1 s -> 3×. Epochs: KFAC 6, 6, 6 (projected 600, run 18); FNGD
    10, 2, 2 (projected 10 + 99 × 2 = 208, run 14) -> 600/208 and 18/14. Target 0.5:
    KFAC 10 s, FNGD 4 s -> 2.5×.
    """
    w = "resnet18-cifar100"
    recs: list[dict] = []
    for opt, step_s, epoch_s, target_s in (
        ("kfac", 3.0, (6.0, 6.0, 6.0), 10.0),
        ("fngd", 1.0, (10.0, 2.0, 2.0), 4.0),
    ):
        run = f"{opt}-0"
        recs += [
            _record("step", opt, run, w, epoch=1, step=i, seconds=step_s, warmup=False)
            for i in range(3)
        ]
        recs += _epochs(opt, run, epoch_s, workload=w)
        recs.append(_target(opt, run, 0.5, target_s, workload=w))
    df = _frame(tmp_path, recs)
    claims = paper.compare(df, _speedup(df), final_values(df))
    row = _claim_row(claims, "kfac")
    assert row["workload"].startswith(w)
    got = _ours(row["ours"])
    assert got == {
        f"PROJECTED {PROJECT_EPOCHS} epochs": pytest.approx(600 / 208, abs=0.005),
        "measured 3 epochs": pytest.approx(18 / 14, abs=0.005),
        "per step": pytest.approx(3.0, abs=0.005),
        "time to target 0.5": pytest.approx(2.5, abs=0.005),
    }


def test_paper_metric_claim_quotes_fngd_over_adamw_time(tmp_path: Path) -> None:
    """FNGD trains 3 + 3 = 6 s to BLEU 30, AdamW 2 + 2 = 4 s to BLEU 10: the claim row says
    a difference of +20 BLEU and a training time FNGD ÷ AdamW of 6 / 4 = 1.50."""
    w = "transformer-multi30k"
    recs: list[dict] = []
    for opt, epoch_s, bleu in (("adamw", (2.0, 2.0), 10.0), ("fngd", (3.0, 3.0), 30.0)):
        run = f"{opt}-0"
        recs += _epochs(opt, run, epoch_s, workload=w)
        wall = 0.0
        for e, s in enumerate(epoch_s):
            wall += s
            value = bleu if e == len(epoch_s) - 1 else bleu / 2
            recs.append(
                _record("eval", opt, run, w, epoch=e, name="bleu", value=value, seconds=wall)
            )
    df = _frame(tmp_path, recs)
    claims = paper.compare(df, _speedup(df), final_values(df))
    ours = _claim_row(claims, "adamw")["ours"]
    m = re.search(r"training time FNGD ÷ AdamW: ([0-9.]+)", ours)
    assert m, ours
    assert float(m.group(1)) == pytest.approx(1.5, abs=0.005)
    m = re.search(r"bleu: FNGD ([0-9.]+) vs AdamW ([0-9.]+) \(difference ([-+0-9.]+)", ours)
    assert m, ours
    assert [float(g) for g in m.groups()] == pytest.approx([30.0, 10.0, 20.0])


# -------------------------------------------------------- which rows and which baseline


def _steps(optimizer: str, run: str, seconds: tuple[float, ...], **kw: object) -> list[dict]:
    return [
        _record("step", optimizer, run, epoch=0, step=i, seconds=s, warmup=False, **kw)
        for i, s in enumerate(seconds)
    ]


def test_speedup_of_nothing_is_an_empty_table_with_the_csv_columns() -> None:
    """No step, epoch or target records (or tables that failed and came back bare)."""
    out = speedup(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    assert out.empty
    assert list(out.columns) == SPEEDUP.csv
    out = time_to_target(pd.DataFrame())
    assert out.empty
    assert list(out.columns) == TIME_TO_TARGET.csv


def test_speedup_columns_and_baselines_in_order(tmp_path: Path) -> None:
    """FNGD against AdamW, SGD and KFAC: rows in the order KFAC, SGD, AdamW (not
    alphabetical), every epoch ratio baseline ÷ FNGD, the projected seconds of both sides.

    Epochs (first, later, later): FNGD 10, 2, 2 (projected 10 + 99 × 2 = 208 s); KFAC 6, 6, 6
    (600 s); SGD 1, 1, 1 (100 s); AdamW 2, 1, 1 (101 s).
    """
    times = {
        "adamw": (2.0, 1.0, 1.0),
        "sgd": (1.0, 1.0, 1.0),
        "fngd": (10.0, 2.0, 2.0),
        "kfac": (6.0, 6.0, 6.0),
    }
    recs: list[dict] = []
    for opt, secs in times.items():
        recs += _epochs(opt, f"{opt}-0", secs)
    out = _speedup(_frame(tmp_path, recs))
    assert list(out.columns) == SPEEDUP.csv
    assert out["baseline_optimizer"].tolist() == ["kfac", "sgd", "adamw"]
    assert out["fngd"].tolist() == ["fngd"] * 3
    assert out["first_epoch"].tolist() == pytest.approx([0.6, 0.1, 0.2], rel=1e-12)
    assert out["later_epochs"].tolist() == pytest.approx([3.0, 0.5, 0.5], rel=1e-12)
    assert out["projected_100"].tolist() == pytest.approx(
        [600 / 208, 100 / 208, 101 / 208], rel=1e-12
    )
    assert out["fngd_projected_100_s"].tolist() == pytest.approx([208.0] * 3, rel=1e-12)
    assert out["baseline_projected_100_s"].tolist() == pytest.approx(
        [600.0, 100.0, 101.0], rel=1e-12
    )
    assert out["measured_epochs"].tolist() == [3, 3, 3]
    assert out["measured_run"].tolist() == pytest.approx([18 / 14, 3 / 14, 4 / 14], rel=1e-12)


def test_per_step_speedup_uses_all_steps_not_one_mode(tmp_path: Path) -> None:
    """FNGD steps: inversion 9, 9 s, weighted sum 1, 1, 3 s: all steps' median 3 s (the modes'
    medians are 9 and 1). SGD 6 s per step: 6 / 3 = 2×. FNGD has no epoch records while SGD
    has: the epoch ratios are missing, not an error."""
    recs = _steps("fngd", "fngd-0", (9.0, 9.0), mode="inversion")
    recs += _steps("fngd", "fngd-0", (1.0, 1.0, 3.0), mode="weighted_sum")
    recs += _steps("sgd", "sgd-0", (6.0, 6.0))
    recs += _epochs("sgd", "sgd-0", (1.0, 1.0))
    (row,) = _speedup(_frame(tmp_path, recs)).to_dict("records")
    assert row["per_step"] == pytest.approx(2.0, rel=1e-12)
    for c in ("first_epoch", "later_epochs", "projected_100", "measured_run", "measured_epochs"):
        assert math.isnan(row[c]), c
    assert math.isnan(row["fngd_projected_100_s"])
    assert row["baseline_projected_100_s"] == pytest.approx(100.0)


def test_measured_run_needs_a_baseline_with_epochs(tmp_path: Path) -> None:
    """FNGD ran epochs, KFAC only steps: no measured-run ratio rather than an error."""
    recs = _epochs("fngd", "fngd-0", (1.0, 1.0)) + _steps("kfac", "kfac-0", (2.0,))
    recs += _steps("fngd", "fngd-0", (1.0,))
    (row,) = _speedup(_frame(tmp_path, recs)).to_dict("records")
    assert row["per_step"] == pytest.approx(2.0)
    assert math.isnan(row["measured_run"]) and math.isnan(row["measured_epochs"])
    assert row["fngd_projected_100_s"] == pytest.approx(100.0)
    assert math.isnan(row["baseline_projected_100_s"])


def test_time_to_target_rows_metric_and_order(tmp_path: Path) -> None:
    """Targets in ascending order whatever the order they were written in; the metric from
    the target records, "metric" for a workload that names none."""
    recs = [
        _target("fngd", "fngd-0", 0.9, 4.0),
        _target("fngd", "fngd-1", 0.8, 2.0, seed=1),
        _target("fngd", "fngd-2", 0.7, 1.0, seed=2, workload="v"),
    ]
    recs[-1]["metric"] = None
    out = time_to_target(_frame(tmp_path, recs))
    assert out["workload"].tolist() == ["v", "w", "w"]
    assert out["target"].tolist() == pytest.approx([0.7, 0.8, 0.9])
    assert out["metric"].tolist() == ["metric", "accuracy", "accuracy"]
    assert out["median_s"].tolist() == pytest.approx([1.0, 2.0, 4.0])
    assert out["runs"].tolist() == [1, 2, 2]


def test_time_to_target_keeps_a_target_without_a_value(tmp_path: Path) -> None:
    recs = [_target("fngd", "fngd-0", 0.9, 4.0)]
    recs[0]["value"] = None
    out = time_to_target(_frame(tmp_path, recs))
    assert len(out) == 1
    assert math.isnan(out["target"].iloc[0])
    assert out["median_s"].iloc[0] == pytest.approx(4.0)


# ------------------------------------------------------- paper claims: rows and conditions


def test_claims_match_workload_names_whatever_their_punctuation() -> None:
    names = ["ResNet-18 / CIFAR-100", "resnet18-cifar10", "mlp-cifar100"]
    assert paper.matching_workloads(paper.CLAIMS[0], names) == ["ResNet-18 / CIFAR-100"]


def _setting(df: pd.DataFrame, **match: object) -> dict:
    row = df.loc[(df[list(match)] == pd.Series(match)).all(axis=1)].iloc[0]
    return {c: row[c] for c in SETTING}


def test_conditions_summarise_the_compared_optimizers_in_their_setting(tmp_path: Path) -> None:
    """FNGD ran 3 and 2 epochs (seeds 0, 1; cut to 5 and 7 steps), KFAC 3 (seed 0); the SGD
    run in the same setting and the FNGD run of another workload are not theirs."""
    recs = _epochs("fngd", "fngd-0", (1.0, 1.0, 1.0), max_steps_per_epoch=5)
    recs += _epochs("fngd", "fngd-1", (1.0, 1.0), seed=1, max_steps_per_epoch=7)
    recs += _epochs("kfac", "kfac-0", (1.0, 1.0, 1.0))
    recs.append(_target("kfac", "kfac-0", 0.9, 2.0))
    recs += _steps("kfac", "kfac-0", (1.0,))
    recs += _epochs("sgd", "sgd-0", (1.0,), seed=5, max_steps_per_epoch=50)
    recs += _epochs("fngd", "fngd-9", (1.0,) * 4, seed=9, workload="v", max_steps_per_epoch=90)
    df = _frame(tmp_path, recs)
    got = paper._conditions(df, _setting(df, workload="w"), ("fngd", "kfac"))
    assert got == (
        "size: small; device: cpu-x; data: real; epochs: 2, 3 (cut to at most 7 steps each); "
        "batch size: 4; seeds: 2"
    )
    other = dict(_setting(df, workload="w"), batch_size=8)
    assert paper._conditions(df, other, ("fngd", "kfac")) == "no records"


def test_conditions_flag_synthetic_data_and_leave_out_what_is_unknown(tmp_path: Path) -> None:
    """Synthetic data, no size, batch size 0 (not recorded), no epoch records."""
    recs = _steps("fngd", "fngd-0", (1.0,), data_source="synthetic", batch_size=0, size="")
    df = _frame(tmp_path, recs)
    got = paper._conditions(df, _setting(df, workload="w"), ("fngd", "kfac"))
    assert got == "device: cpu-x; data: SYNTHETIC (stand-in data); epochs: none; seeds: 1"


def _claim_rows(claims: pd.DataFrame, i: int) -> list[dict]:
    return claims.loc[claims["claim"] == paper.CLAIMS[i].text].to_dict("records")


def _paper_side(i: int) -> dict:
    c = paper.CLAIMS[i]
    return {"claim": c.text, "paper": c.paper_value, "paper_conditions": c.paper_conditions}


@pytest.mark.parametrize("records", [False, True])
def test_claims_without_a_matching_workload(tmp_path: Path, records: bool) -> None:
    """One row per claim that says which workload is missing; also without any records and
    with the speed and final tables failed (bare frames)."""
    df = _frame(tmp_path, _epochs("sgd", "sgd-0", (1.0,))) if records else pd.DataFrame()
    claims = paper.compare(df, pd.DataFrame(), pd.DataFrame())
    assert list(claims.columns) == paper.CLAIM_COLUMNS.csv
    assert claims["claim"].tolist() == [c.text for c in paper.CLAIMS]
    for i, terms in enumerate(("resnet18 and cifar100", "transformer and multi30k")):
        (row,) = _claim_rows(claims, i)
        ours = row.pop("ours")
        assert ours.startswith("no matching workload")
        assert terms in ours
        assert row == _paper_side(i) | {"workload": "", "compared": "", "our_conditions": ""}


@pytest.mark.parametrize("failed", [False, True])
def test_claims_with_a_matching_workload_but_no_pair(tmp_path: Path, failed: bool) -> None:
    """Only SGD ran on the claims' workloads: one row each naming the missing baseline."""
    recs = _epochs("sgd", "sgd-0", (1.0,), workload="resnet18-cifar100")
    recs += _epochs("sgd", "sgd-1", (1.0,), workload="transformer-multi30k")
    df = _frame(tmp_path, recs)
    if failed:
        claims = paper.compare(df, pd.DataFrame(), pd.DataFrame())
    else:
        claims = paper.compare(df, _speedup(df), final_values(df))
    for i, (w, name) in enumerate(
        (("resnet18-cifar100", "KFAC"), ("transformer-multi30k", "AdamW"))
    ):
        (row,) = _claim_rows(claims, i)
        ours = row.pop("ours")
        assert ours.startswith(f"no FNGD and {name} results")
        assert row == _paper_side(i) | {"workload": w, "compared": "", "our_conditions": ""}


def test_speed_claim_takes_only_kfac_on_the_claims_workload(tmp_path: Path) -> None:
    """FNGD against KFAC and SGD on ResNet-18/CIFAR-100, and against KFAC on another workload:
    the claim row is FNGD vs KFAC there only. Steps: KFAC 3 s, FNGD 1 s. One epoch each
    (KFAC 6 s, FNGD 10 s): no later epoch, so no projection ("n/a"), a measured 0.60×."""
    w = "resnet18-cifar100"
    recs: list[dict] = []
    for opt, step_s, epoch_s in (("kfac", 3.0, 6.0), ("fngd", 1.0, 10.0), ("sgd", 0.5, 1.0)):
        recs += _steps(opt, f"{opt}-0", (step_s,), workload=w)
        recs += _epochs(opt, f"{opt}-0", (epoch_s,), workload=w)
    for opt in ("kfac", "fngd"):
        recs += _steps(opt, f"{opt}-v", (1.0,), workload="v")
    df = _frame(tmp_path, recs)
    claims = paper.compare(df, _speedup(df), final_values(df))
    (row,) = _claim_rows(claims, 0)
    assert row["compared"] == "fngd vs kfac"
    assert row["workload"] == f"{w} (small)"
    assert row["ours"] == (
        f"PROJECTED {PROJECT_EPOCHS} epochs: n/a; measured 1 epochs: 0.60×; per step: 3.00×"
    )
    assert row["our_conditions"] == (
        "size: small; device: cpu-x; data: real; epochs: 1; batch size: 4; seeds: 1"
    )


def test_metric_claim_without_fngd_metric_and_only_on_its_workload(tmp_path: Path) -> None:
    """On Transformer/Multi30K AdamW has a BLEU score and FNGD none: "not recorded for both",
    with the training time FNGD ÷ AdamW 6 / 4. FNGD and AdamW on another workload are not
    part of the claim."""
    recs: list[dict] = []
    for w in ("transformer-multi30k", "v"):
        recs += _epochs("fngd", "fngd-0", (3.0, 3.0), workload=w)
        recs += _epochs("adamw", "adamw-0", (2.0, 2.0), workload=w)
        recs.append(_record("eval", "adamw", "adamw-0", w, epoch=1, name="bleu", value=10.0))
    df = _frame(tmp_path, recs)
    claims = paper.compare(df, _speedup(df), final_values(df))
    (row,) = _claim_rows(claims, 1)
    assert row["compared"] == "fngd vs adamw"
    assert row["ours"].startswith("metric: not recorded for both; ")
    m = re.search(r"training time FNGD ÷ AdamW: ([0-9.]+)", row["ours"])
    assert m and float(m.group(1)) == pytest.approx(1.5)


# ------------------------------------------------------------------- speedup gaps


def _gap_frame(tmp_path: Path, spec: dict[str, dict[str, tuple[str, ...]]]) -> pd.DataFrame:
    """workload -> optimizer -> record kinds (step, epoch, target); one run each."""
    recs: list[dict] = []
    for w, opts in spec.items():
        for opt, kinds in opts.items():
            run = f"{opt}-{w}"
            if "step" in kinds:
                recs += _steps(opt, run, (1.0,), workload=w)
            if "epoch" in kinds:
                recs += _epochs(opt, run, (1.0, 1.0), workload=w)
            if "epoch0" in kinds:
                recs += _epochs(opt, run, (1.0,), workload=w)
            if "target" in kinds:
                recs.append(_target(opt, run, 0.9, 1.0, workload=w))
    return _frame(tmp_path, recs)


_FULL = ("step", "epoch", "target")


def test_speedup_gaps_without_fngd_or_without_baselines(tmp_path: Path) -> None:
    assert len(speedup_gaps(pd.DataFrame())) == 1
    no_fngd = _gap_frame(tmp_path / "a", {"w": {o: _FULL for o in ("kfac", "sgd", "adamw")}})
    (gap,) = speedup_gaps(no_fngd)
    assert gap.startswith("No FNGD records")
    assert gap.endswith("(optimizers present: sgd, adamw, kfac).")
    (gap,) = speedup_gaps(_gap_frame(tmp_path / "b", {"w": {"fngd": _FULL}}))
    assert gap.startswith("Only FNGD records")


def test_speedup_gaps_per_setting(tmp_path: Path) -> None:
    """a: SGD only; b: everything; c: FNGD and SGD steps only; d: all four, epochs only."""
    four = ("fngd", "kfac", "sgd", "adamw")
    df = _gap_frame(
        tmp_path,
        {
            "a": {"sgd": _FULL},
            "b": {o: _FULL for o in four},
            "c": {"fngd": ("step",), "sgd": ("step",)},
            "d": {o: ("epoch",) for o in four},
        },
    )
    gaps = speedup_gaps(df)
    expected = [
        ("a", "no FNGD records"),
        ("c", "no KFAC, AdamW records"),
        ("c", "no epoch records"),
        ("d", "no step records"),
    ]
    assert len(gaps) == len(expected), gaps
    for gap, (w, what) in zip(gaps, expected, strict=True):
        assert gap.startswith(f"{w} (small) · cpu-x · batch 4: {what}"), gap
    no_target = _gap_frame(tmp_path / "t", {"b": {o: ("step", "epoch") for o in four}})
    (gap,) = speedup_gaps(no_target)
    assert "time to target" in gap


@pytest.mark.parametrize(
    ("fngd", "single"), [(("step", "epoch0"), True), (_FULL, False), (("step",), False)]
)
def test_speedup_gaps_single_fngd_epoch(tmp_path: Path, fngd: tuple, single: bool) -> None:
    """Only when FNGD ran epoch 0 alone (whatever the baselines ran) is its projection
    missing; FNGD with two epochs, or with none, is no such gap."""
    opts = {"fngd": fngd, "kfac": _FULL, "sgd": _FULL, "adamw": _FULL}
    gaps = speedup_gaps(_gap_frame(tmp_path, {"w": opts}))
    flagged = [g for g in gaps if "single epoch" in g]
    assert len(flagged) == int(single), gaps
    if single:
        assert f"{PROJECT_EPOCHS}-epoch" in flagged[0]


# ----------------------------------------------------------------------- the section


@pytest.mark.parametrize("with_targets", [True, False])
def test_speedup_section_tables(tmp_path: Path, with_targets: bool) -> None:
    recs = _target_race()
    if not with_targets:
        recs = [r for r in recs if r["kind"] != "target"]
    recs[0]["max_steps_per_epoch"] = 3
    df = _frame(tmp_path, recs)
    ctx = Context(df, [], [])
    sec = speedup_section(ctx)
    assert (sec.id, sec.title) == ("speedup", "Speedup")
    assert f"first epoch + {PROJECT_EPOCHS - 1} × median later epoch" in sec.intro
    assert sec.missing == speedup_gaps(df)
    assert sec.notes == cut_epochs(df) and sec.notes
    names = ["speedup", "paper_claims"] + (["time_to_target"] if with_targets else [])
    assert [t.name for t in sec.tables] == names
    assert all(t.title and t.note for t in sec.tables)
    sp, claims = sec.tables[:2]
    assert sp.frame is ctx.speed
    assert sp.columns == SPEEDUP.shown and sp.drop_constant == ("fngd",)
    assert claims.columns == paper.CLAIM_COLUMNS.shown
    pd.testing.assert_frame_equal(claims.frame, paper.compare(df, ctx.speed, ctx.final))
    if with_targets:
        assert sec.tables[2].frame is ctx.targets
        assert sec.tables[2].columns == TIME_TO_TARGET.shown


def test_labels_keep_their_case(tmp_path: Path) -> None:
    """Two references that differ in case are two optimisers, each read as written."""
    recs = _epochs("my.py:make", "a", (1.0,)) + _epochs("my.py:MAKE", "b", (1.0,))
    df = _frame(tmp_path, recs)
    assert sorted(set(df["optimizer"])) == ["my.py:MAKE", "my.py:make"]
    assert sorted(set(df["family"])) == ["my.py:MAKE", "my.py:make"]
