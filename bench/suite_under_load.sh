#!/usr/bin/env bash
# make test's pytest step N times in a row (default 5) while another process keeps every core busy: the suite
# must not depend on how fast the machine is. Prints each run's summary line; exits 1 if any run failed.
#   bash bench/suite_under_load.sh [N] > bench/results/suite-under-load.txt
set -u
cd "$(dirname "$0")/.."
n=${1:-5}
cores=$(nproc)
hogs=()
for _ in $(seq "$cores"); do python3 -c "while True: pass" & hogs+=($!); done
trap 'kill "${hogs[@]}" 2>/dev/null' EXIT
echo "# $(date -u +%F) $(git describe --always --dirty), $(nproc) cores ($(python3 -c 'import platform; print(platform.processor() or platform.machine())')), $cores busy loops beside the suite"
failed=0
for i in $(seq "$n"); do
  start=$(date +%s)
  line=$(DCGAN_FULL_SUITE=1 .venv/bin/python -m pytest -q -n "$cores" --dist load --maxschedchunk 1 -p no:cacheprovider tests 2>&1 | tail -1)
  echo "run $i: $line ($(( $(date +%s) - start )) s wall)"
  [[ "$line" == *failed* || "$line" == *error* ]] && failed=1
done
exit $failed
