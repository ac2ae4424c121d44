"""``coverage()``: every trainable parameter, preconditioned or the reason it is not, one
warning at construction, and the share that records keep."""

from __future__ import annotations

import warnings

import pytest
from torch import nn
from torch.nn.utils import parametrizations

import fngd
from fngd import FNGD, KFAC
from fngd.coverage import PlainParametersWarning


def quiet(make, *args, **kwargs):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlainParametersWarning)
        return make(*args, **kwargs)


def test_mixed_model_rows_and_fraction() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2, bias=False))
    model[0].weight.requires_grad_(False)
    coverage = quiet(FNGD, model, native="off").coverage()
    rows = coverage.by_parameter()
    assert list(rows) == ["0.bias", "1.weight", "1.bias", "2.weight"]  # trainable ones only
    assert rows["2.weight"].block == "2" and rows["2.weight"].numel == 6
    assert "frozen" in rows["0.bias"].reason
    assert rows["1.weight"].reason.startswith("normalisation layer")
    assert coverage.fraction == pytest.approx(6 / (3 + 3 + 3 + 6))
    assert [r.parameter for r in coverage.plain] == ["0.bias", "1.weight", "1.bias"]
    assert "preconditioned: 40.0% of 15 trainable numbers" in str(coverage)


def test_one_warning_names_the_plain_parameters_and_their_share() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4))
    with pytest.warns(PlainParametersWarning) as caught:
        FNGD(model, native="off")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "1 trainable parameter(s), 66.7% of the trainable numbers" in message
    assert "0.weight" in message and "coverage() says why" in message


def test_a_fully_covered_model_warns_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PlainParametersWarning)
        pre = FNGD(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Conv1d(1, 1, 1)), native="off")
    assert pre.coverage().fraction == 1.0


@pytest.mark.parametrize("make", [FNGD, KFAC])
def test_attention_is_plain_and_its_out_proj_is_no_block(make) -> None:  # type: ignore[no-untyped-def]
    """The fused attention never runs out_proj's forward: it must not be listed as a block
    (it used to be, and got the plain gradient)."""
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    pre = quiet(make, layer)
    names = [b.name for b in pre.blocks] if make is FNGD else list(pre.blocks)
    assert names == ["linear1", "linear2"]
    rows = pre.coverage().by_parameter()
    for p in ("self_attn.in_proj_weight", "self_attn.out_proj.weight"):
        assert rows[p].reason.startswith("fused attention"), p
    assert rows["linear1.weight"].preconditioned
    linears = 2 * 8 * 16 + 16 + 8
    assert pre.coverage().fraction == pytest.approx(linears / sum(r.numel for r in rows.values()))


def test_a_tied_weight_is_no_block_for_either_module() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.head = nn.Embedding(10, 4), nn.Linear(4, 10)
            self.head.weight = self.embed.weight

    pre = quiet(FNGD, Tied(), native="off")
    assert pre.blocks == []
    rows = pre.coverage().by_parameter()
    assert list(rows) == ["embed.weight", "head.bias"]  # the tied weight once
    assert "shared with 'embed'" in rows["head.bias"].reason


def test_parametrised_originals_are_preconditioned_by_their_block() -> None:
    model = nn.Sequential(parametrizations.weight_norm(nn.Linear(4, 3)))
    rows = FNGD(model, native="off").coverage().by_parameter()
    assert {r.block for r in rows.values()} == {"0"}
    assert set(rows) == {
        "0.bias",
        "0.parametrizations.weight.original0",
        "0.parametrizations.weight.original1",
    }


def test_kfac_declares_what_it_leaves_out() -> None:
    model = nn.Sequential(
        nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), parametrizations.weight_norm(nn.Linear(8, 3))
    )
    coverage = quiet(KFAC, model).coverage()
    rows = coverage.by_parameter()
    assert "not supported by the built-in KFAC" in rows["0.weight"].reason
    assert rows["2.parametrizations.weight.original0"].reason.startswith("a parametrised weight")
    assert coverage.fraction == 0.0


@pytest.mark.parametrize("name", ["fngd", "ngd", "kfac"])
def test_records_keep_the_preconditioned_share(name: str) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = quiet(fngd.build, name, model)
    assert opt.hparams["preconditioned"] == pytest.approx(20 / 28)
