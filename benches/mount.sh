#!/usr/bin/env bash
# The mount, side by side with restic's mount and two null FUSE
# filesystems, on the same data in the same run: examples/nullfs.rs (a file
# computed from its offset, the ceiling of any FUSE read path here) and
# examples/nulltree.rs (the Linux tree's names and attributes held in
# memory, the ceiling of any FUSE filesystem for find, ls -lR and cp -a of
# it). Prints seconds, MB/s, peak RSS of each daemon, and ratios.
#
#   benches/mount.sh
#   BENCH_DIR=/path benches/mount.sh
#
# Needs root (apt-get, mounting, dropping the page cache). Shares its data
# (the Linux source tree, a 1 GiB random file) with benches/core.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
bench=${BENCH_DIR:-/var/tmp/strongroom-bench}
mkdir -p "$bench"

need=()
command -v restic >/dev/null || need+=(restic)
command -v fusermount3 >/dev/null || need+=(fuse3)
[ -x /usr/bin/time ] || need+=(time)
ls /usr/src/linux-source-6.1.tar.* >/dev/null 2>&1 || need+=(linux-source-6.1)
command -v xz >/dev/null || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --locked -q --bin strongroom --example nullfs --example nulltree
sr=$here/target/release/strongroom
nullfs=$here/target/release/examples/nullfs
nulltree=$here/target/release/examples/nulltree

data=$bench/data
if [ ! -d "$data/linux" ]; then
  rm -rf "$data/linux.tmp" && mkdir -p "$data/linux.tmp"
  tar -xf /usr/src/linux-source-6.1.tar.* -C "$data/linux.tmp"
  mv "$data/linux.tmp" "$data/linux"
fi
if [ ! -f "$data/random/1g.bin" ]; then
  mkdir -p "$data/random" && head -c 1G /dev/urandom > "$data/random/1g.bin.tmp" && mv "$data/random/1g.bin.tmp" "$data/random/1g.bin"
fi

export RESTIC_PASSWORD=bench-password
export STRONGROOM_CACHE_DIR=$bench/m-sr-cache
export RESTIC_CACHE_DIR=$bench/m-rs-cache
srepo=$bench/m-sr-repo rrepo=$bench/m-rs-repo mnt=$bench/mnt out=$bench/m-out
[ -f "$bench/key" ] || $sr keygen --out "$bench/key" --no-passphrase >/dev/null 2>&1
mkdir -p "$mnt"
umount -l "$mnt" 2>/dev/null || true
rm -rf "$srepo" "$rrepo" "$STRONGROOM_CACHE_DIR" "$RESTIC_CACHE_DIR" "$out"
$sr -r "$srepo" -k "$bench/key" init >/dev/null 2>&1
restic -r "$rrepo" init >/dev/null 2>&1
for set in random random linux; do
  $sr -r "$srepo" -k "$bench/key" backup "$data/$set" >/dev/null
  restic -r "$rrepo" backup "$data/$set" >/dev/null
done

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

pid=
# start NAME CMD...: starts a mount daemon and waits (up to 120 s) until
# its snapshots directory lists; records the seconds that took.
declare -A secs rss
start() {
  local name=$1; shift
  local t0; t0=$(now)
  "$@" >"$bench/mount.log" 2>&1 &
  pid=$!
  for _ in $(seq 12000); do
    if [ -n "$(ls "$mnt/snapshots" 2>/dev/null)" ] || [ -f "$mnt/data" ] || [ -d "$mnt/linux-source-6.1" ]; then
      secs[$name]=$(since "$t0"); return
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$bench/mount.log" >&2; exit 1; }
    sleep 0.01
  done
  echo "$name: the mount did not come up" >&2; exit 1
}
stop() {
  local name=$1
  rss[$name]=$(awk '/VmHWM/ { print int($2 / 1024) " MB" }' "/proc/$pid/status")
  umount "$mnt"; wait "$pid" || true
}
timed() { local name=$1; shift; local t0; t0=$(now); "$@" >/dev/null; secs[$name]=$(since "$t0"); }
# cp_to_new NAME FILE: times cp of FILE to a file that does not exist yet
# (overwriting the last copy would time its truncation and writeback too).
cp_to_new() { rm -f "$bench/copy"; sync; timed "$1" cp "$2" "$bench/copy"; }

sr_mount() { start "$1" "$sr" -r "$srepo" -k "$bench/key" mount "$mnt"; }
rs_mount() { start "$1" restic -r "$rrepo" mount "$mnt"; }
# The 1 GiB file (in the first two snapshots), and the Linux tree (the latest).
big_file() { find "$mnt/snapshots/" -maxdepth 12 -name 1g.bin -print -quit; }

# Start-up: an empty cache directory, then a remount.
rm -rf "$STRONGROOM_CACHE_DIR"; drop_caches
sr_mount "start cold"; stop "start cold"
drop_caches
sr_mount "start remount"; stop "start remount"
drop_caches
rs_mount "restic start"; stop "restic start"

# A 1 GiB file: cold (page cache dropped, fresh daemon), then warm.
drop_caches; sr_mount m
f=$(big_file); cp_to_new "sr cp cold" "$f"; cp_to_new "sr cp warm" "$f"; stop "sr mount"
drop_caches; rs_mount m
f=$(big_file); cp_to_new "restic cp cold" "$f"; cp_to_new "restic cp warm" "$f"; stop "restic mount"
drop_caches; start m "$nullfs" "$mnt" 1024
cp_to_new "null cp cold" "$mnt/data"; cp_to_new "null cp warm" "$mnt/data"; stop null
# The same from the local disk, the file in the page cache: what cp itself reaches here.
cat "$data/random/1g.bin" >/dev/null; cp_to_new "local cp warm" "$data/random/1g.bin"
rm -f "$bench/copy"

# The Linux tree (78,579 files): find and ls -lR cold, then cp -a out,
# against strongroom's own restore of the same snapshot.
tree() { find "$mnt/snapshots/latest/" -maxdepth 12 -type d -name linux -print -quit; }
for tool in sr rs; do
  label=$([ $tool = sr ] && echo sr || echo restic)
  drop_caches; ${tool}_mount m; t=$(tree)
  timed "$label find" find "$t"; stop "$label find"
  drop_caches; ${tool}_mount m; t=$(tree)
  timed "$label ls -lR" ls -lR "$t"; stop "$label ls"
  drop_caches; ${tool}_mount m; t=$(tree); rm -rf "$out"
  timed "$label cp -a" cp -a "$t" "$out"; stop "$label cp -a"
done
# The same tree from a FUSE filesystem that does no work: the ceiling.
for what in find "ls -lR" "cp -a"; do
  drop_caches; start m "$nulltree" "$data/linux" "$mnt"; rm -rf "$out"
  case $what in
    find) timed "null find" find "$mnt" ;;
    ls*) timed "null ls -lR" ls -lR "$mnt" ;;
    cp*) timed "null cp -a" cp -a "$mnt" "$out" ;;
  esac
  stop "null $what"
done
rm -rf "$out"; drop_caches
# What cp -a itself costs here: the same tree from the local disk, no FUSE.
timed "local cp -a" cp -a "$data/linux" "$out"
rm -rf "$out"; drop_caches
linux_id=$($sr -r "$srepo" -k "$bench/key" --json snapshots | python3 -c 'import json,sys; print([s["id"] for s in json.load(sys.stdin) if s["paths"][0].endswith("/linux")][-1])')
timed "sr restore" "$sr" -r "$srepo" -k "$bench/key" restore "$linux_id" --target "$out"
rm -rf "$out"

r() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mbs() { awk -v s="$1" 'BEGIN { printf "%.0f MB/s", 1073.741824 / s }'; }
printf '\n%-34s %10s %10s %10s  %s\n' figure strongroom restic null 'ratio'
printf '%-34s %10s %10s %10s  %s\n' "mount start (3 snapshots), cold" "${secs[start cold]}" "${secs[restic start]}" - "restic/sr $(r "${secs[restic start]}" "${secs[start cold]}")"
printf '%-34s %10s %10s %10s  %s\n' "mount start, remount" "${secs[start remount]}" - - ""
printf '%-34s %10s %10s %10s  %s\n' "cp 1 GiB cold (s)" "${secs[sr cp cold]}" "${secs[restic cp cold]}" "${secs[null cp cold]}" "restic/sr $(r "${secs[restic cp cold]}" "${secs[sr cp cold]}"), sr/null speed $(r "${secs[null cp cold]}" "${secs[sr cp cold]}")"
printf '%-34s %10s %10s %10s  %s\n' "cp 1 GiB warm (s)" "${secs[sr cp warm]}" "${secs[restic cp warm]}" "${secs[null cp warm]}" "sr $(mbs "${secs[sr cp warm]}"), null $(mbs "${secs[null cp warm]}"), local disk $(mbs "${secs[local cp warm]}")"
# restic/null: the most any FUSE filesystem could be ahead of restic here.
for w in find "ls -lR" "cp -a"; do
  printf '%-34s %10s %10s %10s  %s\n' "$w, Linux tree, cold" "${secs[sr $w]}" "${secs[restic $w]}" "${secs[null $w]}" \
    "restic/sr $(r "${secs[restic $w]}" "${secs[sr $w]}"), restic/null $(r "${secs[restic $w]}" "${secs[null $w]}"), sr/null $(r "${secs[sr $w]}" "${secs[null $w]}")x"
done
printf '%-34s %10s\n' "cp -a vs own restore" "$(r "${secs[sr cp -a]}" "${secs[sr restore]}")x"
printf '%-34s %10s\n' "strongroom restore of that tree" "${secs[sr restore]}"
printf '%-34s %10s\n' "cp -a of it from local disk" "${secs[local cp -a]}"
printf '%-34s %10s %10s %10s\n' "peak RSS, cp of the 1 GiB file" "${rss[sr mount]}" "${rss[restic mount]}" "${rss[null]}"
printf '%-34s %10s %10s %10s\n' "peak RSS, cp -a of the tree" "${rss[sr cp -a]}" "${rss[restic cp -a]}" "${rss[null cp -a]}"
echo "start with 1,000 snapshots, 1 GB against 10 GB repositories and RSS on a 1,000,000-file snapshot: benches/mount_scale.sh"
