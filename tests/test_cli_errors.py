"""A newcomer's mistakes: each one line on stderr starting ``fngd-bench:``, exit code 2, no
traceback; real errors one line and exit 1, or their traceback under ``--debug``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import cli
from bench.campaign.presets import PRESETS
from bench.cli import checks
from tests.test_cli import QUIET, TINY, _best_hparams, records_dir  # noqa: F401 - fixture


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The whole of stderr, checked to be one ``fngd-bench:`` line without a traceback."""
    err = capsys.readouterr().err
    assert err.startswith("fngd-bench: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


PROFILE = ["profile", "--workload", "mlp-digits", "--optimizer", "sgd"]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_run_out_names_an_existing_file(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    assert cli.main(["run", "--out", str(target)]) == 2
    assert "is a file, not a directory" in _one_line(capsys)
    assert target.read_text() == "mine"


def test_run_out_below_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert cli.main(["run", "--out", str(tmp_path / "f" / "res")]) == 2
    assert "is a file, not a directory" in _one_line(capsys)


def test_run_out_not_writable(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checks.os, "access", lambda *a: False)  # root may write anywhere
    assert cli.main(["run", "--out", str(tmp_path / "res")]) == 2
    assert "is not writable" in _one_line(capsys)
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--device", "cuda"],
        ["profile", "--workload", "mlp-digits", "--optimizer", "sgd", "--device", "cuda"],
        ["ratio", "--workload", "mlp-digits", "--device", "cuda"],
    ],
    ids=["run", "profile", "ratio"],
)
def test_device_cuda_without_cuda(argv, no_cuda, tmp_path, capsys):
    argv = [*argv, "--out", str(tmp_path / "out")]
    if argv[0] == "run":
        argv += ["--workload", "mlp-digits"]
    assert cli.main(argv) == 2
    err = _one_line(capsys)
    assert "--device cuda: CUDA is not available" in err and "--device cpu" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        ([*PROFILE, "--steps", "0"], "--steps"),
        ([*PROFILE, "--steps", "-2"], "--steps"),
        ([*PROFILE, "--batch-size", "0"], "--batch"),
        ([*PROFILE, "--max-steps-per-epoch", "0"], "--max-steps-per-epoch"),
        (["run", "--epochs", "0"], "--epochs"),
        (["run", "--max-steps-per-epoch", "-1"], "--max-steps-per-epoch"),
        (["run", "--threads", "-1"], "--threads"),
        (["run", "--warmup-steps", "-1"], "--warmup-steps"),
        (["run", "--seeds", "0", "-1"], "--seeds"),
        (["ratio", "--rounds", "0"], "--rounds"),
    ],
)
def test_non_positive_counts(argv, flag, capsys):
    assert cli.main(argv) == 2
    err = _one_line(capsys)
    assert flag in err and "must be at least" in err
    assert f"fngd-bench {argv[0]} --help" in err


def test_not_a_number(capsys):
    assert cli.main(["run", "--epochs", "two"]) == 2
    assert "expected a whole number, got 'two'" in _one_line(capsys)


def test_typo_in_preset(capsys):
    assert cli.main(["run", "--preset", "quik"]) == 2
    err = _one_line(capsys)
    assert "invalid choice: 'quik'" in err and all(name in err for name in PRESETS)


def test_unknown_subcommand_and_option(capsys):
    assert cli.main(["rnu"]) == 2
    assert "invalid choice: 'rnu'" in _one_line(capsys)
    assert cli.main(["run", "--epoch", "3", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in _one_line(capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--optimizer", "lbfgs"],
        ["run", "--workload", "imagenet"],
        ["profile", "--workload", "mlp-digits", "--optimizer", "lbfgs"],
        ["ratio", "--workload", "imagenet"],
        ["ratio", "--variants", "nope"],
    ],
)
def test_unknown_names_are_one_line(argv, tmp_path, capsys):
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = _one_line(capsys)
    assert "unknown " in err and "; valid " in err


def test_report_on_an_empty_folder(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    err = _one_line(capsys)
    assert "no records" in err and "no report written" in err
    assert not (tmp_path / "report").exists()


def test_report_on_a_folder_without_records(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a record")
    (tmp_path / "a.jsonl.replaced").write_text("{}\n")
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "no records" in _one_line(capsys)


def test_report_on_a_missing_folder(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nope")]) == 2
    assert "not a directory" in _one_line(capsys)


def test_report_names_the_empty_folder_among_others(records_dir, tmp_path, capsys):  # noqa: F811
    empty = tmp_path / "empty"
    empty.mkdir()
    html = tmp_path / "r" / "index.html"
    assert cli.main(["report", str(empty), str(records_dir), "-o", str(html)]) == 0
    assert f"no records (*.parquet, *.jsonl) in {empty}; reporting the others" in _one_line(capsys)
    assert html.is_file()


def test_report_out_is_a_directory(tmp_path, capsys):
    (tmp_path / "x.jsonl").write_text("{}\n")
    assert cli.main(["report", str(tmp_path), "-o", str(tmp_path)]) == 2
    assert "is a directory; name a file" in _one_line(capsys)


def test_resume_with_other_settings(tmp_path, capsys):
    out = tmp_path / "res"
    base = ["run", *TINY, "--optimizer", "sgd", "--out", str(out), "--seeds", "0", *QUIET]
    quiet = ["--no-report", "--no-overhead"]
    assert cli.main([*base, *quiet]) == 0
    capsys.readouterr()
    assert cli.main([*base, "--epochs", "2", "--resume", *quiet]) == 2
    err = _one_line(capsys)
    assert "--resume" in err and "mlp-digits__sgd__s0: epochs 1 (now 2)" in err
    assert cli.main([*base, "--resume", *quiet]) == 0
    assert "1 skipped" in capsys.readouterr().out


FULL = Path("/dev/full")  # every write fails: ENOSPC, a real "disk full"
needs_dev_full = pytest.mark.skipif(not FULL.exists(), reason="no /dev/full on this system")
RATIO_TO_FULL = ["ratio", "--variants", "sgd", "--rounds", "1", "--out", str(FULL)]


@needs_dev_full
def test_other_errors_are_one_line_with_exit_1(capsys):
    assert cli.main(RATIO_TO_FULL) == 1
    err = _one_line(capsys)
    assert "OSError: [Errno 28] No space left on device" in err and "--debug" in err


@needs_dev_full
@pytest.mark.parametrize("before", [True, False], ids=["--debug first", "--debug last"])
def test_debug_shows_the_traceback(before):
    argv = ["--debug", *RATIO_TO_FULL] if before else [*RATIO_TO_FULL, "--debug"]
    with pytest.raises(OSError, match="No space left on device"):
        cli.main(argv)


@pytest.mark.parametrize(("lr", "error"), [("0.1", "got '0.1' (str)"), (-1.0, "got -1.0")])
def test_run_hparams_from_a_bad_value_names_the_study_and_the_value(tmp_path, capsys, lr, error):
    best = _best_hparams(tmp_path / "best.json", {"sgd": lr})
    argv = ["run", *TINY, "--optimizer", "sgd", "--seeds", "0", "--hparams-from", str(best)]
    assert cli.main([*argv, "--out", str(tmp_path / "res"), *QUIET]) == 2
    err = _one_line(capsys)
    assert "--hparams-from" in err and "mlp-digits__sgd: sgd: lr must be a finite number" in err
    assert error in err
    assert not (tmp_path / "res").exists()  # nothing ran
