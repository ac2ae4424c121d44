"""The interleaved step-ratio command measures what it says and writes it down."""

from __future__ import annotations

import json

from bench.cli import main
from bench.step_ratio import format_result, measure


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
