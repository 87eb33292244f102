#!/usr/bin/env bash
# Load on one strongroom server for several minutes: 8 clients backing up
# at once while 4 mounts copy a snapshot out, round after round, on
# loopback (tests/server_load.rs with many rounds, in a release build).
# Prints the rounds, the time they took, the server's peak RSS and the
# requests served; fails on any error, lost object or a peak over 1.5 GiB.
#
#   benches/load.sh              # 40 rounds
#   ROUNDS=100 benches/load.sh
#
# Needs root (FUSE) and Garage only if other tests are run with it.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-40}
STRONGROOM_LOAD_ROUNDS=$rounds cargo test --release --locked -q --test server_load -- --nocapture 2>&1 |
  grep -E "clients x|test result|panicked|difference" || true
