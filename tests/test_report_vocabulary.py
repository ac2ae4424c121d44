"""The report's vocabulary and schema stay in step with the code that writes the records.

The report names, orders and colours optimiser families and phases (reports/vocabulary.py)
and reads the record schema by the names bench/records/schema.py declares. These tests fail when a
family or phase is added, renamed or removed on one side only.
"""

from __future__ import annotations

import colorsys
import itertools
import math
import re

import pytest

from bench import records
from bench.labels import NGD_LABELS, RIVALS, VARIANTS
from fngd import phases
from fngd.optimizers import DEFAULTS
from reports import load, vocabulary


def test_every_family_has_an_order_a_display_name_and_a_colour():
    assert set(vocabulary.FAMILIES) == set(DEFAULTS) | set(RIVALS)
    assert len(set(vocabulary.FAMILIES)) == len(vocabulary.FAMILIES)
    assert set(vocabulary.DISPLAY) == set(vocabulary.FAMILIES)
    assert set(vocabulary.FAMILY_COLORS) == set(vocabulary.FAMILIES)
    colours = list(vocabulary.FAMILY_COLORS.values())
    assert len(set(colours)) == len(colours)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours)
    assert vocabulary.FNGD in vocabulary.FAMILIES


@pytest.mark.parametrize("label", list(VARIANTS))
def test_every_label_belongs_to_a_known_family(label):
    variant = VARIANTS[label]
    assert variant.family in vocabulary.FAMILIES
    # records without a ``family`` field: the report derives it from the label
    assert vocabulary.family_of(label) == variant.family


def _rgb(colour: str) -> tuple[float, ...]:
    return tuple(int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))


def _closest(colours: dict[str, str]) -> float:
    """The smallest RGB distance (0..sqrt 3) between two of ``colours``."""
    values = [_rgb(c) for c in colours.values()]
    return min(math.dist(a, b) for a, b in itertools.combinations(values, 2))


def test_every_label_has_its_own_colour_in_its_familys_hue():
    colours = vocabulary.label_colors(VARIANTS)
    assert set(colours) == set(VARIANTS)
    assert len(set(colours.values())) == len(colours)
    assert _closest(colours) > 0.1, colours  # told apart, not just different
    for label, colour in colours.items():  # the family's hue, turned once per 8 shades
        family = VARIANTS[label].family
        turns = [v for v in VARIANTS if VARIANTS[v].family == family].index(label) // len(
            vocabulary.SHADE_STEPS
        )
        want = colorsys.rgb_to_hls(*_rgb(vocabulary.FAMILY_COLORS[family]))[0]
        want = (want - vocabulary.SHADE_TURN * turns) % 1.0
        hue = colorsys.rgb_to_hls(*_rgb(colour))[0]
        assert hue == pytest.approx(want, abs=0.01), label


def test_a_labels_colour_does_not_depend_on_the_others_shown():
    everything = vocabulary.label_colors(VARIANTS)
    for label in VARIANTS:
        assert vocabulary.label_colors([label])[label] == everything[label]
    assert vocabulary.label_colors(reversed(list(VARIANTS))) == everything


def test_new_labels_and_implementations_get_distinct_colours_without_editing_the_vocabulary():
    """A family with many more labels than today (labels the registry does not know yet, as
    in records from a newer branch), and a label shown once per implementation."""
    new = [f"fngd-new{i}" for i in range(6)] + ["ngd-net-x", "sgd-x", "mystery"]
    shown = [*VARIANTS, *new, "kfac (builtin)", "kfac (kfac-pytorch)"]
    colours = vocabulary.label_colors(shown)
    assert list(colours) == shown
    assert len(set(colours.values())) == len(colours)
    assert _closest(colours) > 0.1, colours


def test_every_phase_has_an_order_and_a_colour():
    assert set(vocabulary.PHASE_ORDER) == set(phases.ALL)
    assert len(set(vocabulary.PHASE_ORDER)) == len(vocabulary.PHASE_ORDER)
    for group in (phases.COMMON, phases.FNGD, phases.KFAC, phases.KFAC_PYTORCH):
        in_report = [p for p in vocabulary.PHASE_ORDER if p in group]
        assert in_report == list(group), group
    assert set(vocabulary.PHASE_COLORS) == set(vocabulary.PHASE_ORDER) | {vocabulary.OTHER}
    colours = list(vocabulary.PHASE_COLORS.values())
    assert len(set(colours)) == len(colours)
    assert vocabulary.OTHER not in phases.ALL


def test_phase_rank_follows_the_order():
    ranked = sorted(
        [*reversed(vocabulary.PHASE_ORDER), vocabulary.OTHER, "zz/unknown"],
        key=vocabulary.phase_rank,
    )
    assert ranked == [*vocabulary.PHASE_ORDER, "zz/unknown", vocabulary.OTHER]


def test_schema_groups_are_consistent():
    assert len(set(records.FIELDS)) == len(records.FIELDS)
    assert set(records.KIND_FIELDS) <= set(records.KINDS)
    assert set(records.TRAINING_KINDS) <= set(records.KINDS)
    assert set(records.FAILED_STATUSES) <= set(records.CELL_STATUSES)
    extras = {f for fields in records.KIND_FIELDS.values() for f in fields}
    assert not extras & set(records.FIELDS)
    assert not set(records.OPTIONAL_FIELDS) & (extras | set(records.FIELDS))


def test_the_report_reads_only_declared_fields():
    extras = {f for fields in records.KIND_FIELDS.values() for f in fields}
    assert set(load.KIND_COLUMNS) <= extras
    read = set(load.COLUMNS) - {"hparams_json", "source"}
    assert read <= set(records.FIELDS) | extras


@pytest.mark.parametrize("label", list(NGD_LABELS))
def test_every_design_label_has_a_colour_and_a_dash(label):
    """The staleness figure colours a cell by scope x sharing and dashes it by damping."""
    from reports.topics.design_space import design_of

    variant = VARIANTS[label]
    design = design_of({**DEFAULTS[variant.family], **variant.overrides}, variant.family)
    assert design["scope"] in vocabulary.SCOPES and design["sharing"] in vocabulary.SHARES
    assert (design["scope"], design["sharing"]) in vocabulary.DESIGN_COLORS
    assert design["damping_strategy"] in vocabulary.DAMPINGS
    assert design["damping_strategy"] in vocabulary.DAMPING_DASHES


def test_design_vocabulary_is_consistent():
    assert set(vocabulary.SHARE_DISPLAY) == set(vocabulary.SHARES)
    assert set(vocabulary.DAMPING_DASHES) == set(vocabulary.DAMPINGS)
    colours = list(vocabulary.DESIGN_COLORS.values())
    assert len(set(colours)) == len(colours) and all(0 <= c < 10 for c in colours)
    assert set(vocabulary.DESIGN_COLORS) == {
        (s, h) for s in vocabulary.SCOPES for h in vocabulary.SHARES
    }


def test_families_outside_the_suite_never_share_a_colour() -> None:
    """Plugins' and references' families: one colour each, however many there are."""
    outside = [f"plugin-{i}" for i in range(3 * len(vocabulary.SPARE_COLORS))]
    colors = vocabulary.label_colors(["sgd", "fngd", *outside])
    assert len(set(colors.values())) == len(colors)
