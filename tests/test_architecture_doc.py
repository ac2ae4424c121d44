"""The package map cannot rot: every module, package and path docs/ARCHITECTURE.md names in
backticks exists in the repository.

Checked spans (inline code and the lines of indented or fenced blocks alike):

- a path whose first part is a top-level entry of the repository (``fngd/``, ``bench/``,
  ``reports/``, ``tests/``, ``docs/``, ``results/``, ``tox.ini``, ...) and that is a folder
  (ends in ``/``), a file with a suffix or a glob, such as ``bench/cell/runner.py``,
  ``fngd/blocks/`` or ``bench/suite/test_*.py`` (phase names such as ``fngd/gram`` are
  neither);
- a dotted name under a package (``bench.cell.runner``, ``fngd.phases.phase``): its longest
  prefix that is a module must exist, and what follows must be defined in it (at module level,
  imported into it, or listed in its ``__all__``; one more name a class's own attribute).

Spans with placeholders (``OUT/<workload>...``) or whose first part is not in the repository
are not paths of the repository and are left alone. No module is imported.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "ARCHITECTURE.md"
PACKAGES = ("fngd", "bench", "reports", "tests")

_SPAN = re.compile(r"`([^`\n]+)`")
_DOTTED = re.compile(rf"^({'|'.join(PACKAGES)})(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_PATH = re.compile(r"^\.?[A-Za-z0-9_][A-Za-z0-9_.*-]*(/[A-Za-z0-9_.*-]+)*/?$")


def _top_level() -> set[str]:
    return {p.name for p in REPO.iterdir() if p.name not in (".git",)}


def names_in(text: str) -> list[str]:
    """The backticked spans of ``text`` that name a module, package or repository path, and
    the words of its diagrams that look like repository paths."""
    spans = _SPAN.findall(text)
    # diagrams (indented blocks): words such as bench/cell/build.py
    spans += [w for line in text.splitlines() if line.startswith("    ") for w in line.split()]
    top = _top_level()
    out = []
    for span in spans:
        span = span.strip().rstrip(",.;:)")
        dotted = _DOTTED.match(span)
        path = _PATH.match(span) and span.split("/")[0] in top and _path_like(span)
        if dotted or path:
            out.append(span)
    return sorted(set(out))


def _path_like(span: str) -> bool:
    """A folder (``fngd/blocks/``), a file with a suffix or a glob; not a phase name such as
    ``fngd/gram``, which has neither."""
    last = span.rstrip("/").rsplit("/", 1)[-1]
    return span.endswith("/") or "." in last.lstrip(".") or "*" in last


def _path_exists(span: str) -> bool:
    if "*" in span:
        return any(REPO.glob(span))
    return (REPO / span).exists()


@cache
def _defined(module_file: Path) -> dict[str, set[str]]:
    """Names defined in a module: ``{"": module-level names, "Class": its attributes}``."""
    tree = ast.parse(module_file.read_text())
    top: set[str] = set()
    classes: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            top.add(node.name)
        elif isinstance(node, ast.ClassDef):
            top.add(node.name)
            attrs = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    attrs.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    attrs.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    attrs |= {t.id for t in item.targets if isinstance(t, ast.Name)}
            classes[node.name] = attrs
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            top |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    top.add(target.id)
                    if target.id == "__all__" and isinstance(node.value, (ast.List, ast.Tuple)):
                        top |= {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
    return {"": top, **classes}


def _module_file(parts: list[str]) -> Path | None:
    base = REPO.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _dotted_exists(span: str) -> bool:
    parts = span.split(".")
    for cut in range(len(parts), 0, -1):
        module = _module_file(parts[:cut])
        if module is None:
            continue
        rest = parts[cut:]
        if not rest:
            return True
        names = _defined(module)
        if rest[0] not in names[""]:
            return False
        if len(rest) == 1:
            return True
        if len(rest) == 2 and rest[0] in names:
            return rest[1] in names[rest[0]]
        # an attribute of something imported (a submodule, another module's class): the
        # first name is enough
        return rest[0] not in names
    return False


def exists(span: str) -> bool:
    return _dotted_exists(span) if _DOTTED.match(span) else _path_exists(span)


NAMES = names_in(DOC.read_text())


def test_the_map_names_the_packages():
    for package in ("fngd/", "bench/", "reports/", "bench/cell/", "fngd/blocks/"):
        assert any(n == package or n.startswith(package) for n in NAMES), package


@pytest.mark.parametrize("name", NAMES)
def test_named_module_or_path_exists(name):
    assert exists(name), f"docs/ARCHITECTURE.md names `{name}`, which is not in the repository"


@pytest.mark.parametrize(
    "made_up",
    [
        "bench/cell/nothing.py",
        "bench/nowhere/",
        "fngd/blocks/*.rs",
        "bench.cell.nothing",
        "bench.presets",
        "fngd.preconditioner.NoSuchThing",
        "fngd.coefficients.SampleTable.no_such_method",
    ],
)
def test_a_made_up_name_is_caught(made_up):
    assert made_up in names_in(f"a line naming `{made_up}`.")
    assert not exists(made_up)
