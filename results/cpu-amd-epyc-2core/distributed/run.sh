#!/bin/bash
# 1-vs-2-process scaling of the quick preset, interleaved by workload
# in the project's environment (pip install -e .)
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD
for w in mlp-digits cnn-mnist1d; do
  for np in 1 2; do
    echo "== $w np$np $(date +%T)"
    python -m bench.cli run --preset quick --workload $w --nproc $np --out ${OUT:-results/distributed}/np$np --no-report --no-overhead --no-progress
  done
done
echo "== done $(date +%T)"
python -m bench.cli report ${OUT:-results/distributed} -o ${OUT:-results/distributed}/report/index.html
