"""The example plugin (examples/fngd-bench-examples), installed and run as a user would.

It is pip-installed into a temporary folder (``--target``: a site directory of its own, so
the test environment is left as it was) and the console commands run with that folder on
``PYTHONPATH``: ``fngd-bench list`` shows its workloads and optimiser with their origin,
``run`` trains them beside the suite's own through the entry points and through the
``module:function`` and ``path/to/file.py:attr`` forms, and ``report`` reads the records.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.records import read_dir
from tests.documented import REPO, install_into

EXAMPLE = REPO / "examples" / "fngd-bench-examples"
DIST = "fngd-bench-examples 0.1.0"
QUICK = ("--seeds", "0", "--no-overhead", "--no-progress", "--no-warm-start")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed, not editable, into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        install_into(EXAMPLE, target),
        check=True,
        capture_output=True,
        text=True,
    )
    return target


def fngd_bench(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def cells(out: Path) -> dict[str, dict]:
    """run_id -> the cell's started record, with ``evals``: ``{(epoch, name): value}`` of its
    evaluations (read as the report reads them)."""
    found: dict[str, dict] = {}
    for record in read_dir(out):
        if record.get("kind") == "cell" and record.get("name") == "started":
            found.setdefault(record["run_id"], {"evals": {}}).update(record)
    for record in read_dir(out):
        if record.get("kind") == "eval":
            key = (record["epoch"], record["name"])
            found[record["run_id"]]["evals"][key] = record["value"]
    return found


def test_list_shows_the_plugin_beside_the_suite(site: Path, tmp_path: Path) -> None:
    done = fngd_bench(site, "list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for name in ("diabetes-resmlp", "digits-gn-resnet", "lion"):
        line = next(x for x in lines if x.strip().startswith(name + " "))
        assert f"[{DIST}]" in line, line
    assert any(x.strip().startswith("mlp-digits ") and "(built in)" in x for x in lines)


def test_run_through_entry_points_and_report(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = fngd_bench(
        site,
        "run",
        "--workload",
        "diabetes-resmlp",
        "--optimizer",
        "sgd",
        "fngd",
        "lion",
        "--epochs",
        "2",
        "--out",
        str(out),
        *QUICK,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    last = cells(out)
    assert set(last) == {f"diabetes-resmlp__{o}__s0" for o in ("sgd", "fngd", "lion")}
    for record in last.values():
        assert (1, "mse") in record["evals"] and (2, "mse") not in record["evals"]
        assert record["data_source"] == "real"
    lion = last["diabetes-resmlp__lion__s0"]
    assert lion["family"] == "lion" and lion["impl"] == DIST
    assert lion["hparams"]["lr"] == pytest.approx(1e-4)  # the plugin's own default
    # FNGD leaves the residual blocks' LayerNorms plain, and the records say how much
    assert 0.9 < last["diabetes-resmlp__fngd__s0"]["hparams"]["preconditioned"] < 1.0
    report = out / "report" / "index.html"  # `run` wrote it; `report` writes it again
    done = fngd_bench(site, "report", str(out), "--out", str(report), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert "diabetes-resmlp" in text and "lion" in text

    # the notebook-style script reads the same records through the Python API
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "notebook.py"), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split(",") for line in done.stdout.splitlines()[1:] if "," in line]
    printed = {(o, int(seed)): [float(v) for v in values] for o, seed, *values in rows}
    recorded = {
        (r["optimizer"], r["seed"]): [r["evals"][(e, "mse")] for e in (0, 1)] for r in last.values()
    }
    assert printed == recorded  # the same numbers, to the last digit
    notebook = out / "notebook" / "index.html"
    assert notebook.is_file()
    tables = sorted(p.name for p in report.parent.glob("*.csv"))
    assert tables and tables == sorted(p.name for p in notebook.parent.glob("*.csv"))
    for name in tables:  # the same report: every table the same, byte for byte
        assert (notebook.parent / name).read_bytes() == (report.parent / name).read_bytes()


def test_references_run_without_entry_points(site: Path, tmp_path: Path) -> None:
    """``module:function`` for the workload, ``file.py:attr`` for the optimiser."""
    optimizers = site / "fngd_bench_examples" / "optimizers.py"
    workload = "fngd_bench_examples.digits_groupnorm:build"
    optimizer = f"{optimizers}:LION"
    out = tmp_path / "out"
    done = fngd_bench(
        site,
        "run",
        "--workload",
        workload,
        "--optimizer",
        "sgd",
        optimizer,
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "3",
        "--out",
        str(out),
        "--no-report",
        *QUICK,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    last = cells(out)
    assert len(last) == 2
    by_optimizer = {r["optimizer"]: r for r in last.values()}
    assert set(by_optimizer) == {"sgd", optimizer}  # records keep the reference's text
    assert all(r["workload"] == workload for r in last.values())
    assert by_optimizer[optimizer]["impl"] == "reference"
    assert all("/" not in p.name and ":" not in p.name for p in out.iterdir())


def test_a_missing_reference_is_one_line(site: Path, tmp_path: Path) -> None:
    done = fngd_bench(
        site,
        "run",
        "--workload",
        "fngd_bench_examples.diabetes:nothing",
        "--optimizer",
        "sgd",
        "--out",
        str(tmp_path / "out"),
        *QUICK,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fngd-bench: ")
    assert "fngd_bench_examples.diabetes" in lines[0] and "'nothing'" in lines[0]
