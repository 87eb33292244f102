#!/usr/bin/env bash
# Load on one strongroom server for several minutes: 8 clients backing up
# at once while 4 mounts copy a snapshot out, round after round, on
# loopback (tests/server_load.rs with many rounds, in a release build).
# Prints the rounds, the time they took, the server's peak RSS and the
# requests served; fails on any error, lost object or a peak over 1.5 GiB.
# The whole output is kept in $BENCH_DIR/load.log.
#
#   benches/load.sh              # 40 rounds
#   ROUNDS=100 benches/load.sh
#
# Needs root (FUSE).
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${BENCH_DIR:-/var/tmp/strongroom-bench}
mkdir -p "$bench"
rounds=${ROUNDS:-40}
set +e
STRONGROOM_LOAD_ROUNDS=$rounds cargo test --release --locked -q --test server_load -- --nocapture >"$bench/load.log" 2>&1
rc=$?
set -e
grep -E "clients x|test result" "$bench/load.log" || true
if [ $rc -ne 0 ]; then
  grep -E -A12 "panicked|expected success" "$bench/load.log" | head -80
  exit $rc
fi
