"""The report's ratios on hand-built records whose answers are known.

Every ratio in the speedup table is baseline time ÷ FNGD time (above 1: FNGD is faster);
time to target is taken at the highest target both optimizers reached; the paper-claims
table quotes those ratios, and the training time FNGD ÷ AdamW. The records are test fixtures
in the runner's schema (bench/records.py, docs/ARCHITECTURE.md "Records"), never results.
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
from reports.common import prepare
from reports.topics.convergence import final_values
from reports.topics.epoch_time import PROJECT_EPOCHS, epoch_times
from reports.topics.speedup import speedup, time_to_target
from reports.topics.step_time import step_times

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
