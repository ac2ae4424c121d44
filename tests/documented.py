"""The command lines the documentation shows, read from its code blocks.

A documented command is a line of a shell code block (fenced ``sh``/``bash``/``console``/
``shell`` or untagged, or indented by four spaces) whose first word, after any ``VAR=value``
settings, is a program: one this test knows (:data:`PROGRAMS`) or one on ``PATH``. Lines
ending in ``\\`` continue on the next; ``# ...`` is a comment; ``a && b`` is two commands.
Lines of ``python`` blocks and diagrams (``bench/  the harness ...``) are not commands.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: What documents a command: the README and every page of docs/ and results/.
DOCUMENTS = ("README.md", "docs/*.md", "results/README.md")

#: Programs a documented command may start with, whether or not this machine has them.
PROGRAMS = frozenset(
    {"fngd-bench", "torchrun", "tox", "pytest", "ruff", "tensorboard", "mutmut", "pip",
     "pip3", "python", "python3"}
)

SHELL_LANGUAGES = frozenset({"", "sh", "bash", "shell", "console"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    """One documented command: where it is written and its words (shell-split)."""

    document: str
    line: int
    words: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def settings(self) -> dict[str, str]:
        """The ``VAR=value`` words in front of the program."""
        out = {}
        for word in self.words:
            if not _ASSIGNMENT.match(word):
                break
            name, _, value = word.partition("=")
            out[name] = value
        return out

    @property
    def argv(self) -> tuple[str, ...]:
        """The words from the program on."""
        return self.words[len(self.settings) :]


@dataclass
class Block:
    """One code block: its commands run in order, in one directory."""

    document: str
    line: int
    commands: list[Command] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"


def _is_program(word: str) -> bool:
    return word in PROGRAMS or shutil.which(word) is not None


def _commands(document: str, lines: list[tuple[int, str]]) -> list[Command]:
    out: list[Command] = []
    pending: list[str] = []
    start = 0
    for number, raw in lines:
        text = raw.strip()
        if not pending:
            start = number
        if text.endswith("\\"):
            pending.append(text[:-1])
            continue
        pending.append(text)
        joined, pending = " ".join(pending), []
        try:
            words = shlex.split(joined, comments=True)
        except ValueError:  # not shell (an unbalanced quote in a diagram)
            continue
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            part, words = words[:cut], words[cut + 1 :]
            settings = [w for w in part if _ASSIGNMENT.match(w)]
            program = part[len(settings)] if len(part) > len(settings) else ""
            if program and _is_program(program):
                out.append(Command(document, start, tuple(part)))
    return out


def blocks_of(path: Path) -> list[Block]:
    """The code blocks of one Markdown file that hold commands."""
    document = str(path.relative_to(REPO))
    blocks: list[Block] = []
    current: list[tuple[int, str]] = []
    fence: str | None = None  # the open fence's language, None outside a fence
    previous_blank = True
    start = 0

    def close() -> None:
        commands = _commands(document, current)
        if commands:
            blocks.append(Block(document, start, commands))
        current.clear()

    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            if fence is None:
                fence, start = line.strip()[3:].strip().lower(), number + 1
            else:
                if fence in SHELL_LANGUAGES:
                    close()
                current.clear()
                fence = None
            previous_blank = True
            continue
        if fence is not None:
            current.append((number, line))
            continue
        if line.startswith("    ") and (previous_blank or current):
            if not current:
                start = number
            current.append((number, line))
        elif current:
            close()
        previous_blank = not line.strip()
    close()
    return blocks


def documented_blocks() -> list[Block]:
    """Every block with commands, in the order of :data:`DOCUMENTS`."""
    paths: list[Path] = []
    for pattern in DOCUMENTS:
        paths += sorted(REPO.glob(pattern))
    return [block for path in paths for block in blocks_of(path)]


def install_into(source: str | Path, target: str | Path) -> list[str]:
    """The pip command that installs the project at ``source`` (a plugin) into the folder
    ``target`` alone, as a site directory of its own: nothing fetched, nothing else of the
    environment changed."""
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--target",
        str(target),
        str(source),
    ]
