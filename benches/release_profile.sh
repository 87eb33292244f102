#!/usr/bin/env bash
# The release profile's options, measured: the same source built four ways
# (as Cargo.toml has it; lto = "fat"; codegen-units = 1; all of lto = "fat",
# codegen-units = 1 and panic = "abort"), each build in a target directory
# of its own, then timed in turns on the same data, page cache dropped
# before each command: backup of the 1 GiB random file, check --read-data
# of it, backup of the Linux source tree. Prints medians, ratios to the
# profile as it is, and binary sizes.
#
#   benches/release_profile.sh          # 3 rounds
#   ROUNDS=5 benches/release_profile.sh
#
# The four builds take about 25 minutes on 2 cores the first time.
# Needs root (dropping caches); run benches/speed.sh once first for the data.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${BENCH_DIR:-/var/tmp/strongroom-bench}
rounds=${ROUNDS:-3}
data=$bench/data
[ -f "$data/random/1g.bin" ] && [ -d "$data/linux" ] ||
  { echo "run benches/speed.sh once first: it makes the data" >&2; exit 2; }
w=$bench/release-profile
mkdir -p "$w"

variants=(as-is lto cgu1 all)
declare -A env_of=(
  [as-is]=""
  [lto]="CARGO_PROFILE_RELEASE_LTO=fat"
  [cgu1]="CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1"
  [all]="CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort"
)
for v in "${variants[@]}"; do
  # shellcheck disable=SC2086
  env ${env_of[$v]} CARGO_TARGET_DIR="$w/target-$v" cargo build --release --locked -q
done

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
key=$bench/key
[ -f "$key" ] || "$w/target-as-is/release/strongroom" keygen --out "$key" --no-passphrase >/dev/null 2>&1

# timed VARIANT FIGURE ARGS...: appends wall seconds to $w/VARIANT.FIGURE.
timed() {
  local v=$1 figure=$2; shift 2
  drop_caches
  /usr/bin/time -f '%e' -o "$w/time.out" "$w/target-$v/release/strongroom" -q -r "$w/repo" -k "$key" \
    --cache-dir "$w/cache" "$@" >/dev/null 2>"$w/stderr.out" ||
    { echo "$v $figure failed:" >&2; cat "$w/stderr.out" >&2; exit 1; }
  tail -n1 "$w/time.out" >>"$w/$v.$figure"
}

fresh() { rm -rf "$w/repo" "$w/cache"; "$w/target-$1/release/strongroom" -q -r "$w/repo" -k "$key" init >/dev/null; }

rm -f "$w"/*.backup-large "$w"/*.check-large "$w"/*.backup-tree
for r in $(seq 1 "$rounds"); do
  # A different variant goes first in each round.
  order=("${variants[@]:$((r % 4))}" "${variants[@]:0:$((r % 4))}")
  for v in "${order[@]}"; do
    fresh "$v"
    timed "$v" backup-large backup "$data/random"
    timed "$v" check-large check --read-data
    fresh "$v"
    timed "$v" backup-tree backup "$data/linux"
  done
  echo "round $r done" >&2
done
rm -rf "$w/repo" "$w/cache"

median() { sort -g "$1" | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'; }
printf '\n%s rounds, medians, seconds (ratio: as-is / variant, above 1.0 faster)\n' "$rounds"
printf '%-8s %16s %16s %16s %12s\n' variant "backup 1 GiB" "check 1 GiB" "backup tree" "binary MB"
for v in "${variants[@]}"; do
  row="$(printf '%-8s' "$v")"
  for f in backup-large check-large backup-tree; do
    m=$(median "$w/$v.$f"); base=$(median "$w/as-is.$f")
    row+=$(printf ' %8s (%5s)' "$m" "$(awk -v a="$base" -v b="$m" 'BEGIN { printf "%.2f", a / b }')")
  done
  size=$(stat -c %s "$w/target-$v/release/strongroom")
  row+=$(printf ' %12d' $((size / 1000000)))
  echo "$row"
done
