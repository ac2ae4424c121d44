"""Every ``python`` code block of the README and docs/ runs as written.

A block uses names a reader brings (``model``, ``loader``, ``loss_fn``, ``optimizer``); the
:data:`PRELUDE` defines small ones: an MLP, a loader that yields ``(x, y, idx)`` over the same
32 samples for two epochs (so FNGD inverts in the first and reuses in the second), a loss and
an SGD optimiser. A block that wraps the model in ``DistributedDataParallel`` gets a process
group of one gloo rank first. Each block runs in a fresh interpreter, so that it imports
what it uses itself. Afterwards every parameter's gradient must be finite, and an FNGD the
block made (``pre``, or ``opt.preconditioner``) must have inverted and then reused its
coefficients (its last step a weighted sum), as the README says it does. A block that never
names ``model`` (the Python API's, ``bench.compare``) trains nothing of the prelude's, and
only has to run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/*.md")

PRELUDE = """
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
_x, _y = torch.randn(32, 6), torch.randint(0, 3, (32,))
loader = [
    (_x[i : i + 8], _y[i : i + 8], torch.arange(i, i + 8))
    for _epoch in range(2)
    for i in range(0, 32, 8)
]
loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""

PROCESS_GROUP = """
import torch.distributed as _dist

_dist.init_process_group("gloo", init_method={init!r}, rank=0, world_size=1)
"""

EPILOGUE = """
import torch as _torch

for _name, _p in model.named_parameters():
    assert _p.grad is not None and _torch.isfinite(_p.grad).all(), _name
_pre = globals().get("pre")
if _pre is None and "opt" in globals():
    _pre = opt.preconditioner
if type(_pre).__name__ == "FNGD" and _pre.share != "none":
    assert _pre.counts["inversion"] > 0, _pre.counts
    assert _pre.mode == "weighted_sum", _pre.mode
print("snippet ran:", type(_pre).__name__, getattr(_pre, "mode", None))
"""

#: What follows a block that does not use the prelude's ``model``.
RAN = """
print("snippet ran: without the prelude's model")
"""

_FENCE = re.compile(r"^```python\s*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[tuple[str, str]]:
    """``(where, code)`` of every python block of :data:`DOCUMENTS`."""
    out = []
    for pattern in DOCUMENTS:
        for path in sorted(REPO.glob(pattern)):
            text = path.read_text()
            for match in _FENCE.finditer(text):
                line = text.count("\n", 0, match.start()) + 2
                out.append((f"{path.relative_to(REPO)}:{line}", match.group(1)))
    return out


BLOCKS = python_blocks()


def test_the_readme_has_snippets():
    assert any(where.startswith("README.md:") for where, _ in BLOCKS)


@pytest.mark.parametrize("where, code", BLOCKS, ids=[w for w, _ in BLOCKS])
def test_snippet_runs(where, code, tmp_path):
    parts = [PRELUDE]
    if "DistributedDataParallel" in code:
        parts.append(PROCESS_GROUP.format(init=f"file://{tmp_path / 'group'}"))
    parts += [textwrap.dedent(code), EPILOGUE if "model" in code else RAN]
    script = tmp_path / "snippet.py"
    script.write_text("\n".join(parts))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{where}:\n{code}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    assert "snippet ran:" in done.stdout
