"""The interleaved step-ratio command measures what it says and writes it down."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.measure.step_ratio import format_result, measure
from bench.measure.step_variants import HeldStep

#: Seconds a stand-in step of each variant takes on the fake clock below.
_COST = {"sgd": 2e-3, "fngd-weighted-sum": 3e-3, "fngd-inversion": 8e-3}


class _FakeClock:
    """A clock that only moves when a step advances it, so step times are exact."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> _FakeClock:
    """Each held step runs for real (so its phase is still checked), then advances the
    fake clock by its variant's cost: 100× on the priming step and the first (warm-up)
    round, 10× on the last round, so a mean or a timed warm-up round would show in the
    medians."""
    clock = _FakeClock()
    real_step = HeldStep.step
    calls: dict[str, int] = {}

    def step(self: HeldStep) -> None:
        real_step(self)
        label = self.variant.label
        n = calls[label] = calls.get(label, 0) + 1
        clock.now += _COST[label] * (100.0 if n <= 2 else 10.0 if n == 5 else 1.0)

    monkeypatch.setattr(HeldStep, "step", step)
    return clock


def test_measure_holds_each_variant_in_its_phase() -> None:
    result = measure(
        "mlp-digits", ("sgd", "fngd-weighted-sum", "fngd-inversion"), rounds=3, warmup=1
    )
    v = result["variants"]
    assert result["baseline"] == "sgd" and v["sgd"]["ratio_to_baseline"] == 1.0
    assert all(r["median_s"] > 0 for r in v.values())
    assert result["data_source"] == "real" and result["threads"] == 1
    assert v["fngd-weighted-sum"]["hparams"]["damping"] > 0
    assert "fngd-inversion" in format_result(result)


def test_cli_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "ratio.json"
    code = main(["ratio", "--workload", "mlp-digits", "--variants", "sgd", "adamw",
                 "--rounds", "2", "--device", "cpu", "--out", str(out)])
    assert code == 0
    (result,) = json.loads(out.read_text())
    assert set(result["variants"]) == {"sgd", "adamw"}
    assert "interleaved" in capsys.readouterr().out


def test_cli_unknown_variant_exits_2(capsys) -> None:
    assert main(["ratio", "--variants", "sgd", "lbfgs"]) == 2
    assert "lbfgs" in capsys.readouterr().err


def test_ratio_to_sgd_is_each_median_over_sgds(fake_clock: _FakeClock) -> None:
    """Stand-in costs 8 ms, 2 ms and 3 ms: medians exact, ratios to SGD 4, 1 and 1.5."""
    result = measure(
        "mlp-digits",
        ("fngd-inversion", "sgd", "fngd-weighted-sum"),
        rounds=3,
        warmup=1,
        timer=fake_clock,
    )
    assert result["baseline"] == "sgd"
    v = result["variants"]
    for label, cost in _COST.items():
        assert v[label]["median_s"] == pytest.approx(cost, rel=1e-9), label
    assert v["fngd-inversion"]["ratio_to_baseline"] == pytest.approx(4.0, rel=1e-9)
    assert v["fngd-weighted-sum"]["ratio_to_baseline"] == pytest.approx(1.5, rel=1e-9)
    assert v["sgd"]["ratio_to_baseline"] == pytest.approx(1.0, rel=1e-9)
    assert "4.000" in format_result(result)


def test_ratio_without_sgd_is_to_the_first_variant(fake_clock: _FakeClock) -> None:
    """No SGD: the first variant (weighted sum, 3 ms) is the baseline; inversion is 8/3."""
    result = measure(
        "mlp-digits", ("fngd-weighted-sum", "fngd-inversion"), rounds=3, warmup=1, timer=fake_clock
    )
    assert result["baseline"] == "fngd-weighted-sum"
    ratio = result["variants"]["fngd-inversion"]["ratio_to_baseline"]
    assert ratio == pytest.approx(8.0 / 3.0, rel=1e-9)


def test_rounds_shuffle_the_order_so_no_variant_keeps_one_neighbour(monkeypatch) -> None:
    """Each round runs every variant once, in an order that changes: a fixed rotation would
    time each variant right after the same neighbour (and its leftovers in the caches)."""
    seen: list[str] = []
    real_step = HeldStep.step

    def step(self: HeldStep) -> None:
        real_step(self)
        seen.append(self.variant.label)

    monkeypatch.setattr(HeldStep, "step", step)
    variants = ("sgd", "fngd-weighted-sum", "fngd-inversion")
    measure("mlp-digits", variants, rounds=12, warmup=0)
    rounds = [seen[i : i + 3] for i in range(3, len(seen), 3)]  # after the 3 priming steps
    assert len(rounds) == 12 and all(sorted(r) == sorted(variants) for r in rounds)
    before_sgd = {r[r.index("sgd") - 1] for r in rounds if r.index("sgd") > 0}
    assert len(before_sgd) == 2  # both other variants precede SGD in some round
    assert len({tuple(r) for r in rounds}) >= 3
