"""The compiled weighted-sum blocks (``weighted_sum.cpp``), built on first use.

In the weighted-sum phase of layer scope every block already knows its per-sample scales
when its forward runs. The compiled autograd function then computes that step's block
gradients in C++, so a small layer's step pays no Python in backward (the Python block
function costs a noticeable share of an SGD step on small models; see the README's step
ratios). ``torch.utils.cpp_extension`` compiles it once per torch build into its cache
directory (about half a minute; ``TORCH_EXTENSIONS_DIR`` moves the cache).

``FNGD(native=...)``: ``"auto"`` uses it where it builds and falls back to the Python block
function otherwise, with one warning; ``"on"`` requires it; ``"off"`` never builds it.
``FNGD_NATIVE=off`` in the environment turns ``"auto"`` off.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

NATIVE_CHOICES = ("auto", "on", "off")
NAME = "fngd_weighted_sum"
#: Resolved, so that a checkout reached through a link builds the same ``build.ninja`` (a
#: different source path makes ninja rebuild, a minute on two cores).
SOURCE = Path(__file__).resolve().with_name("weighted_sum.cpp")

#: A build lock older than this is left by a build that was killed (torch would wait on it
#: for ever); a real build here takes about a minute.
STALE_LOCK_SECONDS = 600

_module: ModuleType | None = None
_error: str | None = None


def check(native: str) -> None:
    """One clear error for a choice that is not ``auto``, ``on`` or ``off``."""
    if native not in NATIVE_CHOICES:
        raise ValueError(f"unknown native {native!r}; valid: {', '.join(NATIVE_CHOICES)}")


def kernels(native: str = "auto") -> ModuleType | None:
    """The compiled module, or None (``"off"``, or ``"auto"`` where it cannot be built)."""
    check(native)
    if native == "off" or (native == "auto" and os.environ.get("FNGD_NATIVE") == "off"):
        return None
    module = _load()
    if module is None and native == "on":
        raise RuntimeError(f"native FNGD blocks could not be built: {_error}")
    return module


def _built(build_dir: Path) -> bool:
    return any(build_dir.glob(f"{NAME}*.so"))


def build_directory() -> Path:
    """Where the blocks are built: torch's extension cache, one folder per source file (its
    path and contents), so that two checkouts side by side (a clone, a mutation-testing copy)
    never rebuild each other's blocks or wait on each other's build."""
    from torch.utils import cpp_extension

    digest = hashlib.sha256(str(SOURCE).encode() + SOURCE.read_bytes()).hexdigest()[:12]
    cache = Path(cpp_extension._get_build_directory(NAME, verbose=False)).parent
    folder = cache / f"{NAME}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _clear_stale_lock(folder: Path) -> None:
    """Remove the lock a killed build left (torch's ``FileBaton``), which would hang every
    later build in this folder."""
    lock = folder / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_SECONDS:
        lock.unlink(missing_ok=True)
        print(
            f"fngd: removed a stale build lock ({lock}, {age / 60:.0f} min old)",
            file=sys.stderr,
            flush=True,
        )


def _load() -> ModuleType | None:
    """Build (or find in the cache) and import the extension, once per process."""
    global _module, _error
    if _module is None and _error is None:
        try:
            from torch.utils import cpp_extension

            folder = build_directory()
            _clear_stale_lock(folder)
            if not _built(folder):
                print(
                    "fngd: building the compiled FNGD blocks, once per machine and torch "
                    "(about half a minute)",
                    file=sys.stderr,
                    flush=True,
                )
            _module = cpp_extension.load(
                name=NAME,
                sources=[str(SOURCE)],
                extra_cflags=["-O2"],
                build_directory=str(folder),
                verbose=False,
            )
        except Exception as e:  # no compiler, no ninja, no headers: the Python blocks
            _error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e) else ''}"
            warnings.warn(
                f"FNGD falls back to its Python block function ({_error}); "
                "native='off' or FNGD_NATIVE=off skips the build",
                RuntimeWarning,
                stacklevel=3,
            )
    return _module
