"""``bench.compare``, ``bench.load`` and ``bench.report`` called for real on mlp-digits, cut
to three steps: the frame ``compare`` returns is the folder's records, and its report is
the one ``fngd-bench report`` writes from that folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import bench
from bench import cli

TINY = {"epochs": 1, "max_steps_per_epoch": 3, "warm_start": False}

FACTORY = """\
import torch


def make(model, lr=0.01):
    return torch.optim.SGD(model.parameters(), lr=lr)
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("api")
    return out, bench.compare(["mlp-digits"], ["sgd", "fngd"], seeds=[0], out=out, **TINY)


def _steps(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame[frame["kind"] == "step"]
    return rows.sort_values(["run_id", "step"])[["run_id", "step", "seconds"]].reset_index(
        drop=True
    )


def _evals(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame[frame["kind"] == "eval"]
    return rows.sort_values(["run_id", "name"])[["run_id", "name", "value"]].reset_index(
        drop=True
    )


def test_compare_runs_every_cell(run):
    out, frame = run
    cells = frame[frame["kind"] == "cell"]
    assert set(cells["optimizer"]) == {"sgd", "fngd"}
    assert set(cells["workload"]) == {"mlp-digits"}
    assert set(cells["seed"]) == {0}
    assert set(cells.loc[cells["name"] != "started", "name"]) == {"finished"}
    assert (frame[frame["kind"] == "step"].groupby("optimizer").size() == 3).all()
    assert set(frame["preset"].dropna()) == {"api"}
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        "mlp-digits__fngd__s0.parquet",
        "mlp-digits__sgd__s0.parquet",
    ]


def test_load_gives_the_numbers_compare_returned(run):
    out, frame = run
    loaded = bench.load(out)
    pd.testing.assert_frame_equal(_steps(loaded), _steps(frame))
    pd.testing.assert_frame_equal(_evals(loaded), _evals(frame))
    assert len(_evals(frame)) > 0


def test_load_warns_once_per_problem(tmp_path):
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.warns(UserWarning, match="broken.jsonl:1") as caught:
        frame = bench.load(tmp_path)
    assert len(caught) == 1 and frame.empty


def test_report_of_the_frame_matches_the_command(run, tmp_path, capsys):
    out, frame = run
    page = tmp_path / "cli" / "index.html"
    assert cli.main(["report", str(out), "-o", str(page)]) == 0
    assert str(page) in capsys.readouterr().out
    mine = bench.report(frame, tmp_path / "api" / "index.html")
    assert mine == tmp_path / "api" / "index.html"
    tables = sorted(p.name for p in mine.parent.glob("*.csv"))
    assert tables == sorted(p.name for p in page.parent.glob("*.csv"))
    for table in tables:  # every table, the headline ones included, cell for cell
        assert (mine.parent / table).read_text() == (page.parent / table).read_text(), table
    for table in ("final_values", "epoch_times", "record_counts"):
        assert len(pd.read_csv(mine.parent / f"index_{table}.csv")) >= 2  # sgd and fngd
    text = mine.read_text()
    for name in ("SGD", "FNGD", "mlp-digits"):
        assert name in text and name in page.read_text()
    folder = bench.report(out, tmp_path / "dirs" / "index.html")
    pd.testing.assert_frame_equal(
        pd.read_csv(folder.parent / "index_final_values.csv"),
        pd.read_csv(page.parent / "index_final_values.csv"),
    )


def test_a_reference_optimizer_is_labelled_by_its_text(tmp_path):
    factory = tmp_path / "my_opt.py"
    factory.write_text(FACTORY)
    ref = f"{factory}:make"
    frame = bench.compare(["mlp-digits"], [ref], out=tmp_path / "out", **TINY)
    assert set(frame["optimizer"]) == {ref}
    assert (frame["kind"] == "step").sum() == 3
    finished = frame[(frame["kind"] == "cell") & (frame["name"] == "finished")]
    assert len(finished) == 1


@pytest.mark.parametrize(
    ("call", "error", "named"),
    [
        (dict(workloads=["nope"], optimizers=["sgd"]), ValueError, "nope"),
        (dict(workloads=["mlp-digits"], optimizers=["nope-opt"]), ValueError, "nope-opt"),
        (dict(workloads=["mlp-digits"], optimizers=["sgd"], seeds=[-1]), ValueError, "seeds"),
        (dict(workloads=["mlp-digits"], optimizers=["sgd"], seeds=[0.5]), TypeError, "seeds"),
        (dict(workloads=["mlp-digits"], optimizers=["sgd"], epochs=0), ValueError, "epochs"),
        (dict(workloads=["mlp-digits"], optimizers=["sgd"], size="huge"), ValueError, "size"),
    ],
)
def test_mistakes_are_one_error_naming_the_argument(call, error, named, tmp_path):
    with pytest.raises(error, match=named) as caught:
        bench.compare(**call, out=tmp_path / "out")
    assert type(caught.value) in (ValueError, TypeError)  # not the command line's own
    assert not (tmp_path / "out").exists()  # nothing ran


def test_importing_bench_stays_light():
    import subprocess
    import sys

    code = "import sys, bench; print('torch' in sys.modules, 'pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_a_frames_folders_are_those_of_its_files():
    from bench.api import _folders

    sources = ["res/a/x.parquet", "res/a/y.jsonl:12", "res/b/z.jsonl:3", "c:/w/q.parquet"]
    assert _folders(sources) == ["res/a", "res/b", "c:/w"]
