#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20), from the seeds in
# fuzz/seeds/ and the corpus it grows in fuzz/corpus/. A crash stops it with
# the target's name; libFuzzer leaves the input in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh            # the short run .ci/run does
#   fuzz/run.sh 3600       # an hour each, for a long run
#   fuzz/run.sh 600 tree   # one target
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -O "${targets[@]:0:0}" >/dev/null
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  printf '%-12s ' "$t"
  if ! cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 >"corpus/$t.log" 2>&1; then
    echo "CRASH"
    tail -n 40 "corpus/$t.log"
    exit 1
  fi
  grep -o 'stat::number_of_executed_units: *[0-9]*' "corpus/$t.log" | awk '{print $2 " runs, 0 crashes"}'
done
