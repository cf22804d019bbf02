#!/usr/bin/env bash
# Equal-wall-time runs (docs/experiments.md, the projected discriminator): train a variant for --minutes of training
# time, then judge its weight-averaged G in every space that applies, 10,000 samples each (26,000 on Stacked MNIST):
#   the data's own evaluator (MNIST, Stacked MNIST: auto), or for the emoji and folders ImageNet features (what a
#   projected D sees) and the classifier train-evaluator trained on the data's classes (what it never sees; made
#   once per data and side, in the cache, if missing), and the memorisation check (bench/memorisation.py).
# Keeps metrics.csv, each evaluation's JSON and text, and the last grid in bench/results/wall-NAME*.
#
#   bash bench/wall.sh NAME MINUTES [dcgan.py flags...]
#   bash bench/wall.sh e64-default 15 --dataset emoji --resolution 64
#   bash bench/wall.sh e64-projected 15 --dataset emoji --resolution 64 --discriminator projected
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; minutes=$2; shift 2
runs=${RUNS:-/tmp/runs}
out=bench/results/wall-$name
py=.venv/bin/python
mkdir -p "$runs"
start=$(date +%s)
$py dcgan.py "$@" --minutes "$minutes" --checkpoint-dir "$runs/$name" --sample-dir "$runs/$name/grids" \
    --tensorboard off 2> "$runs/$name.log"
end=$(date +%s)
cp "$runs/$name/metrics.csv" "$out.csv"
cp "$(ls "$runs/$name"/grids/step_*.png | tail -1)" "$runs/$name-last.png"
num=10000
[[ " $* " == *" stacked-mnist "* ]] && num=26000
if [[ -n ${SPACES:-} ]]; then  # SPACES="imagenet": the ImageNet figures alone (the classifier: 20 min to train)
    spaces=$SPACES
elif [[ " $* " == *" emoji "* || " $* " == *" --dataset /"* ]]; then
    spaces="imagenet classifier"
else
    spaces="auto"
fi
for space in $spaces; do
    if [[ $space == classifier ]]; then  # the data's own classifier, trained once per data and side
        dataset=$(sed -n 's/.*"dataset": "\([^"]*\)".*/\1/p' "$runs/$name/config.json")
        resolution=$(sed -n 's/.*"resolution": \([0-9]*\).*/\1/p' "$runs/$name/config.json")
        $py dcgan.py evaluate --checkpoint-dir "$runs/$name" --num 20 --features classifier > /dev/null 2>&1 ||
            $py dcgan.py train-evaluator --dataset "$dataset" --resolution "$resolution" >> "$runs/$name.log" 2>&1
    fi
    $py dcgan.py evaluate --checkpoint-dir "$runs/$name" --num "$num" --features "$space" \
        --json "$out-$space.json" 2>> "$runs/$name.log" | tee "$out-$space.txt"
done
if [[ $spaces != auto && -z ${SPACES:-} ]]; then
    $py bench/memorisation.py "$runs/$name" --out "$runs/$name-memorisation" | tee "$out-memorisation.txt"
fi
echo "flags: --minutes $minutes $* (wall $((end - start)) s of training and set-up, $(nproc) cores," \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2))" | tee -a "$out-${spaces%% *}.txt"
