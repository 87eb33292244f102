#!/usr/bin/env bash
# The mount at scale: start-up with 1,000 snapshots (empty cache and
# remount), start-up on a 1 GB against a 10 GB repository, and the daemon's
# peak RSS (VmHWM) and `find` / `ls -lR` times on a 1,000,000-file
# snapshot (restic's mount side by side for the `find`). Each start figure is
# the median of 3 runs; prints a table of figures, targets and ratios.
#
#   benches/mount_scale.sh
#   BENCH_DIR=/path SCALE_RESTIC=0 benches/mount_scale.sh
#
# Needs root (mounting, dropping the page cache). Its data and repositories
# (15 GB) go to $BENCH_DIR/scale, are made on the first run (about 5
# minutes on 2 cores) and reused; a repository is rebuilt only when missing.
# SCALE_RESTIC=0 leaves restic out.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
bench=${BENCH_DIR:-/var/tmp/strongroom-bench}
s=$bench/scale
with_restic=${SCALE_RESTIC:-1}
mkdir -p "$s/data"

need=()
[ "$with_restic" = 0 ] || command -v restic >/dev/null || need+=(restic)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --locked -q --bin strongroom
sr=$here/target/release/strongroom
key=$bench/key
[ -f "$key" ] || $sr keygen --out "$key" --no-passphrase >/dev/null 2>&1
export RESTIC_PASSWORD=bench-password
mnt=$s/mnt
mkdir -p "$mnt"
umount -l "$mnt" 2>/dev/null || true

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
log() { printf '%s %s\n' "$(date -u +%T)" "$*" >&2; }

# The daemon under measure; always unmounted and stopped on the way out.
pid=
finish() {
  if mountpoint -q "$mnt"; then umount "$mnt" 2>/dev/null || umount -l "$mnt"; fi
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
}
trap finish EXIT

# --- Data and repositories (each made once; a repository is built under a
# temporary name, then renamed, so an interrupted run rebuilds it).
# new_repo NAME: an empty strongroom repository at $s/NAME.tmp.
new_repo() {
  rm -rf "$s/$1.tmp" "$s/build-cache"
  $sr -q -r "$s/$1.tmp" -k "$key" --cache-dir "$s/build-cache" init >/dev/null
}
backup() { $sr -q -r "$s/$1.tmp" -k "$key" --cache-dir "$s/build-cache" backup "${@:2}" >/dev/null; }
done_repo() { mv "$s/$1.tmp" "$s/$1"; rm -rf "$s/build-cache"; }

# 1,000,000 files: 1,000 directories of 1,000 files of a few distinct bytes.
files=$s/data/files
if [ ! -d "$files" ]; then
  log "making 1,000,000 files"
  rm -rf "$files.tmp"
  python3 - "$files.tmp" <<'EOF'
import os, sys
root = sys.argv[1]
for d in range(1000):
    p = os.path.join(root, "d%03d" % d)
    os.makedirs(p)
    for f in range(1000):
        with open(os.path.join(p, "f%03d" % f), "w") as fh:
            fh.write("%d\n" % (f % 64))
EOF
  mv "$files.tmp" "$files"
fi
if [ ! -d "$s/files" ]; then
  log "strongroom backup of the 1,000,000 files"
  t0=$(now); new_repo files; backup files "$files"; done_repo files; log "  $(since "$t0") s"
fi
if [ "$with_restic" != 0 ] && [ ! -d "$s/rs-files" ]; then
  log "restic backup of the 1,000,000 files"
  t0=$(now); rm -rf "$s/rs-files.tmp"
  RESTIC_CACHE_DIR=$s/build-cache restic -r "$s/rs-files.tmp" init >/dev/null
  RESTIC_CACHE_DIR=$s/build-cache restic -r "$s/rs-files.tmp" backup -q "$files" >/dev/null
  mv "$s/rs-files.tmp" "$s/rs-files"; rm -rf "$s/build-cache"; log "  $(since "$t0") s"
fi

# 1,000 snapshots of a small tree, one hour apart, each with one file changed.
if [ ! -d "$s/snaps" ]; then
  log "1,000 backups of a small tree"
  small=$s/data/small
  rm -rf "$small" && mkdir -p "$small/sub"
  for i in $(seq 20); do echo "$i" > "$small/sub/f$i"; done
  t0=$(now); new_repo snaps
  for i in $(seq 0 999); do
    echo "$i" > "$small/changed"
    backup snaps --time "$(date -u -d "@$((1577836800 + i * 3600))" +%FT%TZ)" "$small"
  done
  done_repo snaps; log "  $(since "$t0") s"
fi

# A 1 GB and a 10 GB repository, ten snapshots each: one file of random
# bytes (100 MiB, then 1 GiB) given new random content before each backup,
# so only one such file is ever on disk.
for size in 1 10; do
  name=r${size}g
  [ -d "$s/$name" ] && continue
  log "the $size GB repository"
  t0=$(now); new_repo "$name"
  mkdir -p "$s/data/random"
  for i in $(seq 10); do
    head -c $((size * 100))M /dev/urandom > "$s/data/random/data.bin"
    backup "$name" --time "2021-01-$(printf %02d "$i")T00:00:00Z" "$s/data/random"
  done
  rm -rf "$s/data/random"; done_repo "$name"; log "  $(since "$t0") s"
done
sizes() { for d in snaps r1g r10g files rs-files data/files; do [ -e "$s/$d" ] && du -sh "$s/$d"; done; true; }

# --- Measurements.
# start CMD...: starts a mount daemon and waits (up to 120 s) until its
# snapshots directory lists; sets $secs to the seconds that took.
secs=
start() {
  local t0; t0=$(now)
  "$@" >"$s/mount.log" 2>&1 &
  pid=$!
  for _ in $(seq 12000); do
    if [ -n "$(ls "$mnt/snapshots" 2>/dev/null)" ]; then secs=$(since "$t0"); return; fi
    kill -0 "$pid" 2>/dev/null || { cat "$s/mount.log" >&2; exit 1; }
    sleep 0.01
  done
  echo "the mount did not come up: $*" >&2; exit 1
}
stop() { umount "$mnt"; wait "$pid" || true; pid=; }
hwm() { awk '/VmHWM/ { printf "%d", $2 / 1024 }' "/proc/$pid/status"; }
median() { sort -n | sed -n 2p; }
declare -A fig runs

# starts NAME REPO: three cold starts (empty cache directory, page cache
# dropped), then three remounts (the cache of the runs before kept).
starts() {
  local name=$1 repo=$2 cache=$s/c-$1 c=() w=() i
  for i in 1 2 3; do
    rm -rf "$cache"; drop_caches
    start "$sr" -r "$repo" -k "$key" --cache-dir "$cache" mount "$mnt"; c+=("$secs"); stop
  done
  for i in 1 2 3; do
    drop_caches
    start "$sr" -r "$repo" -k "$key" --cache-dir "$cache" mount "$mnt"; w+=("$secs"); stop
  done
  fig[$name cold]=$(printf '%s\n' "${c[@]}" | median); runs[$name cold]="${c[*]}"
  fig[$name remount]=$(printf '%s\n' "${w[@]}" | median); runs[$name remount]="${w[*]}"
  log "$name: cold ${runs[$name cold]}, remount ${runs[$name remount]}"
}
starts snaps "$s/snaps"
starts r1g "$s/r1g"
starts r10g "$s/r10g"

# The 1,000,000-file snapshot, page cache dropped, a fresh daemon: `find`
# over all of it (the kernel then holds every inode), then `ls -lR`; the
# daemon's peak RSS after each. Restic's mount gets the `find` only: its
# `ls -lR` there takes over 6 minutes (405 s on 2 cores).
cache_size=64M
timed() { local t0; t0=$(now); "$@" >/dev/null; since "$t0"; }
walk() {
  local name=$1 top
  top=$(find "$mnt/snapshots/latest/" -maxdepth 12 -type d -name files -print -quit)
  local t0; t0=$(now)
  fig[$name count]=$(find "$top" | wc -l); fig[$name find]=$(since "$t0"); fig[$name rss find]=$(hwm)
  log "$name: find ${fig[$name find]} s (${fig[$name count]} entries), ${fig[$name rss find]} MB"
  [ "${2:-}" = ls ] || return 0
  fig[$name ls]=$(timed ls -lR "$top"); fig[$name rss ls]=$(hwm)
  log "$name: ls -lR ${fig[$name ls]} s, ${fig[$name rss ls]} MB"
}
rm -rf "$s/c-files"; drop_caches
start "$sr" -r "$s/files" -k "$key" --cache-dir "$s/c-files" mount "$mnt" --cache-size $cache_size
walk sr ls; stop
if [ "$with_restic" != 0 ]; then
  rm -rf "$s/c-rs"; drop_caches
  RESTIC_CACHE_DIR=$s/c-rs start restic -r "$s/rs-files" mount "$mnt"
  walk rs; stop
fi

# --- The table.
r() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
row() { printf '%-46s %10s %10s  %s\n' "$@"; }
echo
row figure value target ratio
row "start, 1,000 snapshots, cold (s)" "${fig[snaps cold]}" 1 "$(r "${fig[snaps cold]}" 1) of target; runs ${runs[snaps cold]}"
row "start, 1,000 snapshots, remount (s)" "${fig[snaps remount]}" 0.3 "$(r "${fig[snaps remount]}" 0.3) of target; runs ${runs[snaps remount]}"
row "start, 1 GB repository, cold (s)" "${fig[r1g cold]}" - "runs ${runs[r1g cold]}"
row "start, 10 GB repository, cold (s)" "${fig[r10g cold]}" "1.5x 1 GB" "10 GB/1 GB $(r "${fig[r10g cold]}" "${fig[r1g cold]}"); runs ${runs[r10g cold]}"
row "start, 1 GB repository, remount (s)" "${fig[r1g remount]}" - "runs ${runs[r1g remount]}"
row "start, 10 GB repository, remount (s)" "${fig[r10g remount]}" "1.5x 1 GB" "10 GB/1 GB $(r "${fig[r10g remount]}" "${fig[r1g remount]}"); runs ${runs[r10g remount]}"
target=$((150 + ${cache_size%M}))
row "1M files: find, cold (s)" "${fig[sr find]}" - "${fig[sr count]} entries${fig[rs find]:+; restic ${fig[rs find]} s, restic/sr $(r "${fig[rs find]}" "${fig[sr find]}")}"
row "1M files: ls -lR after it (s)" "${fig[sr ls]}" - ""
row "1M files: peak RSS after find (MB)" "${fig[sr rss find]}" "$target" "$(r "${fig[sr rss find]}" "$target") of target (150 MB + --cache-size $cache_size)${fig[rs rss find]:+; restic ${fig[rs rss find]} MB}"
row "1M files: peak RSS after ls -lR (MB)" "${fig[sr rss ls]}" "$target" "$(r "${fig[sr rss ls]}" "$target") of target"
echo
echo "disk used under $s:"
sizes
du -sh "$s" | awk '{ print "total " $1 }'
