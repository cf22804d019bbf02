#!/usr/bin/env bash
# The diversity tables of docs/experiments.md: train a variant on the default schedule (5,000 steps), then evaluate
# its EMA generator (26,000 samples on Stacked MNIST, as the published mode counts are; 10,000 otherwise). Keeps
# the run's metrics.csv and the evaluation in bench/results/div-NAME*.
#
#   bash bench/diversity.sh NAME [dcgan.py flags...]
#   bash bench/diversity.sh sm-bce --dataset stacked-mnist
#   bash bench/diversity.sh sm-rpgan --dataset stacked-mnist --loss rpgan --r1 0.05 --r2 0.05 --r1-every 8
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
runs=${RUNS:-/tmp/runs}
num=10000
[[ " $* " == *" stacked-mnist "* ]] && num=26000
start=$(date +%s)
.venv/bin/python dcgan.py "$@" --checkpoint-dir "$runs/$name" --sample-dir "$runs/$name/grids" --tensorboard off \
    2> "$runs/$name.log"
end=$(date +%s)
.venv/bin/python dcgan.py evaluate --checkpoint-dir "$runs/$name" --num "$num" --json "bench/results/div-$name-eval.json" \
    2>> "$runs/$name.log" | tee "bench/results/div-$name-eval.txt"
cp "$runs/$name/metrics.csv" "bench/results/div-$name.csv"
echo "flags: $* (training wall $((end - start)) s, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2))" \
    >> "bench/results/div-$name-eval.txt"
