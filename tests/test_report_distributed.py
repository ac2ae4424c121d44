"""The "Distributed runs" section on hand-built records whose answers are known.

Records are test fixtures in the runner's schema (a distributed cell: ``world_size`` 2,
``rank_seconds`` per step, ``seconds`` the slowest rank's), never results.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.records import FIELDS
from reports import build_report, load_records
from reports.common import prepare
from reports.context import Context
from reports.topics import distributed


def _step(optimizer: str, world: int, step: int, ranks: list[float], mode: str | None = None):
    rec: dict[str, object] = {k: None for k in FIELDS}
    rec.update(
        run_id=f"w__{optimizer}__s0" + (f"__w{world}" if world > 1 else ""),
        workload="w",
        optimizer=optimizer,
        family=optimizer,
        impl="torch",
        seed=0,
        device="cpu",
        device_name="cpu-x",
        data_source="real",
        batch_size=8,
        size="small",
        attempt=1,
        kind="step",
        step=step,
        epoch=0,
        seconds=max(ranks),
        warmup=False,
        mode=mode,
        rank=0,
        world_size=world,
        time=1.0,
    )
    if world > 1:
        rec["rank_seconds"] = ranks
    return rec


def _records() -> list[dict]:
    out = []
    for i in range(4):
        out.append(_step("sgd", 1, i, [0.010]))
        out.append(_step("sgd", 2, i, [0.004, 0.005]))  # 2x faster; spread 20 %
        out.append(_step("fngd", 1, i, [0.020], mode="inversion"))
        out.append(_step("fngd", 2, i, [0.010, 0.016], mode="inversion"))  # 1.25x; 37.5 %
    return out


def _context(tmp_path) -> Context:
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    df, problems = load_records(tmp_path)
    assert not problems
    return Context(prepare(df), [], [str(tmp_path)])


def test_scaling_pairs_k_processes_with_one(tmp_path):
    scale = distributed.scaling(_context(tmp_path).steps)
    rows = scale.loc[scale["mode"] == "all"].set_index("optimizer")
    assert rows.loc["sgd", "speedup"] == pytest.approx(2.0)
    assert rows.loc["sgd", "efficiency"] == pytest.approx(1.0)
    assert rows.loc["fngd", "speedup"] == pytest.approx(0.020 / 0.016)
    assert set(rows["world_size"]) == {2}
    # FNGD's mode rows are paired too
    inv = scale.loc[(scale["mode"] == "inversion")]
    assert list(inv["optimizer"]) == ["fngd"]


def test_rank_spread_is_slowest_minus_fastest_over_slowest(tmp_path):
    spread = distributed.rank_spread(_context(tmp_path).records).set_index("optimizer")
    assert spread.loc["sgd", "spread_median"] == pytest.approx(0.2)
    assert spread.loc["fngd", "spread_median"] == pytest.approx(0.375)
    assert spread.loc["fngd", "fastest_median_s"] == pytest.approx(0.010)
    assert spread.loc["fngd", "slowest_median_s"] == pytest.approx(0.016)
    assert set(spread["world_size"]) == {2}  # one-process cells have no spread


def test_world_size_is_part_of_the_setting(tmp_path):
    steps = _context(tmp_path).steps
    sgd = steps.loc[(steps["optimizer"] == "sgd") & (steps["mode"] == "all")]
    assert sorted(sgd["world_size"]) == [1, 2]  # never pooled across process counts
    fngd = steps.loc[(steps["optimizer"] == "fngd") & (steps["mode"] == "all")]
    assert list(fngd.sort_values("world_size")["ratio_to_sgd"]) == pytest.approx([2.0, 3.2])


def test_records_without_world_size_are_one_process():
    rec = _step("sgd", 1, 0, [0.01])
    del rec["world_size"]
    df = prepare(pd.DataFrame([rec]))
    assert list(df["world_size"]) == [1]


def test_section_and_page(tmp_path):
    sec = distributed.section(_context(tmp_path))
    assert not sec.missing and not sec.error
    assert {t.name for t in sec.tables} == {"rank_spread", "scaling"}
    assert any("speed-up" in f for f in sec.findings)
    html = build_report([tmp_path], tmp_path / "page.html")
    assert "Distributed runs" in html.read_text()
    assert (tmp_path / "page_scaling.csv").exists()


def test_section_says_what_is_missing_for_one_process(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_step("sgd", 1, 0, [0.01])) + "\n")
    df, _ = load_records(tmp_path)
    sec = distributed.section(Context(prepare(df), [], [str(tmp_path)]))
    assert sec.missing == ["No cell ran on several processes (world_size 1 everywhere)."]
