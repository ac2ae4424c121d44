"""The README's "Supported layers" table is what FNGD does: every row is built and checked
against ``FNGD.coverage()`` (and the exact float64 tests, tests/test_fngd_layers.py)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

from fngd import FNGD
from fngd.coverage import PlainParametersWarning

README = Path(__file__).resolve().parents[1] / "README.md"


def table_rows() -> list[tuple[str, str, str]]:
    """``(layer, example, what FNGD does)`` of each row of the table."""
    text = README.read_text()
    section = text.split("## Supported layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("layer", "---"):
            rows.append((cells[0], cells[1], cells[2]))
    return rows


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(tokens))


#: Examples that are not one constructor call: the model each stands for, and FNGD's options.
SPECIAL = {
    "`nn.Linear(4, 4)` used twice": (lambda: nn.Linear(4, 4), {}),
    "`nn.Linear` whose weight is an `nn.Embedding`'s": (Tied, {}),
    "`nn.Linear(4, 3)` in `skip_layers`": (lambda: nn.Linear(4, 3), {"skip_layers": ["^0$"]}),
}
NAMESPACE = {"nn": nn, "parametrizations": parametrizations}


def build(example: str) -> tuple[nn.Module, dict]:
    if example in SPECIAL:
        make, options = SPECIAL[example]
        return nn.Sequential(make()), options
    code = re.fullmatch(r"`([^`]+)`", example)
    assert code, f"an example must be one constructor call or listed in SPECIAL: {example}"
    return nn.Sequential(eval(code.group(1), NAMESPACE)), {}


ROWS = table_rows()


def test_the_table_has_both_outcomes_and_the_error() -> None:
    outcomes = {what.split(",")[0] for _, _, what in ROWS}
    assert {"natural gradient", "plain gradient"} <= outcomes
    assert any(what.startswith("`ValueError`") for _, _, what in ROWS)
    assert len(ROWS) >= 12


@pytest.mark.parametrize(("layer", "example", "what"), ROWS, ids=[r[1] for r in ROWS])
def test_each_row_is_what_coverage_says(layer: str, example: str, what: str) -> None:
    model, options = build(example)
    if what.startswith("`ValueError`"):
        with pytest.raises(ValueError, match="its weight is not a parameter"):
            FNGD(model, native="off", **options)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pre = FNGD(model, native="off", **options)
    coverage = pre.coverage()
    plain_warnings = [w for w in caught if issubclass(w.category, PlainParametersWarning)]
    assert len(coverage) == sum(p.requires_grad for p in model.parameters())
    if what == "natural gradient":
        assert coverage.fraction == 1.0 and pre.blocks, str(coverage)
        assert not plain_warnings
    else:
        assert what.startswith("plain gradient")
        assert coverage.fraction == 0.0 and not pre.blocks, str(coverage)
        assert all(row.reason for row in coverage)
        assert len(plain_warnings) == 1
