#!/usr/bin/env bash
# Backup, unchanged re-backup and restore, strongroom against restic, on the
# same data in the same run. Prints seconds, peak RSS and restic/strongroom
# ratios (above 1.0: strongroom is faster).
#
#   benches/core.sh            # Linux source tree (linux-source-6.1) and a 1 GiB random file
#   BENCH_DIR=/path benches/core.sh
#
# Needs root for apt-get (restic, linux-source-6.1, time) and to drop the
# page cache before each restore.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
bench=${BENCH_DIR:-/var/tmp/strongroom-bench}
mkdir -p "$bench"

need=()
command -v restic >/dev/null || need+=(restic)
[ -x /usr/bin/time ] || need+=(time)
ls /usr/src/linux-source-6.1.tar.* >/dev/null 2>&1 || need+=(linux-source-6.1)
command -v xz >/dev/null || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --locked -q
sr=$here/target/release/strongroom

data=$bench/data
if [ ! -d "$data/linux" ]; then
  rm -rf "$data/linux.tmp" && mkdir -p "$data/linux.tmp"
  tar -xf /usr/src/linux-source-6.1.tar.* -C "$data/linux.tmp"
  mv "$data/linux.tmp" "$data/linux"
fi
if [ ! -f "$data/random/1g.bin" ]; then
  mkdir -p "$data/random" && head -c 1G /dev/urandom > "$data/random/1g.bin.tmp" && mv "$data/random/1g.bin.tmp" "$data/random/1g.bin"
fi
# Let fresh files settle past the files cache's timestamp granularity.
sleep 2

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

# measure NAME CMD...: runs CMD, records wall seconds and peak RSS (KiB).
declare -A secs rss
measure() {
  local name=$1; shift
  local out
  /usr/bin/time -f '%e %M' -o "$bench/time.out" "$@" >/dev/null 2>"$bench/stderr.out" ||
    { echo "$name failed:" >&2; cat "$bench/stderr.out" >&2; exit 1; }
  out=$(tail -n1 "$bench/time.out")
  secs[$name]=${out% *}; rss[$name]=${out#* }
}

export RESTIC_PASSWORD=bench-password
export STRONGROOM_CACHE_DIR=$bench/sr-cache
for set in linux random; do
  src=$data/$set
  rm -rf "$bench/sr-repo" "$bench/rs-repo" "$bench/sr-cache" "$bench/rs-cache" "$bench/restore"
  [ -f "$bench/key" ] || $sr keygen --out "$bench/key" --no-passphrase >/dev/null 2>&1
  $sr -r "$bench/sr-repo" -k "$bench/key" init >/dev/null 2>&1
  restic -r "$bench/rs-repo" --cache-dir "$bench/rs-cache" init >/dev/null 2>&1

  # The same warm page cache for both: backups are timed on CPU, not disk.
  find "$src" -type f -print0 | xargs -0 cat >/dev/null
  measure "sr-backup-$set" $sr -r "$bench/sr-repo" -k "$bench/key" backup "$src"
  measure "rs-backup-$set" restic -r "$bench/rs-repo" --cache-dir "$bench/rs-cache" backup "$src"
  measure "sr-rebackup-$set" $sr -r "$bench/sr-repo" -k "$bench/key" backup "$src"
  measure "rs-rebackup-$set" restic -r "$bench/rs-repo" --cache-dir "$bench/rs-cache" backup "$src"

  drop_caches
  measure "sr-restore-$set" $sr -r "$bench/sr-repo" -k "$bench/key" restore latest --target "$bench/restore/sr"
  drop_caches
  measure "rs-restore-$set" restic -r "$bench/rs-repo" --cache-dir "$bench/rs-cache" restore latest --target "$bench/restore/rs"
  diff -rq "$src" "$bench/restore/sr$src" >/dev/null || { echo "strongroom restore of $set differs from the source" >&2; exit 1; }
  sr_size=$(du -sb "$bench/sr-repo" | cut -f1); rs_size=$(du -sb "$bench/rs-repo" | cut -f1)
  secs[size-sr-$set]=$sr_size; secs[size-rs-$set]=$rs_size
  rm -rf "$bench/restore"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "inf" }'; }
printf '\n%-28s %12s %12s %10s %14s %14s\n' "figure" "strongroom s" "restic s" "ratio" "sr peak RSS" "restic RSS"
for set in linux random; do
  for op in backup rebackup restore; do
    printf '%-28s %12s %12s %10s %11s MB %11s MB\n' "$op ($set)" "${secs[sr-$op-$set]}" "${secs[rs-$op-$set]}" \
      "$(ratio "${secs[rs-$op-$set]}" "${secs[sr-$op-$set]}")" \
      "$(( ${rss[sr-$op-$set]} / 1024 ))" "$(( ${rss[rs-$op-$set]} / 1024 ))"
  done
  printf '%-28s %12s %12s\n' "repository bytes ($set)" "${secs[size-sr-$set]}" "${secs[size-rs-$set]}"
done
echo "ratio = restic seconds / strongroom seconds (≥ 1.0: strongroom at least as fast)"
