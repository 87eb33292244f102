#!/usr/bin/env bash
# Where backup, restore and check --read-data spend their time, so the next
# change to a pipeline starts from data: each runs once under `perf record`
# (a software clock: this machine kind has no hardware counters), page cache
# dropped first, and the top functions are printed, user space and kernel
# apart, with the share of samples in memory copies.
#
#   benches/profile.sh                       # the 1 GiB random file
#   SET=tree benches/profile.sh              # the Linux source tree
#   TOOL=callgrind SET=small benches/profile.sh
#
# TOOL=callgrind instead counts instructions with valgrind (repeatable on a
# noisy machine, but 50x slower: use it on SET=small, the 64 MiB head of
# the random file). Reports stay in $BENCH_DIR/profile.
# Needs root (apt-get for linux-perf or valgrind; dropping caches).
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
bench=${BENCH_DIR:-/var/tmp/strongroom-bench}
set_=${SET:-large}
tool=${TOOL:-perf}
out=$bench/profile
top=${TOP:-25}

case $tool in
  perf) command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; } ;;
  callgrind) command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; } ;;
  *) echo "TOOL is perf or callgrind" >&2; exit 2 ;;
esac

cargo build --release --locked -q
sr=$here/target/release/strongroom

data=$bench/data
case $set_ in
  large | small)
    if [ ! -f "$data/random/1g.bin" ]; then
      mkdir -p "$data/random" && head -c 1G /dev/urandom >"$data/random/1g.bin.tmp" && mv "$data/random/1g.bin.tmp" "$data/random/1g.bin"
    fi
    src=$data/random
    if [ "$set_" = small ]; then
      mkdir -p "$data/small" && [ -f "$data/small/64m.bin" ] || head -c 64M "$data/random/1g.bin" >"$data/small/64m.bin"
      src=$data/small
    fi
    ;;
  tree)
    [ -d "$data/linux" ] || { echo "run benches/speed.sh once first: it unpacks the Linux source tree" >&2; exit 2; }
    src=$data/linux
    ;;
  *) echo "SET is large, small or tree" >&2; exit 2 ;;
esac

rm -rf "$out" && mkdir -p "$out"
key=$bench/key
[ -f "$key" ] || "$sr" keygen --out "$key" --no-passphrase >/dev/null 2>&1
srq=("$sr" -q -r "$out/repo" -k "$key" --cache-dir "$out/cache")
"${srq[@]}" init >/dev/null

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# The functions that copy memory, user space and kernel.
copies='memmove|memcpy|copy_user|_copy_to_iter|_copy_from_iter|copy_folio|copy_page|rep_movs'

profile() {
  local name=$1; shift
  drop_caches
  if [ "$tool" = perf ]; then
    perf record -q -e cpu-clock -F 1999 -g -o "$out/$name.perf" "$@" >/dev/null 2>"$out/$name.err"
    perf report -i "$out/$name.perf" --no-children --sort dso,sym --stdio 2>/dev/null |
      grep -E '^ +[0-9.]+%' >"$out/$name.txt" || true
    local total
    total=$(perf report -i "$out/$name.perf" --stdio 2>/dev/null | sed -n 's/^# Samples: \([0-9KM]*\).*/\1/p' | head -1)
    printf '\n== %s: %s samples at 1999 Hz (both cores) ==\n' "$name" "$total"
    head -n "$top" "$out/$name.txt" | awk '{ $2=""; print }' | cut -c1-110
    awk -v re="$copies" '$0 ~ re { s += $1 } END { printf "memory copies: %.1f%% of samples\n", s }' "$out/$name.txt"
    awk '/\[kernel/ { s += $1 } END { printf "kernel: %.1f%% of samples\n", s }' "$out/$name.txt"
  else
    valgrind --tool=callgrind --callgrind-out-file="$out/$name.callgrind" "$@" >/dev/null 2>"$out/$name.err"
    callgrind_annotate "$out/$name.callgrind" 2>/dev/null | sed -n '/^Ir/,$p' | head -n $((top + 3)) >"$out/$name.txt"
    printf '\n== %s: instructions (callgrind) ==\n' "$name"
    cut -c1-140 "$out/$name.txt"
    awk -v re="$copies" '$0 ~ re { gsub(/,/, "", $1); s += $1 } NR == 1 { } END { printf "memory copies: %d instructions\n", s }' "$out/$name.txt"
  fi
}

profile backup "${srq[@]}" backup "$src"
profile restore "${srq[@]}" restore latest --target "$out/restore"
rm -rf "$out/restore"
profile check "${srq[@]}" check --read-data
echo
echo "reports: $out/{backup,restore,check}.txt; perf report -i $out/NAME.perf for the call graphs"
