"""Progress shaped for where it goes: bars on a terminal, sparse lines elsewhere; stages,
notes, and overhead measured only on the cells asked for."""

from __future__ import annotations

import io

from bench import cli
from bench.campaign.presets import PRESETS
from bench.host.progress import Progress
from tests.test_cli import TINY


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_picks_bars_on_a_terminal_and_lines_elsewhere():
    assert Progress.auto(stream=_Tty()).mode == "bars"
    assert Progress.auto(stream=io.StringIO()).mode == "lines"
    assert Progress.auto(False, stream=_Tty()).mode == "off"


def test_lines_one_per_cell_and_epochs_at_most_every_few_seconds():
    stream, clock = io.StringIO(), _Clock()
    shown = Progress("lines", stream, every=10.0, clock=clock)
    shown.start_sweep(2)
    shown.start_cell("w__sgd__s0")
    cell = shown.cell("w__sgd__s0", epochs=30, steps_per_epoch=5)
    assert cell.on_step is None
    for epoch in range(30):  # one epoch a second: a line every 10 s, not 30
        clock.now += 1.0
        cell.start_epoch(epoch)
        cell.end_epoch(epoch, 0.5, ("accuracy", 0.25 + epoch / 100))
    cell.close()
    shown.end_cell("w__sgd__s0", "finished")
    shown.start_cell("w__kfac__s0")
    shown.end_cell("w__kfac__s0", "skipped")
    shown.end_sweep()
    lines = stream.getvalue().splitlines()
    epoch_lines = [line for line in lines if " epoch " in line]
    assert len(epoch_lines) == 3
    assert epoch_lines[0] == "  w__sgd__s0 epoch 10/30: loss 0.5, accuracy 0.34 (10 s)"
    assert lines[-2] == "cell 1/2 w__sgd__s0: finished, 30/30 epochs, 30.0 s, accuracy 0.54"
    assert lines[-1] == "cell 2/2 w__kfac__s0: skipped (complete)"
    assert len(lines) == 5


def test_off_prints_only_cells_that_did_not_finish_and_stages():
    stream = io.StringIO()
    shown = Progress("off", stream)
    shown.start_sweep(2)
    for run_id, status in (("a", "finished"), ("b", "diverged")):
        shown.start_cell(run_id)
        shown.cell(run_id, 1, 1).end_epoch(0, 1.0)
        shown.end_cell(run_id, status)
    shown.end_sweep()
    shown.stage("writing the report")
    assert stream.getvalue().splitlines() == ["b: diverged", "writing the report"]


def test_bars_count_steps():
    stream = _Tty()
    shown = Progress("bars", stream)
    shown.start_sweep(1)
    shown.start_cell("a")
    cell = shown.cell("a", 1, 3)
    cell.start_epoch(0)
    for step in range(3):
        cell.on_step(step, None, False)
    assert cell._bar.n == 3
    cell.close()
    shown.end_cell("a", "finished")
    shown.end_sweep()


def test_overhead_only_on_the_cells_asked_for():
    quick = PRESETS["quick"]
    assert quick.overhead_for() == [("mlp-digits", "sgd"), ("cnn-mnist1d", "kfac")]
    assert quick.overhead_for(None, ["sgd"]) == [("mlp-digits", "sgd")]
    assert quick.overhead_for(["cnn-mnist1d"], ["sgd", "adamw"]) == [("cnn-mnist1d", "sgd")]
    assert quick.overhead_for(["cnn-mnist1d"], ["kfac"]) == [("cnn-mnist1d", "kfac")]


def test_run_to_a_file_prints_lines_stages_and_set_aside_notes(tmp_path, capsys):
    out = tmp_path / "res"
    args = ["run", *TINY, "--optimizer", "sgd", "adamw", "--out", str(out), "--seeds", "0"]
    args += ["--no-warm-start"]
    assert cli.main(args) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("cell 1/2 mlp-digits__sgd__s0: finished, 1/1 epochs, ")
    assert err[1].startswith("cell 2/2 mlp-digits__adamw__s0: finished, 1/1 epochs, ")
    assert err[2:] == [
        "measuring the runner's timer overhead on mlp-digits / sgd",
        f"writing the report from {out}",
    ]

    assert cli.main([*args, "--no-report", "--no-overhead"]) == 0
    err = capsys.readouterr().err
    assert (
        "earlier finished run of mlp-digits__sgd__s0 set aside as "
        f"{out / 'mlp-digits__sgd__s0.attempt1.replaced'} (--resume keeps complete cells)"
    ) in err
    assert (out / "mlp-digits__adamw__s0.attempt1.replaced").exists()
