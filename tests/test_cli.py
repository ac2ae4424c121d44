"""``fngd-bench``: help, name checks (exit 2, no traceback), and run/report/profile/list
called for real on mlp-digits (scikit-learn's digits, a fraction of a second per cell)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import cli
from bench.labels import VARIANTS
from bench.measure.trace_summary import trace_files
from bench.records import read_dir, read_jsonl

#: A cell of mlp-digits cut to a few steps: what every real call here trains.
TINY = ["--workload", "mlp-digits", "--epochs", "1", "--max-steps-per-epoch", "2"]
QUIET = ["--no-progress", "--no-warm-start"]


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory) -> Path:
    """The records of one real SGD cell, for the report tests."""
    out = tmp_path_factory.mktemp("records")
    argv = ["run", *TINY, "--optimizer", "sgd", "--seeds", "0", "--out", str(out)]
    assert cli.main([*argv, *QUIET, "--no-report", "--no-overhead"]) == 0
    return out


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert f"fngd-bench {command}" in capsys.readouterr().out


def test_run_help_explains_labels_and_resume(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--resume" in out and "--preset" in out and "quick" in out and "paper" in out
    assert all(label in out for label in VARIANTS)


def test_console_entry_point_help():
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "fngd-bench" in done.stdout


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_unknown_optimizer_exits_2_with_the_list(tmp_path, capsys):
    code = cli.main(["run", "--optimizer", "sgd", "lbfgs", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown optimizer: lbfgs" in err and "Traceback" not in err
    assert all(label in err for label in VARIANTS)
    assert not list(tmp_path.iterdir())


def test_unknown_workload_exits_2_with_the_list(tmp_path, capsys):
    code = cli.main(["run", "--workload", "imagenet", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown workload: imagenet" in err
    assert "cnn-mnist1d, cnn-mnist1d-large, mlp-digits" in err
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_unknown_names_in_profile_exit_2(capsys):
    assert cli.main(["profile", "--workload", "mlp-digits", "--optimizer", "nope"]) == 2
    assert "unknown optimizer: nope" in capsys.readouterr().err


def _best_hparams(path: Path, lrs: dict[str, float]) -> Path:
    """A ``best_hparams.json`` as ``fngd-bench tune`` writes it, with these learning rates."""
    studies = {
        f"mlp-digits__{label}": {
            "study": f"mlp-digits__{label}",
            "workload": "mlp-digits",
            "optimizer": label,
            "trial": 0,
            "params": {"lr": lr},
            "value": None,
            "reached": False,
            "best_metric": None,
            "epochs": None,
            "complete_trials": 1,
        }
        for label, lr in lrs.items()
    }
    path.write_text(json.dumps({"storage": "", "trials": 1, "studies": studies}))
    return path


def test_run_end_to_end(tmp_path, capsys):
    """A finished cell and a diverged one (SGD at lr 1e30), the overhead measurement, the
    real report, and a resume that skips both."""
    out = tmp_path / "res"
    best = _best_hparams(tmp_path / "best.json", {"sgd": 0.1, "adamw": 1e30})
    args = ["run", "--out", str(out), *TINY, "--optimizer", "sgd", "adamw", "--seeds", "0"]
    args += ["--hparams-from", str(best)]
    code = cli.main([*args, *QUIET])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "2 cells" in stdout and "1 diverged" in stdout and "1 finished" in stdout
    assert "runner overhead on mlp-digits__sgd" in stdout
    html = out / "report" / "index.html"
    assert f"report: {html}" in stdout
    assert html.stat().st_size > 10_000 and (out / "report" / "index_verdict.csv").is_file()
    records = read_dir(out)
    assert {r["run_id"] for r in records} == {
        "mlp-digits__sgd__s0",
        "mlp-digits__adamw__s0",
        "overhead__mlp-digits__sgd__cpu",
    }
    cells = [r for r in records if r["kind"] == "cell"]
    assert {r["preset"] for r in cells} == {"quick"}
    statuses = {(r["run_id"], r["name"]) for r in cells}  # a cell record's name: its status
    assert {("mlp-digits__sgd__s0", "finished"), ("mlp-digits__adamw__s0", "diverged")} <= statuses

    assert cli.main([*args, "--resume", "--no-report", "--no-overhead", *QUIET]) == 0
    assert "2 skipped" in capsys.readouterr().out


def test_report_subcommand(records_dir, tmp_path, capsys):
    html = tmp_path / "r" / "index.html"
    assert cli.main(["report", str(records_dir), "-o", str(html)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {html}"
    assert "mlp-digits" in html.read_text() and (html.parent / "index_verdict.csv").is_file()
    assert cli.main(["report", str(tmp_path / "missing")]) == 2


def test_profile_writes_a_trace_and_says_how_to_open_it(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["profile", "--workload", "mlp-digits", "--optimizer", "fngd", "--device", "cpu"]
    argv += ["--steps", "4", "--max-steps-per-epoch", "3", "--out", str(out)]
    assert cli.main(["--debug", *argv]) == 0  # --debug is the CLI's, not the profiler's
    run_dir = out / "mlp-digits" / "fngd"
    (trace,) = trace_files(run_dir)
    assert trace.name.endswith(".pt.trace.json")
    records = read_jsonl(run_dir / "profile.jsonl")
    assert {r["mode"] for r in records} == {"inversion", "weighted_sum"}
    assert len({r["step"] for r in records}) == 4  # --steps reached the profiler
    lines = capsys.readouterr().out.strip().splitlines()
    assert str(trace) in lines[-2] and "ui.perfetto.dev" in lines[-2]
    assert lines[-1].endswith(f"tensorboard --logdir {out}")


def test_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "mlp-digits" in out and "kfac-inv1" in out and "quick" in out


def test_ctrl_c_says_how_to_resume(tmp_path):
    """A real SIGINT to a running ``fngd-bench run``: exit 130, one line naming --resume."""
    out = tmp_path / "res"
    argv = ["run", "--workload", "mlp-digits", "--optimizer", "sgd", "--seeds", "0"]
    argv += ["--epochs", "100000", "--no-overhead", "--no-report", *QUIET, "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any('"epoch"' in p.read_text() for p in out.glob("*.jsonl")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert read_jsonl(out / "mlp-digits__sgd__s0.jsonl")  # what was recorded stays
