#!/bin/sh
# The tuned verdict with the rivals (results/README.md, "The rivals, tuned"): equal-budget
# studies for every optimiser on three workloads (one of them a plugin's, from examples/),
# then each study's best trial over five seeds on the test split, then the report.
# Needs the rivals extra (pip install -e '.[dev]' holds it). Records go to $1 (default
# results/rivals); the report to $1/final/report/index.html.
set -e
OUT=${1:-results/rivals}
pip install -e examples/fngd-bench-examples # diabetes-resmlp, a user-style workload
W="mlp-digits cnn-mnist1d-large diabetes-resmlp"
O="sgd adamw kfac fngd fngd-net muon soap psgd-kron sf-adamw"
# shellcheck disable=SC2086
fngd-bench tune --workload $W --optimizer $O --trials 20 --epochs 30 --workers 2 \
    --out "$OUT/study"
# shellcheck disable=SC2086
fngd-bench run --workload $W --optimizer $O --seeds 0 1 2 3 4 \
    --hparams-from "$OUT/study/best_hparams.json" --out "$OUT/final"
