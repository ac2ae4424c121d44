"""Plugins the way a user meets them: a distribution with entry points, and references.

A plugin distribution here is a ``*.dist-info`` folder (``METADATA``, ``entry_points.txt``)
and its module in ``tmp_path``, put on ``sys.path``: what ``pip install`` leaves behind, so
that ``importlib.metadata`` finds it like any installed plugin. Every command runs through
``bench.cli.main`` on a tiny regression workload (32 samples, 2 steps).
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from bench import cli
from bench.labels import labels, resolve_label
from bench.records import read_dir, read_records
from bench.workloads import registry as workloads
from fngd.optimizers import factory
from fngd.optimizers import registry as optimizers
from fngd.optimizers.plugins import PluginError, discover

#: The plugin's module: workloads (one keeps the contract, two break it) and optimisers
#: (a spec with a search space, a plain factory, a non-optimiser, a preconditioned pair).
TOY = '''
"""A plugin's workloads and optimisers."""
import types

import torch
from torch import nn

from bench.workloads import TensorLoader, Workload
from fngd.optimizers.spec import OptimizerSpec, Range

CALLS = {"prepare": 0, "step": 0}


def _mse(out, y):
    return nn.functional.mse_loss(out, y)


def _per_sample(out, y):
    return ((out - y) ** 2).mean(dim=1)


def _split(g, w, n):
    x = torch.randn(n, 4, generator=g)
    return x, x @ w


def build(*, device, seed, batch_size, data_root, size):
    """Regression on random tensors (a plugin's)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 1, generator=g)
    (x, y), (xv, yv) = _split(g, w, 32), _split(g, w, 16)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(device)

    def evaluate(inputs, targets):
        def fn(m):
            with torch.no_grad():
                loss = float(_mse(m(inputs), targets))
            return {"eval_loss": loss, "mse": loss}
        return fn

    b = batch_size or 8
    return Workload(
        name="toy-regression", model=model, loss_fn=_mse, per_sample_loss=_per_sample,
        train_loader=TensorLoader(x, y, b, seed=seed), eval_fn=evaluate(x, y),
        val_eval_fn=evaluate(xv, yv), metric_name="mse", higher_is_better=False,
        target=1e-6, data_source="synthetic", data_note="random regression tensors",
        batch_size=b, epochs=1, hparams={}, device=device, seed=seed,
        num_train=32, num_eval=32, num_val=16,
    )


def build_made_up(**kw):
    w = build(**kw)
    w.data_source = "made-up"
    return w


def build_no_per_sample(**kw):
    w = build(**kw)
    parts = {k: v for k, v in vars(w).items() if k != "per_sample_loss"}
    return types.SimpleNamespace(**parts, reached=w.reached)


def make(model, lr=0.05, momentum=0.0):
    """Plain SGD (a plugin's)."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


SPEC = OptimizerSpec(
    factory=make, defaults={"lr": 0.05, "momentum": 0.0},
    space={"lr": Range(1e-3, 1e-1)}, note="toy SGD",
)


def make_bad(model, lr=0.1):
    return {"lr": lr}


class CountingPre:
    def prepare(self, sample_ids=None):
        CALLS["prepare"] += 1

    def step(self, sample_ids=None):
        CALLS["step"] += 1

    def memory_usage(self):
        return {"counts": 16}

    def state_dict(self):
        return dict(CALLS)

    def load_state_dict(self, state):
        CALLS.update(state)


def make_pair(model, lr=0.05):
    return CountingPre(), torch.optim.SGD(model.parameters(), lr=lr)


class Lacking:
    def prepare(self, sample_ids=None):
        pass


def make_lacking(model, lr=0.05):
    return Lacking(), torch.optim.SGD(model.parameters(), lr=lr)
'''

QUICK = [
    "--epochs", "1", "--max-steps-per-epoch", "2", "--seeds", "0", "--no-report",
    "--no-overhead", "--no-progress", "--no-warm-start", "--device", "cpu",
]


def _clear() -> None:
    discover.cache_clear()
    optimizers.get.cache_clear()
    importlib.invalidate_caches()


class Site:
    """A ``site-packages`` of plugin distributions in ``root`` (on ``sys.path``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def module(self, name: str, source: str = TOY) -> Path:
        path = self.root / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        _clear()
        return path

    def dist(
        self,
        name: str,
        version: str,
        workloads: dict[str, str] | None = None,
        optimizers: dict[str, str] | None = None,
    ) -> None:
        info = self.root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        groups = {"fngd_bench.workloads": workloads, "fngd_bench.optimizers": optimizers}
        text = "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n"
            for group, entries in groups.items()
            if entries
        )
        (info / "entry_points.txt").write_text(text)
        _clear()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    _clear()
    before = set(sys.modules)
    yield Site(root)
    for name in set(sys.modules) - before:  # the plugin's modules, loaded from root
        if str(root) in str(getattr(sys.modules[name], "__file__", None) or ""):
            del sys.modules[name]
    monkeypatch.undo()  # root off sys.path before the caches are rebuilt without it
    _clear()


@pytest.fixture
def toy(site: Site) -> Site:
    """The toy-plugin 1.2.3 distribution: a workload and three optimiser families."""
    site.module("toyplug")
    site.dist(
        "toy-plugin",
        "1.2.3",
        workloads={"toy-regression": "toyplug:build"},
        optimizers={
            "toy-sgd": "toyplug:SPEC",
            "toy-plain": "toyplug:make",
            "toy-pair": "toyplug:make_pair",
        },
    )
    return site


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fngd-bench: "), err
    assert "Traceback" not in err
    return lines[0]


def _cells(out: Path) -> dict[str, dict]:
    """The first ``cell`` record of each optimizer under ``out``."""
    found: dict[str, dict] = {}
    for r in read_dir(out):
        if r["kind"] == "cell":
            found.setdefault(r["optimizer"], r)
    return found


# -- a plugin distribution ---------------------------------------------------------------


def test_list_shows_plugin_entries_with_their_distribution(toy, capsys) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "Regression on random tensors (a plugin's)." in lines["toy-regression"]
    assert lines["toy-regression"].endswith("[toy-plugin 1.2.3]")
    assert "toy SGD" in lines["toy-sgd"] and lines["toy-sgd"].endswith("[toy-plugin 1.2.3]")
    assert "Plain SGD (a plugin's)." in lines["toy-plain"]
    assert lines["sgd"].endswith("(built in)]") and lines["mlp-digits"].endswith("(built in)]")


def test_plugin_workload_and_optimizer_run_end_to_end(toy, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["run", "--workload", "toy-regression", "--optimizer", "sgd", "toy-sgd"]
    assert cli.main([*argv, *QUICK, "--out", str(out)]) == 0, capsys.readouterr().err
    cells = _cells(out)
    assert set(cells) == {"sgd", "toy-sgd"}
    plugin = cells["toy-sgd"]
    assert plugin["workload"] == "toy-regression" and plugin["data_source"] == "synthetic"
    assert plugin["family"] == "toy-sgd" and plugin["impl"] == "toy-plugin 1.2.3"
    assert plugin["hparams"]["lr"] == 0.05 and plugin["hparams"]["momentum"] == 0.0
    assert cells["sgd"]["family"] == "sgd" and cells["sgd"]["impl"] != "toy-plugin 1.2.3"
    steps = Counter(r["optimizer"] for r in read_dir(out) if r["kind"] == "step")
    assert steps == {"sgd": 2, "toy-sgd": 2}


def test_preconditioner_pair_is_driven_every_step(toy, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["run", "--workload", "toy-regression", "--optimizer", "toy-pair"]
    assert cli.main([*argv, *QUICK, "--out", str(out)]) == 0, capsys.readouterr().err
    records = read_dir(out)
    steps = [r for r in records if r["kind"] == "step"]
    assert len(steps) == 2
    assert sys.modules["toyplug"].CALLS == {"prepare": 2, "step": 2}
    memory = {r["name"]: r["value"] for r in records if r["kind"] == "memory"}
    assert memory["optimizer_state/counts"] == 16  # the preconditioner's memory_usage


# -- errors, each one line naming the plugin ---------------------------------------------


def test_a_name_registered_by_two_distributions_is_a_clash(toy, tmp_path, capsys) -> None:
    toy.dist("other-plugin", "0.1", optimizers={"toy-sgd": "toyplug:make"})
    with pytest.raises(PluginError, match="'toy-sgd' is registered twice") as info:
        optimizers.names()
    assert "toy-plugin 1.2.3" in str(info.value) and "other-plugin 0.1" in str(info.value)
    out = tmp_path / "out"
    argv = ["run", "--workload", "toy-regression", "--optimizer", "sgd", *QUICK]
    assert cli.main([*argv, "--out", str(out)]) == 2
    line = _one_line(capsys)
    assert "toy-plugin 1.2.3" in line and "other-plugin 0.1" in line
    assert not out.exists()
    assert cli.main(["list"]) == 2
    assert "registered twice" in _one_line(capsys)


def test_a_plugin_family_named_like_a_suite_family_is_a_clash(site, capsys) -> None:
    site.module("toyplug")
    site.dist("shadow-plugin", "0.3", optimizers={"sgd": "toyplug:make"})
    assert cli.main(["list"]) == 2
    line = _one_line(capsys)
    assert "'sgd' is registered twice" in line and "shadow-plugin 0.3" in line
    assert "fngd-bench" in line


def test_a_plugin_family_named_like_a_builtin_label_is_not_shadowed(site, capsys) -> None:
    site.module("toyplug")
    site.dist("shadow-plugin", "0.3", optimizers={"fngd-iter": "toyplug:make"})
    for call in (labels, lambda: resolve_label("fngd-iter"), lambda: resolve_label("sgd")):
        with pytest.raises(PluginError, match="'fngd-iter' is a built-in optimizer label"):
            call()
    assert cli.main(["list"]) == 2
    line = _one_line(capsys)
    assert "shadow-plugin 0.3" in line and "fngd-iter" in line and "toyplug:make" in line


def test_a_plugin_that_fails_to_import_is_one_line_and_listed_as_broken(
    toy, tmp_path, capsys
) -> None:
    toy.module("brokenplug", 'raise ImportError("brokenplug needs the frobnicate package")\n')
    toy.dist(
        "broken-plugin",
        "2.0",
        workloads={"broken-wl": "brokenplug:build"},
        optimizers={"broken-opt": "brokenplug:make"},
    )
    out = tmp_path / "out"
    argv = ["run", "--workload", "broken-wl", "--optimizer", "sgd", *QUICK, "--out", str(out)]
    assert cli.main(argv) == 2
    line = _one_line(capsys)
    for part in ("'broken-wl'", "broken-plugin 2.0", "brokenplug:build", "frobnicate"):
        assert part in line
    argv = ["run", "--workload", "toy-regression", "--optimizer", "broken-opt", *QUICK]
    assert cli.main([*argv, "--out", str(out)]) == 2
    assert "'broken-opt' of broken-plugin 2.0" in _one_line(capsys)
    assert not out.exists()

    assert cli.main(["list"]) == 0
    lines = {x.split()[0]: x for x in capsys.readouterr().out.splitlines() if x.startswith("  ")}
    assert "(cannot be loaded:" in lines["broken-wl"] and "frobnicate" in lines["broken-wl"]
    assert "(cannot be loaded:" in lines["broken-opt"]
    assert "cannot be loaded" not in lines["toy-regression"] + lines["toy-sgd"]


@pytest.mark.parametrize(
    ("build", "attr"),
    [("build_made_up", "data_source"), ("build_no_per_sample", "per_sample_loss")],
)
def test_a_workload_that_breaks_the_contract_names_plugin_and_attribute(
    site, build, attr
) -> None:
    site.module("toyplug")
    site.dist("bad-plugin", "0.2", workloads={"bad-wl": f"toyplug:{build}"})
    with pytest.raises(PluginError) as info:
        workloads.get("bad-wl", seed=0)
    message = str(info.value)
    assert message.startswith("workload 'bad-wl' of bad-plugin 0.2") and attr in message


def test_a_factory_returning_a_non_optimizer_names_the_plugin(site) -> None:
    import torch

    site.module("toyplug")
    site.dist("bad-plugin", "0.2", optimizers={"bad-opt": "toyplug:make_bad"})
    model = torch.nn.Linear(2, 1)
    with pytest.raises(PluginError, match="'bad-opt' of bad-plugin 0.2.*returned dict"):
        factory.build("bad-opt", model)
    with pytest.raises(PluginError, match="'toyplug:make_lacking'.*lacks step, memory_usage"):
        factory.build("toyplug:make_lacking", model)


# -- references -------------------------------------------------------------------------


def beside(folder: Path) -> list[Path]:
    """What is in ``folder`` but Python's own bytecode cache of an imported file."""
    return sorted(p for p in folder.iterdir() if p.name != "__pycache__")


def test_references_run_with_file_safe_records(site, tmp_path, capsys) -> None:
    site.module("toyref")
    refs = tmp_path / "refs"  # not on sys.path: imported by its path
    refs.mkdir()
    (refs / "toyfile.py").write_text(TOY)
    file_wl, file_opt = f"{refs}/toyfile.py:build", f"{refs}/toyfile.py:make"
    out = tmp_path / "out"
    argv = ["run", "--workload", "toyref:build", file_wl, "--optimizer", "toyref:make", file_opt]
    assert cli.main([*argv, *QUICK, "--out", str(out)]) == 0, capsys.readouterr().err
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    assert len(files) == 4 and not any(c in name for name in files for c in "/:")
    pairs = {
        (r["workload"], r["optimizer"], r["family"], r["impl"])
        for r in read_dir(out)
        if r["kind"] == "cell"
    }
    assert pairs == {
        (w, o, o, "reference") for w in ("toyref:build", file_wl) for o in ("toyref:make", file_opt)
    }
    assert beside(refs) == [refs / "toyfile.py"]  # nothing written beside it


def test_references_profile_inside_out_and_ratio(site, tmp_path, capsys) -> None:
    site.module("toyref")
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "toyfile.py").write_text(TOY)
    file_wl = f"{refs}/toyfile.py:build"
    out = tmp_path / "prof"
    argv = ["profile", "--workload", file_wl, "--optimizer", "toyref:make", "--out", str(out)]
    assert cli.main([*argv, "--steps", "2", "--max-steps-per-epoch", "2", "--device", "cpu"]) == 0
    (records,) = out.rglob("profile.jsonl")
    assert records.relative_to(out).parts[0] == "_" + file_wl[1:].replace("/", "_").replace(
        ":", "_"
    )
    profiled = read_records(records)
    assert profiled and {(r["workload"], r["optimizer"]) for r in profiled} == {
        (file_wl, "toyref:make")
    }
    assert beside(refs) == [refs / "toyfile.py"]

    ratio = tmp_path / "ratio.json"
    argv = ["ratio", "--workload", file_wl, "--variants", "sgd", "toyref:make", "--rounds", "3"]
    assert cli.main([*argv, "--device", "cpu", "--out", str(ratio)]) == 0
    (result,) = json.loads(ratio.read_text())
    assert result["workload"] == file_wl and set(result["variants"]) == {"sgd", "toyref:make"}
    assert result["variants"]["toyref:make"]["hparams"]["lr"] == 0.05
    assert result["variants"]["toyref:make"]["median_s"] > 0


@pytest.mark.parametrize("kind", ["workload", "optimizer"])
@pytest.mark.parametrize(
    ("ref", "named"),
    [
        ("{tmp}/missing.py:build", "no file {tmp}/missing.py"),
        ("no_such_module_xyz:build", "No module named 'no_such_module_xyz'"),
        ("toyref:no_such_attr", "toyref has no attribute 'no_such_attr'"),
    ],
)
def test_a_reference_to_nothing_is_one_line(site, tmp_path, capsys, kind, ref, named) -> None:
    site.module("toyref")
    ref, named = ref.format(tmp=tmp_path), named.format(tmp=tmp_path)
    given = {"workload": "toyref:build", "optimizer": "sgd", kind: ref}
    out = tmp_path / "out"
    argv = ["run", "--workload", given["workload"], "--optimizer", given["optimizer"]]
    assert cli.main([*argv, *QUICK, "--out", str(out)]) == 2
    line = _one_line(capsys)
    assert line.startswith(f"fngd-bench: {kind} {ref!r}: ") and named in line
    assert not out.exists()


def test_a_plain_factory_has_its_keyword_defaults(site) -> None:
    site.module("toyref")
    assert factory.resolve("toyref:make", {}) == {"lr": 0.05, "momentum": 0.0}
    assert factory.resolve("toyref:make", {"lr": 0.2}) == {"lr": 0.2, "momentum": 0.0}
    with pytest.raises(ValueError, match=r"'beta' for 'toyref:make'; valid: lr, momentum"):
        factory.resolve("toyref:make", {"beta": 0.9})


# -- tune --------------------------------------------------------------------------------


def test_tune_a_plugin_optimizer_with_a_space(toy, tmp_path, capsys) -> None:
    out = tmp_path / "tune"
    argv = ["tune", "--workload", "toy-regression", "--optimizer", "toy-sgd", "--trials", "2"]
    argv += ["--epochs", "1", "--max-steps-per-epoch", "2", "--out", str(out), "--no-progress"]
    assert cli.main([*argv, "--device", "cpu", "--no-warm-start"]) == 0, capsys.readouterr().err
    (best,) = json.loads((out / "best_hparams.json").read_text())["studies"].values()
    assert best["optimizer"] == "toy-sgd" and best["complete_trials"] == 2
    assert set(best["params"]) == {"lr"} and 1e-3 <= best["params"]["lr"] <= 1e-1
    trials = [r for r in read_dir(out / "trials", recursive=True) if r["kind"] == "cell"]
    assert {r["impl"] for r in trials} == {"toy-plugin 1.2.3"}
    assert len({r["trial"] for r in trials}) == 2


def test_tune_an_optimizer_without_a_space_is_one_line(toy, tmp_path, capsys) -> None:
    out = tmp_path / "tune"
    argv = ["tune", "--workload", "toy-regression", "--optimizer", "toy-plain", "--trials", "2"]
    assert cli.main([*argv, "--epochs", "1", "--out", str(out)]) == 2
    line = _one_line(capsys)
    assert "--optimizer toy-plain" in line and "no search space" in line
    assert "toy-plugin 1.2.3" in line
    assert not out.exists()


def test_a_preconditioner_without_sample_ids_is_called_without_them(tmp_path) -> None:
    """kfac-pytorch's pattern: ``step()`` takes no arguments; the runner's ids stay out."""
    source = tmp_path / "argless.py"
    source.write_text(
        "import torch\n"
        "CALLS = []\n"
        "class Pre:\n"
        "    def prepare(self):\n"
        "        CALLS.append('prepare')\n"
        "    def step(self):\n"
        "        CALLS.append('step')\n"
        "    def memory_usage(self):\n"
        "        return {}\n"
        "    def state_dict(self):\n"
        "        return {}\n"
        "    def load_state_dict(self, state):\n"
        "        pass\n"
        "def make(model, lr=0.1):\n"
        "    return Pre(), torch.optim.SGD(model.parameters(), lr=lr)\n"
    )
    import torch

    from fngd.optimizers import build
    from fngd.optimizers.plugins import load_reference

    model = torch.nn.Linear(3, 2)
    opt = build(f"{source}:make", model)
    ids = torch.arange(4)
    opt.prepare(sample_ids=ids)
    model(torch.randn(4, 3)).sum().backward()
    opt.step(sample_ids=ids)
    assert load_reference(f"{source}:CALLS") == ["prepare", "step"]


PREFLIGHT = '''
import torch
from bench.workloads import from_datasets


def _parts(**kw):
    x = torch.randn(40, 3)
    return dict(model=lambda: torch.nn.Linear(3, 1), train=(x, x.sum(1)), test=(x, x.sum(1)),
                metric="mse", target=0.1, batch_size=8, epochs=1, **kw)


def typo(*, device, seed, batch_size, data_root, size):
    return from_datasets("t", loss="mes", device=device, seed=seed, **_parts())


def stray(*, device, seed, batch_size, data_root, size):
    return from_datasets("t", loss="mse", device=device, seed=seed,
                         **_parts(hparams={"sgdd": {"lr": 5.0}}))


def bad(model, lr=0.1):
    return {"lr": lr}
'''


@pytest.mark.parametrize(
    ("workload", "optimizer", "says"),
    [
        ("typo", "sgd", "its build failed: from_datasets: loss must be one of"),
        ("stray", "sgd", "its hparams name no optimizer label: 'sgdd'"),
        (None, "bad", "its factory returned dict"),
    ],
)
def test_a_plugin_mistake_stops_the_run_before_any_cell(
    workload, optimizer, says, tmp_path, capsys
) -> None:
    """Built once before the sweep: one line, exit 2, nothing written (not a failed cell)."""
    source = tmp_path / "pre.py"
    source.write_text(PREFLIGHT)
    w = f"{source}:{workload}" if workload else "mlp-digits"
    o = f"{source}:{optimizer}" if optimizer != "sgd" else "sgd"
    out = tmp_path / "out"
    assert cli.main(["run", "--workload", w, "--optimizer", o, "--out", str(out), *QUICK]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fngd-bench: ") and says in err[0], err
    assert not out.exists()


def test_a_file_reference_imports_the_modules_beside_it(tmp_path) -> None:
    from fngd.optimizers.plugins import load_reference

    (tmp_path / "helper_beside.py").write_text("VALUE = 41\n")
    main = tmp_path / "main_file.py"
    main.write_text("import helper_beside\nVALUE = helper_beside.VALUE + 1\n")
    assert load_reference(f"{tmp_path / 'main_file.py'}:VALUE") == 42
