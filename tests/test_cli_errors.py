"""A newcomer's mistakes: each one line on stderr starting ``fngd-bench:``, exit code 2, no
traceback; real errors one line and exit 1, or their traceback under ``--debug``."""

from __future__ import annotations

import pytest
import torch

from bench import cli
from bench.presets import PRESETS
from tests.test_cli import fake_report, tiny  # noqa: F401 - fixtures


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The whole of stderr, checked to be one ``fngd-bench:`` line without a traceback."""
    err = capsys.readouterr().err
    assert err.startswith("fngd-bench: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


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
    monkeypatch.setattr(cli.os, "access", lambda *a: False)
    assert cli.main(["run", "--out", str(tmp_path / "res")]) == 2
    assert "is not writable" in _one_line(capsys)
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--device", "cuda"],
        ["profile", "--workload", "tiny", "--optimizer", "sgd", "--device", "cuda"],
        ["ratio", "--workload", "tiny", "--device", "cuda"],
    ],
    ids=["run", "profile", "ratio"],
)
def test_device_cuda_without_cuda(argv, tiny, no_cuda, tmp_path, capsys):  # noqa: F811
    argv = [*argv, "--out", str(tmp_path / "out")]
    if argv[0] == "run":
        argv += ["--workload", "tiny"]
    assert cli.main(argv) == 2
    err = _one_line(capsys)
    assert "--device cuda: CUDA is not available" in err and "--device cpu" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["profile", "--workload", "tiny", "--optimizer", "sgd", "--steps", "0"], "--steps"),
        (["profile", "--workload", "tiny", "--optimizer", "sgd", "--steps", "-2"], "--steps"),
        (["profile", "--workload", "tiny", "--optimizer", "sgd", "--batch-size", "0"], "--batch"),
        (
            ["profile", "--workload", "tiny", "--optimizer", "sgd", "--max-steps-per-epoch", "0"],
            "--max-steps-per-epoch",
        ),
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
        ["profile", "--workload", "tiny", "--optimizer", "lbfgs"],
        ["ratio", "--workload", "imagenet"],
        ["ratio", "--variants", "nope"],
    ],
)
def test_unknown_names_are_one_line(argv, tiny, tmp_path, capsys):  # noqa: F811
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


def test_report_names_the_empty_folder_among_others(fake_report, tmp_path, capsys):  # noqa: F811
    full, empty = tmp_path / "full", tmp_path / "empty"
    full.mkdir()
    empty.mkdir()
    (full / "x.jsonl").write_text("{}\n")
    assert cli.main(["report", str(empty), str(full)]) == 0
    assert f"no records (*.parquet, *.jsonl) in {empty}; reporting the others" in _one_line(capsys)
    assert fake_report == [([empty, full], full / "report" / "index.html")]


def test_report_out_is_a_directory(tmp_path, capsys):
    (tmp_path / "x.jsonl").write_text("{}\n")
    assert cli.main(["report", str(tmp_path), "-o", str(tmp_path)]) == 2
    assert "is a directory; name a file" in _one_line(capsys)


def test_resume_with_other_settings(tiny, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "res"
    base = ["run", "--workload", "tiny", "--optimizer", "sgd", "--out", str(out), "--seeds", "0"]
    quiet = ["--no-report", "--no-overhead", "--no-progress"]
    assert cli.main([*base, "--epochs", "1", *quiet]) == 0
    capsys.readouterr()
    assert cli.main([*base, "--epochs", "2", "--resume", *quiet]) == 2
    err = _one_line(capsys)
    assert "--resume" in err and "tiny__sgd__s0: epochs 1 (now 2)" in err
    assert cli.main([*base, "--epochs", "1", "--resume", *quiet]) == 0
    assert "1 skipped" in capsys.readouterr().out


def test_other_errors_are_one_line_with_exit_1(monkeypatch, capsys):
    def broken(args):
        raise OSError("disk full")

    monkeypatch.setitem(cli.COMMANDS, "list", broken)
    assert cli.main(["list"]) == 1
    err = _one_line(capsys)
    assert "OSError: disk full" in err and "--debug" in err


@pytest.mark.parametrize("argv", [["--debug", "list"], ["list", "--debug"]])
def test_debug_shows_the_traceback(argv, monkeypatch):
    def broken(args):
        raise OSError("disk full")

    monkeypatch.setitem(cli.COMMANDS, "list", broken)
    with pytest.raises(OSError, match="disk full"):
        cli.main(argv)


def test_debug_is_not_passed_to_the_profiler(tiny, monkeypatch):  # noqa: F811
    seen = []
    import bench.profile

    monkeypatch.setattr(bench.profile, "main", lambda **options: seen.append(options) or 0)
    assert cli.main(["--debug", "profile", "--workload", "tiny", "--optimizer", "sgd"]) == 0
    assert "debug" not in seen[0]
