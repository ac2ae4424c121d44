"""What a preconditioner preconditions: every trainable parameter, and why not where not.

``FNGD(model).coverage()`` (and ``KFAC``'s) is a ``Coverage``: one ``Row`` per trainable
parameter of the model -- its name, the module holding it, that module's type, how many
numbers it has, and the block that preconditions it or the reason it keeps the plain
gradient. ``fraction`` is the preconditioned share of all trainable numbers, the figure
records carry beside an FNGD or KFAC result (a comparison that preconditions 40% of a
Transformer measures something else than one that preconditions all of it).

At construction a preconditioner that leaves any parameter plain says so once, with a
``PlainParametersWarning`` naming them and their share.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

__all__ = ["Coverage", "PlainParametersWarning", "Row", "of", "warn_plain"]


class PlainParametersWarning(UserWarning):
    """Some trainable parameters keep the plain gradient (``coverage()`` says which, why)."""


@dataclass(frozen=True)
class Row:
    """One trainable parameter."""

    parameter: str
    module: str
    type: str
    numel: int
    #: The block that preconditions it, or None ...
    block: str | None
    #: ... and then why it keeps the plain gradient.
    reason: str | None = None

    @property
    def preconditioned(self) -> bool:
        return self.block is not None


class Coverage(Sequence[Row]):
    """Every trainable parameter of a model, preconditioned or the reason it is not."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        return self.rows[i]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    @property
    def plain(self) -> list[Row]:
        """The parameters that keep the plain gradient."""
        return [r for r in self.rows if not r.preconditioned]

    @property
    def numel(self) -> int:
        return sum(r.numel for r in self.rows)

    @property
    def fraction(self) -> float:
        """Preconditioned numbers over all trainable numbers (1.0 for a model with none)."""
        total = self.numel
        return 1.0 if not total else sum(r.numel for r in self.rows if r.preconditioned) / total

    def by_parameter(self) -> dict[str, Row]:
        return {r.parameter: r for r in self.rows}

    def __str__(self) -> str:
        header = ("parameter", "type", "numbers", "preconditioned")
        lines = [
            (r.parameter, r.type, str(r.numel), r.block if r.block else f"no: {r.reason}")
            for r in self.rows
        ]
        widths = [max(len(x) for x in col) for col in zip(header, *lines, strict=False)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
        out = [fmt.format(*header), *(fmt.format(*line) for line in lines)]
        out.append(f"preconditioned: {self.fraction:.1%} of {self.numel} trainable numbers")
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"Coverage({len(self.rows)} parameters, fraction={self.fraction:.3f})"


def of(model: nn.Module, blocks: Mapping[str, str], reasons: Mapping[str, str]) -> Coverage:
    """The coverage of ``model``'s trainable parameters: ``blocks`` maps the names of the
    modules that are blocks to their block names, ``reasons`` every other module that holds
    trainable parameters to why it keeps the plain gradient."""
    holders = dict(model.named_modules())
    rows = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        module = holder(name)
        block = blocks.get(module)
        reason = None if block is not None else reasons.get(module, "no block")
        rows.append(Row(name, module, type(holders[module]).__name__, p.numel(), block, reason))
    return Coverage(rows)


def holder(parameter: str) -> str:
    """The module that holds ``parameter`` (for a parametrised tensor's original, the
    parametrised module, not the parametrisation's container)."""
    head, sep, _ = parameter.partition(".parametrizations.")
    if sep or parameter.startswith("parametrizations."):
        return head if sep else ""
    return parameter.rpartition(".")[0]


def warn_plain(coverage: Coverage, who: str, *, stacklevel: int = 3) -> None:
    """One ``PlainParametersWarning`` naming the plain parameters and their share, if any."""
    plain = coverage.plain
    if not plain:
        return
    share = sum(r.numel for r in plain) / max(coverage.numel, 1)
    names = ", ".join(r.parameter for r in plain[:6])
    more = f" and {len(plain) - 6} more" if len(plain) > 6 else ""
    warnings.warn(
        f"{who} leaves {len(plain)} trainable parameter(s), {share:.1%} of the trainable "
        f"numbers, with the plain gradient: {names}{more}; coverage() says why",
        PlainParametersWarning,
        stacklevel=stacklevel,
    )
