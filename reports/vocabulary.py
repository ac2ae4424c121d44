"""How the report names, orders and colours optimiser families and phases.

The names themselves belong to the code that writes the records: the families to the
optimiser factory (``fngd.optimizers.DEFAULTS``; the labels behind them in
``bench.presets.VARIANTS``), the phases to ``fngd.phases``. This module only adds the report's
presentation, and stays free of torch so that reading records never imports it;
tests/test_report_vocabulary.py fails when the two disagree (a family or phase without an
order, a display name or a colour here, or a name here that the code no longer writes).
"""

from __future__ import annotations

#: Optimiser families in display order (tables, legends); others follow alphabetically.
FAMILIES = ("sgd", "adamw", "kfac", "ngd", "fngd")
FNGD = "fngd"
#: How family names are written in prose.
DISPLAY = {"sgd": "SGD", "adamw": "AdamW", "kfac": "KFAC", "ngd": "NGD", "fngd": "FNGD"}
#: Each family's colour: an index into seaborn's 10-colour "colorblind" palette.
FAMILY_COLORS = {"sgd": 0, "adamw": 4, "kfac": 1, "ngd": 3, "fngd": 2}

#: Phase order of tables and stacked bars (docs/ARCHITECTURE.md, "Phases"): the step's own
#: phases around the optimisers' phases, ``update`` last.
PHASE_ORDER = (
    "data",
    "forward",
    "backward",
    "fngd/gram",
    "fngd/solve",
    "fngd/weighted_sum",
    "kfac/factors",
    "kfac/inverse",
    "kfac/precondition",
    "kfac-pytorch/step",
    "update",
)
#: The rest of the median step that no phase timed (a stacked bar of its own).
OTHER = "other (untimed)"
#: Each phase's colour in the stacked bars: greys and blues for the step's own phases, greens
#: for FNGD, oranges for KFAC.
PHASE_COLORS = {
    "data": "#c7c7c7",
    "forward": "#9ecae1",
    "backward": "#4292c6",
    "update": "#08519c",
    "fngd/gram": "#a1d99b",
    "fngd/solve": "#41ab5d",
    "fngd/weighted_sum": "#006d2c",
    "kfac/factors": "#fdae6b",
    "kfac/inverse": "#e6550d",
    "kfac/precondition": "#a63603",
    "kfac-pytorch/step": "#7f2704",
    OTHER: "#f0f0f0",
}


def display_name(family: str) -> str:
    return DISPLAY.get(family, family)


def family_rank(name: str) -> tuple[int, str]:
    """Sort key: known families in display order, then the others alphabetically."""
    return (FAMILIES.index(name), "") if name in FAMILIES else (len(FAMILIES), str(name))


def phase_rank(name: str) -> tuple[int, str]:
    """Sort key: phases in ``PHASE_ORDER``, unknown phases alphabetically, ``OTHER`` last."""
    if name == OTHER:
        return (len(PHASE_ORDER) + 1, "")
    return (PHASE_ORDER.index(name), "") if name in PHASE_ORDER else (len(PHASE_ORDER), name)


# -- FNGD's design space (reports/topics/design_space.py) ---------------------------------
#: Coefficient scope (``FNGD(scope=...)``) and sharing (``share``; NGD shares nothing), in
#: table order, and how they are written.
SCOPES = ("layer", "network")
SHARES = ("sample", "iteration", "none")
SHARE_DISPLAY = {"sample": "by sample", "iteration": "by iteration", "none": "none (NGD)"}
#: Damping strategies (``damping_mode``, ``normalize``, a schedule), in table order.
DAMPINGS = ("constant", "relative", "normalised", "schedule")
#: Each (scope, sharing) design's colour in the staleness figure: an index into seaborn's
#: 10-colour "colorblind" palette; the damping strategy is the line's dash pattern.
DESIGN_COLORS = {
    ("layer", "sample"): 2,
    ("layer", "iteration"): 8,
    ("layer", "none"): 3,
    ("network", "sample"): 0,
    ("network", "iteration"): 9,
    ("network", "none"): 5,
}
DAMPING_DASHES: dict[str, tuple[float, ...]] = {
    "constant": (),
    "relative": (4.0, 2.0),
    "normalised": (1.0, 1.5),
    "schedule": (6.0, 2.0, 1.0, 2.0),
}
