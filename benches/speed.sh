#!/usr/bin/env bash
# The write and read pipelines, strongroom against restic on the same data
# in the same run: ROUNDS rounds (default 3), the two tools taking turns to
# go first, the page cache dropped before every timed command. Prints the
# median seconds and peak RSS of each, and restic/strongroom ratios (above
# 1.0: strongroom is faster).
#
#   benches/speed.sh                 # 3 rounds, both data sets
#   ROUNDS=5 SETS=large benches/speed.sh
#   SR=/path/to/strongroom benches/speed.sh   # another build of strongroom
#
# Data sets: "large" is one 1 GiB file of random bytes, "tree" the Linux
# source tree (linux-source-6.1, about 80,000 files). Figures per set:
# backup into a new repository; an unchanged re-backup (cold: page cache
# dropped; warm: right after the cold one); restore; check --read-data.
# Needs root (apt-get for restic, linux-source-6.1 and time; dropping caches).
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
bench=${BENCH_DIR:-/var/tmp/strongroom-bench}
rounds=${ROUNDS:-3}
sets=${SETS:-large tree}
mkdir -p "$bench"

need=()
command -v restic >/dev/null || need+=(restic)
[ -x /usr/bin/time ] || need+=(time)
ls /usr/src/linux-source-6.1.tar.* >/dev/null 2>&1 || need+=(linux-source-6.1)
command -v xz >/dev/null || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ -z "${SR:-}" ]; then
  cargo build --release --locked -q
  SR=$here/target/release/strongroom
fi

data=$bench/data
if [ ! -d "$data/linux" ]; then
  rm -rf "$data/linux.tmp" && mkdir -p "$data/linux.tmp"
  tar -xf /usr/src/linux-source-6.1.tar.* -C "$data/linux.tmp"
  mv "$data/linux.tmp" "$data/linux"
fi
if [ ! -f "$data/random/1g.bin" ]; then
  mkdir -p "$data/random" && head -c 1G /dev/urandom >"$data/random/1g.bin.tmp" && mv "$data/random/1g.bin.tmp" "$data/random/1g.bin"
fi
# Let fresh files settle past the files cache's timestamp granularity.
sleep 2

# Before a timed command the disk under $bench goes quiet: the deletion of
# the last repository (its discards, if the filesystem is mounted with
# `discard`, and the journal's write-back) is not charged to the next
# command. Quiet: its I/O counters unchanged for half a second, nothing in
# flight; at most 30 s.
disk_stat=/sys/class/block/$(basename "$(df --output=source "$bench" | tail -n1)")/stat
settle() {
  sync
  [ -r "$disk_stat" ] || return 0
  local before now
  before=$(cat "$disk_stat")
  for _ in $(seq 1 60); do
    sleep 0.5
    now=$(cat "$disk_stat")
    if [ "$now" = "$before" ] && [ "$(awk '{print $9}' <<<"$now")" = 0 ]; then return 0; fi
    before=$now
  done
}
drop_caches() { settle; echo 3 >/proc/sys/vm/drop_caches; }

export RESTIC_PASSWORD=bench-password
w=$bench/speed
key=$bench/key
[ -f "$key" ] || "$SR" keygen --out "$key" --no-passphrase >/dev/null 2>&1

sr_cmd=("$SR" -q -r "$w/sr-repo" -k "$key" --cache-dir "$w/sr-cache")
rs_cmd=(restic -q -r "$w/rs-repo" --cache-dir "$w/rs-cache")

# run TOOL FIGURE [cold|warm] ARGS...: times one command; appends
# "seconds rss_kib" to $w/TOOL.FIGURE.
run() {
  local tool=$1 figure=$2 cache=$3; shift 3
  local -n cmd=${tool}_cmd
  [ "$cache" = cold ] && drop_caches
  /usr/bin/time -f '%e %M' -o "$w/time.out" "${cmd[@]}" "$@" >/dev/null 2>"$w/stderr.out" ||
    { echo "$tool $figure failed:" >&2; cat "$w/stderr.out" >&2; exit 1; }
  tail -n1 "$w/time.out" >>"$w/$tool.$figure"
}

# one TOOL SET SRC ROUND: one round of every figure for one tool.
#
# Each restore goes to a directory of its own, and the restored trees are
# removed only once the set is done: ext4 (without a journal, as here)
# passes over inodes freed in the last minute when it allocates new ones,
# so a restore started within a minute of deleting the last round's 78,000
# files spent a third of its time in that search (`recently_deleted`), and
# whichever tool came next paid for the other's deletion.
one() {
  local tool=$1 set=$2 src=$3 round=$4
  local restored=$w/restored/$tool-$round
  rm -rf "$w/$tool-repo" "$w/$tool-cache"
  local -n cmd=${tool}_cmd
  "${cmd[@]}" init >/dev/null 2>&1
  run "$tool" "backup-$set" cold backup "$src"
  run "$tool" "rebackup-cold-$set" cold backup "$src"
  run "$tool" "rebackup-warm-$set" warm backup "$src"
  run "$tool" "restore-$set" cold restore latest --target "$restored"
  cmp_tree "$src" "$restored$src" || { echo "$tool: the restore of $set differs from the source" >&2; exit 1; }
  run "$tool" "check-$set" cold check --read-data
  du -sb "$w/$tool-repo" | cut -f1 >"$w/$tool.size-$set"
  rm -rf "$w/$tool-repo" "$w/$tool-cache"
}

cmp_tree() { diff -rq "$1" "$2" >/dev/null; }

rm -rf "$w" && mkdir -p "$w"
for set in $sets; do
  case $set in
    large) src=$data/random ;;
    tree) src=$data/linux ;;
    *) echo "unknown set $set" >&2; exit 2 ;;
  esac
  for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then one sr "$set" "$src" "$r"; one rs "$set" "$src" "$r"
    else one rs "$set" "$src" "$r"; one sr "$set" "$src" "$r"; fi
    echo "round $r of $set done" >&2
  done
  rm -rf "$w/restored"
done

# median FILE COLUMN
median() { awk -v c="$2" '{print $c}' "$1" | sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "inf" }'; }

printf '\n%s rounds; medians; page cache dropped before each command but "rebackup warm"\n' "$rounds"
printf '%-24s %10s %10s %7s %12s %12s\n' figure "strongroom" restic ratio "sr RSS MB" "restic RSS MB"
for set in $sets; do
  for f in backup rebackup-cold rebackup-warm restore check; do
    a=$(median "$w/sr.$f-$set" 1); b=$(median "$w/rs.$f-$set" 1)
    ma=$(median "$w/sr.$f-$set" 2); mb=$(median "$w/rs.$f-$set" 2)
    printf '%-24s %9ss %9ss %7s %12d %12d\n' "$f ($set)" "$a" "$b" "$(ratio "$b" "$a")" \
      "$((${ma%.*} / 1024))" "$((${mb%.*} / 1024))"
  done
  printf '%-24s %10s %10s\n' "repo bytes ($set)" "$(cat "$w/sr.size-$set")" "$(cat "$w/rs.size-$set")"
done
echo "ratio = restic seconds / strongroom seconds; every round's figures are in $w"
