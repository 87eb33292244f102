#!/usr/bin/env bash
# prune against restic's prune on the same history, in the same run: NIGHTS
# nightly backups of a tree in which, each night, 5 % of the files go, 5 %
# come and 5 % change in place; then both forget all but the KEEP newest
# and prune (both with --max-unused 5 %, restic's default). Prints seconds,
# peak RSS, bytes before and after and what each freed.
#
#   benches/prune.sh                          # 20 nights of ~600 MB, keep 5
#   NIGHTS=10 FILES=1000 KEEP=3 benches/prune.sh
#
# Needs root for apt-get (restic, time).
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
bench=${BENCH_DIR:-/var/tmp/strongroom-bench}/prune
nights=${NIGHTS:-20}
files=${FILES:-3000}
keep=${KEEP:-5}

need=()
command -v restic >/dev/null || need+=(restic)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked -q
sr=$here/target/release/strongroom

rm -rf "$bench" && mkdir -p "$bench/src"
export RESTIC_PASSWORD=bench-password
export STRONGROOM_CACHE_DIR=$bench/sr-cache
$sr keygen --out "$bench/key" --no-passphrase >/dev/null 2>&1
$sr -r "$bench/sr-repo" -k "$bench/key" init >/dev/null 2>&1
restic -r "$bench/rs-repo" --cache-dir "$bench/rs-cache" init >/dev/null 2>&1

# night N: makes the tree (N = 0) or changes it, seeded by N.
night() {
  python3 - "$bench/src" "$files" "$1" <<'EOF'
import os, random, sys
root, files, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(n)
def size():
    return min(int(rng.expovariate(1 / 200_000)) + 4096, 4 << 20)
def new(i):
    d = os.path.join(root, f"d{i % 50:02}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{n}-{i}"), "wb") as f:
        f.write(os.urandom(size()))
if n == 0:
    for i in range(files):
        new(i)
    sys.exit()
names = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs)
k = len(names) // 20
for p in rng.sample(names, k):
    os.remove(p)
names = [p for p in names if os.path.exists(p)]
for p in rng.sample(names, k):
    with open(p, "r+b") as f:
        f.seek(rng.randrange(max(1, os.path.getsize(p))))
        f.write(os.urandom(64 << 10))
for i in range(k):
    new(i)
EOF
}

for n in $(seq 0 $((nights - 1))); do
  night "$n"
  when=$(date -u -d "2026-01-01 +$n days" +%Y-%m-%dT03:00:00Z)
  $sr -r "$bench/sr-repo" -k "$bench/key" -q backup --time "$when" "$bench/src"
  restic -r "$bench/rs-repo" --cache-dir "$bench/rs-cache" -q backup --time "$(date -u -d "2026-01-01 +$n days" "+%Y-%m-%d 03:00:00")" "$bench/src" >/dev/null
done
du -sb "$bench/src" | awk '{ printf "tree: %.0f MB after %d nights\n", $1 / 1e6, '"$nights"' }'

$sr -r "$bench/sr-repo" -k "$bench/key" -q forget --keep-last "$keep"
restic -r "$bench/rs-repo" --cache-dir "$bench/rs-cache" -q forget --keep-last "$keep" >/dev/null

declare -A secs rss before after
measure() {
  local name=$1 repo=$2; shift 2
  before[$name]=$(du -sb "$repo" | cut -f1)
  sync
  /usr/bin/time -f '%e %M' -o "$bench/time.out" "$@" >"$bench/$name.out" 2>"$bench/$name.err" ||
    { echo "$name failed:" >&2; cat "$bench/$name.err" >&2; exit 1; }
  local out
  out=$(tail -n1 "$bench/time.out")
  secs[$name]=${out% *}; rss[$name]=${out#* }
  after[$name]=$(du -sb "$repo" | cut -f1)
}
measure sr "$bench/sr-repo" $sr -r "$bench/sr-repo" -k "$bench/key" prune --max-unused 5%
measure rs "$bench/rs-repo" restic -r "$bench/rs-repo" --cache-dir "$bench/rs-cache" prune --max-unused 5%
cat "$bench/sr.out"

$sr -r "$bench/sr-repo" -k "$bench/key" -q check --read-data
restic -r "$bench/rs-repo" --cache-dir "$bench/rs-cache" -q check >/dev/null

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
printf '\n%-12s %10s %10s %12s %12s %12s\n' "prune" "seconds" "peak RSS" "repo before" "repo after" "freed"
for t in sr rs; do
  printf '%-12s %10s %7s MB %9s MB %9s MB %9s MB\n' "$([ $t = sr ] && echo strongroom || echo restic)" \
    "${secs[$t]}" "$((${rss[$t]} / 1024))" "$(mb "${before[$t]}")" "$(mb "${after[$t]}")" \
    "$(mb $((${before[$t]} - ${after[$t]})))"
done
awk -v a="${secs[rs]}" -v b="${secs[sr]}" 'BEGIN { printf "time ratio restic/strongroom: %.2f (above 1: strongroom faster)\n", a / b }'
