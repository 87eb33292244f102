#!/usr/bin/env bash
# Cold sequential `cp` of a 1 GiB random file out of the mount (page cache
# dropped, fresh daemon, disk cache of blobs emptied), three runs each,
# against the null FUSE filesystem; then the same with the disk cache
# warm (`--disk-cache`, filled by one untimed run with a cache large enough for the file,
# page cache still dropped: the cached blobs are read from disk). Prints
# each run and the median. Compares strongroom binaries given as arguments
# (e.g. a build from before a change, then this one).
#
#   benches/mount_cp.sh [STRONGROOM_BINARY...]
#
# Needs root. Shares the 1 GiB file with benches/mount.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${BENCH_DIR:-/var/tmp/strongroom-bench}
cargo build --release --locked -q --bin strongroom --example nullfs
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=("$PWD/target/release/strongroom")
nullfs=$PWD/target/release/examples/nullfs
data=$bench/data/random
if [ ! -f "$data/1g.bin" ]; then
  mkdir -p "$data" && head -c 1G /dev/urandom > "$data/1g.bin.tmp" && mv "$data/1g.bin.tmp" "$data/1g.bin"
fi
repo=$bench/cp-repo mnt=$bench/cp-mnt
export STRONGROOM_CACHE_DIR=$bench/cp-cache
[ -f "$bench/key" ] || "${bins[0]}" keygen --out "$bench/key" --no-passphrase >/dev/null 2>&1
if [ ! -d "$repo" ]; then
  "${bins[0]}" -r "$repo" -k "$bench/key" init >/dev/null
  "${bins[0]}" -r "$repo" -k "$bench/key" backup "$data" >/dev/null
fi
mkdir -p "$mnt"; umount -l "$mnt" 2>/dev/null || true

now() { date +%s.%N; }
wait_for() { for _ in $(seq 3000); do [ -e "$1" ] && return; sleep 0.01; done; echo "no $1" >&2; exit 1; }
# timed_cp MODE CMD...: starts a daemon, times a cp of the file it serves
# with the page cache dropped; MODE cold empties the disk cache of blobs
# first, warm keeps it.
timed_cp() {
  local mode=$1; shift
  [ "$mode" = warm ] || rm -rf "$STRONGROOM_CACHE_DIR"/*/blobs
  sync; echo 3 > /proc/sys/vm/drop_caches
  "$@" >/dev/null 2>&1 &
  local pid=$! f
  if [ "$1" = "$nullfs" ]; then f=$mnt/data; else f=$mnt$data/1g.bin; fi
  wait_for "$f"
  local t0; t0=$(now)
  cp "$f" "$bench/cp-copy"
  awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'
  if [ "$1" != "$nullfs" ]; then cmp -s "$f" "$data/1g.bin" || echo "CONTENT DIFFERS" >&2; fi
  umount "$mnt"; wait "$pid" || true
  rm -f "$bench/cp-copy"
}
median() { sort -n | sed -n 2p; }
report() {
  local name=$1 mode=$2; shift 2
  local runs=() i
  if [ "$mode" = warm ]; then timed_cp cold "$@" >/dev/null; fi
  for i in 1 2 3; do runs+=("$(timed_cp "$mode" "$@")"); done
  printf '%-40s runs %s  median %s s\n' "$name" "${runs[*]}" "$(printf '%s\n' "${runs[@]}" | median)"
}
for b in "${bins[@]}"; do
  report "$b" cold "$b" -r "$repo" -k "$bench/key" mount "$mnt" --snapshot latest
  report "$b, disk cache warm" warm "$b" -r "$repo" -k "$bench/key" mount "$mnt" --snapshot latest --disk-cache --cache-size 2G
done
report "null filesystem" cold "$nullfs" "$mnt" 1024
