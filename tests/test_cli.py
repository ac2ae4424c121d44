"""``fngd-bench``: help, name checks (exit 2, no traceback), run/report/profile wiring."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

from bench import cli
from bench.presets import VARIANTS
from bench.records import read_dir

FAKE_WORKLOADS = ["tiny", "tiny-nan"]


def _test_runner() -> types.ModuleType:
    """The tiny workload lives in test_runner.py; load it by path (any import mode)."""
    name = "_fngd_bench_test_runner"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("test_runner.py")
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def tiny(monkeypatch):
    """Point the CLI at the tests' tiny workload instead of the real registry."""
    make_factory = _test_runner().make_factory
    monkeypatch.setattr(cli, "_workload_names", lambda: list(FAKE_WORKLOADS))
    monkeypatch.setattr("bench.runner.default_workload_factory", lambda: make_factory())


@pytest.fixture
def fake_report(monkeypatch):
    calls = []

    def build_report(results_dirs, out_html):
        calls.append((list(results_dirs), out_html))
        out_html.parent.mkdir(parents=True, exist_ok=True)
        out_html.write_text("<html></html>")
        return out_html

    import reports

    monkeypatch.setattr(reports, "build_report", build_report, raising=False)
    return calls


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "report", "profile", "list"):
        assert command in out


@pytest.mark.parametrize("command", ["run", "report", "profile"])
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


def test_unknown_workload_exits_2_with_the_list(tiny, tmp_path, capsys):
    code = cli.main(["run", "--workload", "imagenet", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown workload: imagenet" in err and "tiny, tiny-nan" in err
    assert "Traceback" not in err


def test_unknown_names_in_profile_exit_2(tiny, capsys):
    assert cli.main(["profile", "--workload", "tiny", "--optimizer", "nope"]) == 2
    assert "unknown optimizer: nope" in capsys.readouterr().err


def test_real_registry_names_are_checked(tmp_path, capsys):
    """With the real registry (or without one), a bad workload is still a clean exit 2."""
    assert cli.main(["run", "--workload", "no-such-workload", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("valid workloads" in err or "not available" in err)


def test_run_end_to_end(tiny, fake_report, tmp_path, capsys):
    out = tmp_path / "res"
    args = ["run", "--out", str(out), "--workload", "tiny", "tiny-nan", "--optimizer", "sgd"]
    args += ["--seeds", "0"]
    code = cli.main([*args, "--epochs", "2", "--no-progress"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "2 cells" in stdout and "1 diverged" in stdout and "1 finished" in stdout
    assert "runner overhead on tiny__sgd" in stdout
    assert f"report: {out / 'report' / 'index.html'}" in stdout
    assert fake_report == [([out], out / "report" / "index.html")]
    records = read_dir(out)
    assert {r["run_id"] for r in records} == {
        "tiny__sgd__s0",
        "tiny-nan__sgd__s0",
        "overhead__tiny__sgd__cpu",
    }
    assert {r["preset"] for r in records if r["kind"] == "cell"} == {"quick"}

    assert cli.main([*args, "--resume", "--no-report", "--no-overhead", "--no-progress"]) == 0
    assert "2 skipped" in capsys.readouterr().out


def test_report_subcommand(fake_report, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "cell.jsonl").write_text("{}\n")  # a folder with no records is a mistake
    assert cli.main(["report", str(a), str(b), "-o", str(tmp_path / "r" / "index.html")]) == 0
    assert fake_report == [([a, b], tmp_path / "r" / "index.html")]
    assert cli.main(["report", str(tmp_path / "missing")]) == 2


def test_profile_calls_bench_profile_main(tiny, monkeypatch):
    seen = []
    module = types.ModuleType("bench.profile")
    module.main = lambda **options: seen.append(options) or 0
    monkeypatch.setitem(sys.modules, "bench.profile", module)
    import bench

    monkeypatch.setattr(bench, "profile", module, raising=False)
    code = cli.main(["profile", "--workload", "tiny", "--optimizer", "fngd", "--steps", "3"])
    assert code == 0
    (options,) = seen
    assert (options["workload"], options["optimizer"], options["steps"], options["device"]) == (
        "tiny",
        "fngd",
        3,
        "auto",
    )
    assert str(options["out"]) == "runs"


def test_list(tiny, capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "kfac-inv1" in out and "quick" in out


def test_interrupt_says_how_to_resume(tiny, monkeypatch, tmp_path, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("bench.sweep.run_sweep", interrupted)
    code = cli.main(["run", "--workload", "tiny", "--out", str(tmp_path), "--no-progress"])
    assert code == 130
    err = capsys.readouterr().err
    assert "--resume" in err and "Traceback" not in err
