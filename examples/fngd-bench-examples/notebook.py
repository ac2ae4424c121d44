"""What a notebook does with the suite, as a script: run a comparison (or read one already
run), summarise its records with pandas, and write the report.

    python examples/fngd-bench-examples/notebook.py results/diabetes

reads ``results/diabetes`` if it holds records (say, of ``fngd-bench run``), else runs
sgd, fngd and lion on diabetes-resmlp for 2 epochs into it. It prints each cell's test MSE
per epoch, and writes the report to ``results/diabetes/notebook/index.html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench import api

out = Path(sys.argv[1] if len(sys.argv) > 1 else "results/diabetes")
if any(out.glob("*.parquet")):
    frame = api.load(out)
else:
    frame = api.compare(["diabetes-resmlp"], ["sgd", "fngd", "lion"], epochs=2, out=out)

evals = frame[(frame["kind"] == "eval") & (frame["name"] == "mse")]
table = evals.pivot_table(index=["optimizer", "seed"], columns="epoch", values="value")
print(table.to_csv(float_format="%.17g"), end="")
print("report:", api.report(frame, out / "notebook" / "index.html"))
