"""How the report names, orders and colours optimiser families, labels and phases.

The names themselves belong to the code that writes the records: the families to the
optimiser factory (``fngd.optimizers.DEFAULTS``), read here, with their order and the damping
strategies, from the labels behind them (``bench.labels``, torch-free), the phases to
``fngd.phases``. This module only adds the report's presentation, and stays free of torch so
that reading records never imports it;
tests/test_report_vocabulary.py fails when the two disagree (a family or phase without an
order, a display name or a colour here, or a name here that the code no longer writes).
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Iterator

import bench.labels
from bench.labels import VARIANTS

#: Optimiser families in display order (tables, legends): the order in which the labels'
#: table (``bench.labels.VARIANTS``) names them; others follow alphabetically.
FAMILIES = tuple(dict.fromkeys(v.family for v in VARIANTS.values()))
FNGD = "fngd"
#: How family names are written in prose.
DISPLAY = {
    "sgd": "SGD",
    "adamw": "AdamW",
    "kfac": "KFAC",
    "ngd": "NGD",
    "fngd": "FNGD",
    "muon": "Muon",
    "soap": "SOAP",
    "psgd-kron": "PSGD-Kron",
    "sf-adamw": "Schedule-Free AdamW",
}
#: Each family's hue (seaborn's "colorblind" palette; NGD crimson, apart from KFAC's orange):
#: hues far apart so that a family's labels, drawn in shades of it, never meet another's.
#: The rivals take the hues between them: violet, indigo, olive, cyan.
FAMILY_COLORS = {
    "sgd": "#0173b2",
    "adamw": "#cc78bc",
    "kfac": "#de8f05",
    "ngd": "#c0392b",
    "fngd": "#029e73",
    "muon": "#8e44ad",
    "soap": "#3f3fbf",
    "psgd-kron": "#9a8f00",
    "sf-adamw": "#17becf",
}
#: Families outside the suite (a plugin's, a reference, old records) take these, in order of
#: first appearance; past the last, hues a golden-ratio turn apart (``spare_colors``), so two
#: such families never share one.
SPARE_COLORS = ("#ca9161", "#56b4e9", "#ece133", "#fbafe4")
GOLDEN_TURN = 0.618033988749895
#: Lightness of a family's n-th label (its n-th shade): the first at ``SHADE_BASE``, the
#: others darker and lighter in turn, at least 0.06 apart; past the last step the steps
#: repeat with the hue turned by ``SHADE_TURN`` each time round.
SHADE_BASE = 0.38
SHADE_STEPS = (0.0, -0.12, 0.14, 0.24, -0.06, 0.07, -0.18, 0.31)
SHADE_TURN = 0.06
#: At most this saturation, so that the light shades stay readable on white.
SHADE_SATURATION = 0.8

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


def family_of(label: str | None) -> str:
    """The family behind an optimizer label: its variant's (bench/labels.py), else the part
    before the first ``-`` when that is a family (``kfac-inv1`` -> ``kfac``), else itself."""
    if label is None:
        return ""
    label = str(label)
    if label in VARIANTS:
        return VARIANTS[label].family
    head = label.split("-", 1)[0]
    return head if head in FAMILIES else label


def spare_colors() -> Iterator[str]:
    """The colours of families outside the suite: ``SPARE_COLORS``, then endless hues."""
    yield from SPARE_COLORS
    hue = 0.1
    while True:
        hue = (hue + GOLDEN_TURN) % 1.0
        r, g, b = colorsys.hls_to_rgb(hue, SHADE_BASE + 0.1, SHADE_SATURATION)
        yield "#" + "".join(f"{round(c * 255):02x}" for c in (r, g, b))


def shade(base: str, n: int) -> str:
    """The ``n``-th shade of ``base`` (``#rrggbb``): its saturation (capped), the lightness of
    ``SHADE_STEPS``, its hue (turned when ``n`` is past the steps)."""
    r, g, b = (int(base[i : i + 2], 16) / 255 for i in (1, 3, 5))
    h, _l, s = colorsys.rgb_to_hls(r, g, b)
    turn, step = divmod(n, len(SHADE_STEPS))
    hue = (h - SHADE_TURN * turn) % 1.0
    rgb = colorsys.hls_to_rgb(hue, SHADE_BASE + SHADE_STEPS[step], min(s, SHADE_SATURATION))
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def label_colors(labels: Iterable[str]) -> dict[str, str]:
    """A colour per optimizer label, the same in every figure: the family's hue, and the
    label's shade by its place among the family's labels in ``bench.labels.VARIANTS``.

    Labels the registry does not know (old records), and a label shown once per
    implementation (``kfac (builtin)``, ``kfac (kfac-pytorch)``: the label, a space, the
    rest), take the family's next free shades, in alphabetical order.
    """
    labels = list(dict.fromkeys(str(x) for x in labels))
    known = {f: [v for v in VARIANTS if VARIANTS[v].family == f] for f in FAMILIES}
    taken: dict[str, set[int]] = {}
    out: dict[str, str] = {}
    spare = spare_colors()
    bases = dict(FAMILY_COLORS)
    later = []
    for display in labels:
        label = display.split(" ", 1)[0]
        family = family_of(label)
        if family not in bases:
            bases[family] = next(spare)
        order = known.get(family, [])
        n = order.index(label) if label in order else None
        if n is None or n in taken.get(family, set()):
            later.append((family, display))
            continue
        taken.setdefault(family, set()).add(n)
        out[display] = shade(bases[family], n)
    for family, display in sorted(later):
        used = taken.setdefault(family, set())
        n = next(i for i in range(len(known.get(family, [])), 10**6) if i not in used)
        used.add(n)
        out[display] = shade(bases[family], n)
    return {x: out[x] for x in labels}


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
#: The damping strategies' names (``bench.labels.DAMPINGS``), in table order.
DAMPINGS = tuple(d.name for d in bench.labels.DAMPINGS)
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
