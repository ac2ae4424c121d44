"""The records' schema stays put: a tiny real run writes the kinds and fields in the fixture.

Every optimiser label of the quick preset trains ``mlp-digits`` for two cut epochs (its
target lowered so that a ``target`` record is written), the runner's overhead is measured
once and one short profile is taken; for each record ``kind`` the set of field names is
compared with ``tests/fixtures/record_schema.json``. A deliberate schema change updates
the fixture: ``PYTHONPATH=$PWD python -m tests.test_record_schema --update``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench import workloads
from bench.campaign.sweep import make_cells, run_sweep
from bench.cell import CellSpec
from bench.host.env import cpu_threads
from bench.measure.overhead import measure_cell_overhead
from bench.measure.profile import profile_run
from bench.records import RecordWriter, read_dir, read_jsonl

FIXTURE = Path(__file__).with_name("fixtures") / "record_schema.json"
WORKLOAD = "mlp-digits"
OPTIMIZERS = ("sgd", "adamw", "kfac", "ngd", "fngd")


def _reachable(name: str, **kwargs: Any) -> workloads.Workload:
    """The registered workload with a target every run reaches (so ``target`` is written)."""
    w = workloads.get(name, **kwargs)
    w.target = 0.0
    return w


def schema_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"kinds": [...], "fields": {kind: [field, ...]}}``, everything sorted."""
    fields: dict[str, set[str]] = {}
    for r in records:
        fields.setdefault(r["kind"], set()).update(r)
    return {"kinds": sorted(fields), "fields": {k: sorted(v) for k, v in sorted(fields.items())}}


def tiny_run_schema(out: Path) -> dict[str, Any]:
    """The schema of a tiny run's records written under ``out``."""
    cells = make_cells([WORKLOAD], OPTIMIZERS, [0], epochs=2, max_steps_per_epoch=2,
                       preset="schema")
    result = run_sweep(cells, out / "run", device="cpu", workload_factory=_reachable)
    assert set(result.statuses.values()) == {"finished"}, result.statuses
    with RecordWriter(out / "run" / "overhead.jsonl") as writer:
        measure_cell_overhead(CellSpec(WORKLOAD, "sgd"), writer, device="cpu", steps=2,
                              pairs=2, budget_s=1.0)
    profiled = profile_run(WORKLOAD, "sgd", out_dir=out / "profile", device="cpu", steps=1)
    return schema_of(read_dir(out / "run") + read_jsonl(profiled.records_path))


def _diff(expected: dict[str, Any], actual: dict[str, Any]) -> str:
    lines = []
    for kind in sorted(set(expected["kinds"]) | set(actual["kinds"])):
        if kind not in actual["kinds"]:
            lines.append(f"kind {kind!r} is no longer written")
            continue
        if kind not in expected["kinds"]:
            lines.append(f"new kind {kind!r}")
            continue
        old, new = set(expected["fields"][kind]), set(actual["fields"][kind])
        if old - new:
            lines.append(f"{kind}: fields gone: {sorted(old - new)}")
        if new - old:
            lines.append(f"{kind}: new fields: {sorted(new - old)}")
    return "\n".join(lines)


def test_tiny_run_writes_the_fixture_schema(tmp_path: Path) -> None:
    expected = json.loads(FIXTURE.read_text())
    with cpu_threads(1, "cpu"):  # a tiny model: one thread is fastest
        actual = tiny_run_schema(tmp_path)
    diff = _diff(expected, actual)
    assert not diff, (
        f"the records' schema differs from {FIXTURE.name}:\n{diff}\n"
        "(a deliberate change: python -m tests.test_record_schema --update)"
    )


if __name__ == "__main__":
    if "--update" not in sys.argv[1:]:
        sys.exit("usage: python -m tests.test_record_schema --update")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, cpu_threads(1, "cpu"):
        schema = tiny_run_schema(Path(tmp))
    FIXTURE.write_text(json.dumps(schema, indent=1) + "\n")
    print(f"written: {FIXTURE}")
