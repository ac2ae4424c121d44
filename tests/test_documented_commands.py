"""Every command the documentation shows, run the way a user runs it.

Each code block's commands run in order, through the installed console scripts, in a fresh
directory that looks like a checkout (the repository's top-level files linked in, so
``pytest bench`` and ``ruff check fngd ...`` find them, while ``results/`` and ``runs/`` land
in the temporary directory). ``tox -e ENV`` runs the commands tox.ini gives ENV (tox itself
would build a new environment: minutes). To keep the whole test within two minutes on two
cores, each subcommand gets :data:`OVERRIDES` appended (argparse keeps the last value), blocks
run two at a time (those of several commands first), and a block repeating what another
block already ran from a fresh directory skips it. What this test does not run is in
:data:`NOT_RUN` or :data:`TOX_NOT_RUN`, with the reason; a documented command that is neither
run nor listed fails the test.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.cli.command import UsageError
from tests.documented import REPO, Block, Command, documented_blocks, install_into

#: Appended to each subcommand's documented options: one short epoch, one seed, few steps.
OVERRIDES: dict[str, tuple[str, ...]] = {
    "run": ("--epochs", "1", "--max-steps-per-epoch", "2", "--seeds", "0", "--no-overhead"),
    "tune": ("--trials", "1", "--epochs", "1", "--max-steps-per-epoch", "2"),
    "profile": ("--steps", "4", "--max-steps-per-epoch", "3"),
    "ratio": ("--rounds", "2"),
}
#: pytest-benchmark: each benchmark timed once, without its warm-up.
BENCHMARK_OVERRIDES = (
    "--benchmark-min-rounds=1",
    "--benchmark-max-time=0.000001",
    "--benchmark-warmup=off",
    "-p",
    "no:cacheprovider",
)
#: Environment settings a documented command (or its tox env) makes, made smaller.
ENV_OVERRIDES = {"FNGD_BENCH_SCALE": "0.01"}  # one epoch of the paper schedule's records

NOT_RUN: dict[str, str] = {
    "python3 -m pip install tox": "installs tox, which runs this test",
    "pip install torch --index-url https://download.pytorch.org/whl/cpu": "downloads from "
    "PyTorch's wheel index (the network)",
    "pip install -e .[dev]": "installs the project into the environment that runs this test",
    "fngd-bench tune --workload mlp-digits cnn-mnist1d-large diabetes-resmlp --optimizer sgd "
    "adamw kfac fngd fngd-net muon soap psgd-kron sf-adamw --trials 20 --epochs 30 --workers 2 "
    "--out results/rivals/study": "27 studies on the example plugin's workload too (minutes "
    "even cut short); tests/test_rivals.py tunes every rival, tests/test_tune.py the protocol",
    "fngd-bench run --workload mlp-digits cnn-mnist1d-large diabetes-resmlp --optimizer sgd "
    "adamw kfac fngd fngd-net muon soap psgd-kron sf-adamw --seeds 0 1 2 3 4 --hparams-from "
    "results/rivals/study/best_hparams.json --out results/rivals/final": "reads the study "
    "above; tests/test_tune.py runs --hparams-from on a study of its own",
    "pip install -e .[rivals]": "installs the rivals' libraries into the environment that runs "
    "this test (the dev extra holds them)",
    "fngd-bench run --preset paper --out results/paper": "paper size (ResNet-18 and the "
    "Transformer at batch 128): for a GPU, minutes a cell on two CPU cores",
    "fngd-bench profile --workload resnet18-cifar100 --size paper --optimizer fngd": "paper "
    "size, for a GPU",
    "pytest --benchmark-disable -q tests bench": "the test suite this test is part of",
    "mutmut results": "reads the results of `tox -e mutation` (tens of minutes)",
    "mutmut show NAME": "reads the results of `tox -e mutation` (tens of minutes)",
    "PYTHONPATH=$PWD python -m tests.test_record_schema --update": "rewrites a committed "
    "fixture; tests/test_record_schema.py runs the same code and compares",
    "python -m reports.coverage": "half a minute of Monte-Carlo trials; "
    "tests/test_interval_coverage.py runs the cells behind the report's choice",
}
TOX_NOT_RUN = {
    "tests": "the test suite this test is part of",
    "mutation": "mutmut over the core and the harness: tens of minutes on two cores",
}
BLOCK_TIMEOUT = 600
#: Where a documented `pip install -e examples/...` installs the plugin, in a block's
#: scratch checkout.
PLUGINS = "plugins"


@dataclass
class Step:
    """One process to run for a documented command, and what to check afterwards."""

    command: Command
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[subprocess.CompletedProcess[str], Path], None] | None = None
    server: Callable[[subprocess.Popen[str], Path], None] | None = None  # polls a server

    @property
    def key(self) -> str:
        return shlex.join([f"{k}={v}" for k, v in sorted(self.env.items())] + self.argv)


# -- what each program runs and checks ------------------------------------------------------------


def _bin(name: str) -> str:
    """The environment's own console script ``name`` (next to this Python)."""
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else name


def _bench_args(words: list[str]) -> list[str]:
    """``fngd-bench`` arguments with the subcommand's overrides appended."""
    sub = next((w for w in words if not w.startswith("-")), "")
    return [*words, *OVERRIDES.get(sub, ())]


def _parse_bench(words: list[str]):
    from bench.cli import build_parser  # reads what the command asks for, runs nothing

    return build_parser().parse_args(words)


def _check_bench(words: list[str], nproc: int = 1):
    args = _parse_bench(words)

    def check(done: subprocess.CompletedProcess[str], cwd: Path) -> None:
        if args.command == "run":
            out = cwd / (args.out or Path("results") / args.preset)
            files = sorted(out.glob("*.parquet"))
            assert files, f"no records in {out}"
            if max(nproc, args.nproc) > 1:
                assert all(f.stem.endswith(f"__w{max(nproc, args.nproc)}") for f in files)
            if not args.no_report:
                assert (out / "report" / "index.html").is_file()
                assert (out / "report" / "index_verdict.csv").is_file()
        elif args.command == "tune":
            out = cwd / args.out
            best = json.loads((out / "best_hparams.json").read_text())
            assert len(best["studies"]) == len(args.workloads) * len(args.optimizers)
            assert (out / "trials.csv").is_file()
        elif args.command == "report":
            html = cwd / (args.out or args.results[0] / "report" / "index.html")
            assert html.is_file()
        elif args.command == "profile":
            from torch_tb_profiler.utils import is_chrome_trace_file

            run_dir = cwd / args.out / args.workload / args.optimizer
            assert [p for p in run_dir.iterdir() if is_chrome_trace_file(p.name)], run_dir
            assert (run_dir / "profile.jsonl").is_file()
            assert done.stdout.strip().splitlines()[-1].endswith(f"tensorboard --logdir {args.out}")
        elif args.command == "ratio":
            if args.out is not None:
                assert json.loads((cwd / args.out).read_text())[0]["variants"]
            assert "/ sgd" in done.stdout
        elif args.command == "list":
            assert done.stdout.startswith("workloads:")

    return check


def _check_pytest(words: list[str]):
    json_out = next((w.split("=", 1)[1] for w in words if w.startswith("--benchmark-json=")), None)

    def check(done: subprocess.CompletedProcess[str], cwd: Path) -> None:
        summary = done.stdout.strip().splitlines()[-1]  # "== 3 passed, 1 skipped in 2s =="
        assert " passed" in summary and not re.search(r" (failed|error)", summary), summary
        if json_out is not None:
            assert json.loads((cwd / json_out).read_text())["benchmarks"]

    return check


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tensorboard(words: list[str]) -> tuple[list[str], Callable[..., None]]:
    """TensorBoard until its profiler plugin lists every profile run under ``--logdir``."""
    port = _free_port()
    logdir = words[words.index("--logdir") + 1]
    argv = [_bin("tensorboard"), *words[1:], "--port", str(port), "--host", "127.0.0.1"]

    def poll(proc: subprocess.Popen[str], cwd: Path) -> None:
        expected = sorted(
            str(p.parent.relative_to(cwd / logdir)) for p in (cwd / logdir).rglob("*.pt.trace.json")
        )
        assert expected, f"no traces under {logdir} to list"
        url = f"http://127.0.0.1:{port}/data/plugin/pytorch_profiler/runs"
        deadline, seen = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            assert proc.poll() is None, "tensorboard exited"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    seen = json.loads(response.read())
            except OSError:
                seen = None
            if seen and not seen["loading"] and sorted(seen["runs"]) == expected:
                return
            time.sleep(0.5)
        raise AssertionError(f"the profiler plugin listed {seen}, expected {expected}")

    return argv, poll


def _tox_commands(env: str, posargs: list[str]) -> tuple[list[list[str]], dict[str, str]]:
    """What ``tox -e env -- posargs`` runs, read from tox.ini, and the env's settings."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    section = f"testenv:{env}"
    assert ini.has_section(section), f"tox.ini has no [{section}]"

    def substitute(text: str) -> str:
        text = re.sub(
            r"\{posargs(?::([^}]*))?\}",
            lambda m: shlex.join(posargs) if posargs else (m.group(1) or ""),
            text,
        )
        return re.sub(r"\{env:[^:}]+:([^}]*)\}", r"\1", text)

    commands = [
        shlex.split(substitute(line))
        for line in ini.get(section, "commands", fallback="").splitlines()
        if line.strip()
    ]
    settings = {}
    for line in ini.get(section, "setenv", fallback="").splitlines():
        if "=" in line:
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip()
    return commands, settings


def plan(command: Command) -> list[Step] | str:
    """The steps that run ``command``, or why it is not run (``str``)."""
    if command.text in NOT_RUN:
        return []
    words = list(command.argv)
    program, env = words[0], dict(command.settings)
    if program == "fngd-bench" or (program == "torchrun" and "bench.cli" in words):
        at = words.index("bench.cli") + 1 if program == "torchrun" else 1
        args = _bench_args(words[at:])
        nproc = int(words[words.index("--nproc-per-node") + 1]) if program == "torchrun" else 1
        try:
            check = _check_bench(args, nproc)
        except UsageError as exc:
            return f"fngd-bench rejects it: {exc}"
        return [Step(command, [_bin(program), *words[1:at], *args], env, check)]
    if words[:3] == ["pip", "install", "-e"] and words[3].startswith("examples/"):
        # a plugin: installed into the scratch checkout's PLUGINS folder (on every step's
        # PYTHONPATH), not into the environment running this test
        return [Step(command, install_into(words[3], PLUGINS), env)]
    if program == "pytest" and "--benchmark-only" in words:
        argv = [_bin("pytest"), *words[1:], *BENCHMARK_OVERRIDES]
        return [Step(command, argv, env, _check_pytest(words))]
    if program == "ruff":
        return [Step(command, [_bin("ruff"), *words[1:]], env)]
    if program == "tensorboard":
        argv, poll = _tensorboard(words)
        return [Step(command, argv, env, server=poll)]
    if program == "tox" and "-e" in words:
        envs = words[words.index("-e") + 1].split(",")
        posargs = words[words.index("--") + 1 :] if "--" in words else []
        steps: list[Step] = []
        for name in envs:
            if name in TOX_NOT_RUN:
                continue
            lines, settings = _tox_commands(name, posargs)
            for line in lines:
                inner = Command(command.document, command.line, tuple(line))
                found = plan(inner)
                if isinstance(found, str):
                    return f"tox -e {name} runs `{shlex.join(line)}`: {found}"
                for step in found:
                    step.env = {**settings, **step.env}
                steps += found
        return steps
    return "no rule runs it: add one to plan(), or the command to NOT_RUN with the reason"


# -- running ---------------------------------------------------------------------------------------


def _checkout(into: Path) -> None:
    """A directory that looks like a checkout: the repository's top-level entries linked."""
    for entry in REPO.iterdir():
        if entry.name not in (".git", ".tox", "results", "runs") and not entry.name.startswith("."):
            (into / entry.name).symlink_to(entry)


def _environment(step: Step) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # relative: each block's own scratch checkout; absent until a block installs a plugin
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PLUGINS, env.get("PYTHONPATH")) if p)
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(step.env)
    env.update({k: v for k, v in ENV_OVERRIDES.items() if k in step.env})
    return env


def _run_step(step: Step, cwd: Path) -> None:
    env = _environment(step)
    if step.server is not None:
        proc = subprocess.Popen(
            step.argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            step.server(proc, cwd)
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
        return
    done = subprocess.run(
        step.argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
    )
    tail = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"exit {done.returncode}: {shlex.join(step.argv)}\n{tail}"
    if step.check is not None:
        try:
            step.check(done, cwd)
        except AssertionError as exc:
            raise AssertionError(f"{shlex.join(step.argv)}: {exc}\n{tail}") from None


@dataclass
class Outcome:
    block: Block
    ran: list[tuple[str, float]] = field(default_factory=list)  # where, seconds
    skipped: list[str] = field(default_factory=list)
    failure: str | None = None


def _run_block(block: Block, steps: list[Step], repeated: set[int]) -> Outcome:
    outcome = Outcome(block)
    with tempfile.TemporaryDirectory(prefix="documented-") as tmp:
        cwd = Path(tmp)
        _checkout(cwd)
        for i, step in enumerate(steps):
            if i in repeated:
                outcome.skipped.append(step.command.where)
                continue
            start = time.perf_counter()
            try:
                _run_step(step, cwd)
            except (AssertionError, subprocess.TimeoutExpired, OSError) as exc:
                outcome.failure = f"{step.command.where} `{step.command.text}`: {exc}"
                return outcome
            outcome.ran.append((step.command.where, time.perf_counter() - start))
    return outcome


BLOCKS = documented_blocks()


def _plans() -> list[tuple[Block, list[Step], set[int]]]:
    """Each block's steps, and which of them repeat, from a fresh directory, what an
    earlier block runs (their indices)."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for block in BLOCKS:
        steps = [s for c in block.commands if isinstance(p := plan(c), list) for s in p]
        repeated = set()
        for i in range(len(steps)):
            prefix = tuple(s.key for s in steps[: i + 1])
            if prefix in seen and (i == 0 or i - 1 in repeated):
                repeated.add(i)
            seen.add(prefix)
        out.append((block, steps, repeated))
    return out


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest) -> dict[str, Outcome]:
    """Every selected block's outcome, the blocks run two at a time (``-k`` picks blocks)."""
    chosen = {
        item.callspec.params["where"]
        for item in request.session.items
        if item.originalname == "test_documented_block_runs"
    }
    plans = [p for p in _plans() if len(p[2]) < len(p[1]) and p[0].where in chosen]
    # Blocks of several commands first (stable otherwise): a long chain started last would
    # leave the other worker idle.
    plans.sort(key=lambda p: len(p[2]) - len(p[1]))
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda p: _run_block(*p), plans))
    return {o.block.where: o for o in done}


def test_every_documented_command_is_run_or_listed():
    unhandled = [
        f"{c.where}: `{c.text}`: {found}"
        for block in BLOCKS
        for c in block.commands
        if isinstance(found := plan(c), str)
    ]
    assert not unhandled, "\n".join(unhandled)


def test_every_listed_command_is_still_documented():
    documented = {c.text for block in BLOCKS for c in block.commands}
    assert not set(NOT_RUN) - documented, sorted(set(NOT_RUN) - documented)


def _not_run_reason(command: Command) -> str:
    if command.text in NOT_RUN:
        return NOT_RUN[command.text]
    words = command.argv
    if words[0] == "tox" and "-e" in words:
        envs = words[words.index("-e") + 1].split(",")
        if all(env in TOX_NOT_RUN for env in envs):
            return "; ".join(TOX_NOT_RUN[env] for env in envs)
    return "repeats another block"


@pytest.mark.slow
@pytest.mark.parametrize("where", [b.where for b in BLOCKS])
def test_documented_block_runs(where, outcomes):
    outcome = outcomes.get(where)
    if outcome is None:
        block = next(b for b in BLOCKS if b.where == where)
        reasons = {c.text: _not_run_reason(c) for c in block.commands}
        pytest.skip("; ".join(f"`{t}`: {r}" for t, r in reasons.items()))
    if outcome.failure is not None:
        pytest.fail(outcome.failure, pytrace=False)
