#!/usr/bin/env bash
# Remote storage, side by side with restic on the same data in the same
# run: a strongroom server (--data on local disk) and Garage (S3) run in a
# network namespace this script makes, reached over a veth pair, first with
# no added latency, then with 20 ms of round trip added. The latency is
# added by `tc netem` where the kernel has it, else by examples/delayline.rs
# (a delay line in the namespace: each byte forwarded 10 ms after it came,
# both ways, bandwidth unlimited; it delays every request and answer as a
# link would, but does not model TCP's window on a long link).
#
# Rows, each at 0 and 20 ms RTT:
#   - copying a 1 GiB random file out of a cold mount (fresh cache, page
#     cache dropped): strongroom over https://, strongroom over s3:, restic
#     over s3: (restic mount);
#   - backing up the Linux source tree: the same three.
# Prints seconds, MB/s and ratios to restic.
#
#   benches/remote.sh
#   BENCH_DIR=/path BENCH_RTTS="0 20" benches/remote.sh
#
# Needs root (netns, tc, mounting, dropping the page cache) and Garage
# (`garage` on PATH or /usr/local/bin; .ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
bench=${BENCH_DIR:-/var/tmp/strongroom-bench}
rtts=${BENCH_RTTS:-0 20}
mkdir -p "$bench"

need=()
command -v restic >/dev/null || need+=(restic)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v ip >/dev/null || need+=(iproute2)
ls /usr/src/linux-source-6.1.tar.* >/dev/null 2>&1 || need+=(linux-source-6.1)
command -v xz >/dev/null || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
garage=$(command -v garage || echo /usr/local/bin/garage)
[ -x "$garage" ] || { echo "remote.sh needs Garage (cargo install garage; see .ci/run)" >&2; exit 1; }

cargo build --release --locked -q --bin strongroom --example delayline
sr=$here/target/release/strongroom
delayline=$here/target/release/examples/delayline

data=$bench/data
if [ ! -d "$data/linux" ]; then
  rm -rf "$data/linux.tmp" && mkdir -p "$data/linux.tmp"
  tar -xf /usr/src/linux-source-6.1.tar.* -C "$data/linux.tmp"
  mv "$data/linux.tmp" "$data/linux"
fi
if [ ! -f "$data/random/1g.bin" ]; then
  mkdir -p "$data/random" && head -c 1G /dev/urandom > "$data/random/1g.bin.tmp" && mv "$data/random/1g.bin.tmp" "$data/random/1g.bin"
fi

work=$bench/remote
ns=srbench
ip_host=10.200.0.1 ip_ns=10.200.0.2
cleanup() {
  set +e
  for m in "$work"/mnt-*; do umount -l "$m" 2>/dev/null; done
  ip netns pids $ns 2>/dev/null | xargs -r kill -9
  ip netns del $ns 2>/dev/null
  ip link del srb0 2>/dev/null
}
trap cleanup EXIT
cleanup
rm -rf "$work" && mkdir -p "$work"

# The namespace: its own loopback, and a veth pair to this one.
ip netns add $ns
ip link add srb0 type veth peer name srb1
ip link set srb1 netns $ns
ip addr add $ip_host/24 dev srb0 && ip link set srb0 up
ip netns exec $ns ip addr add $ip_ns/24 dev srb1
ip netns exec $ns ip link set srb1 up
ip netns exec $ns ip link set lo up
in_ns() { ip netns exec $ns "$@"; }
# rtt MS: sets the round trip, and the ports that have it ($p_https, $p_s3).
netem=0
tc qdisc replace dev srb0 root netem delay 0ms 2>/dev/null && netem=1 && tc qdisc del dev srb0 root
lines=()
rtt() {
  local half; half=$(awk -v r="$1" 'BEGIN { printf "%.1f", r / 2 }')
  p_https=8443 p_s3=3900
  if [ "$1" = 0 ]; then
    [ $netem = 1 ] && { tc qdisc del dev srb0 root 2>/dev/null; in_ns tc qdisc del dev srb1 root 2>/dev/null; }
    return 0
  fi
  if [ $netem = 1 ]; then
    tc qdisc replace dev srb0 root netem delay "${half}ms" limit 100000
    in_ns tc qdisc replace dev srb1 root netem delay "${half}ms" limit 100000
  else
    local ms=${half%.*}
    in_ns "$delayline" $ip_ns:9443 127.0.0.1:8443 "$ms" & lines+=($!)
    in_ns "$delayline" $ip_ns:9900 127.0.0.1:3900 "$ms" & lines+=($!)
    p_https=9443 p_s3=9900
    sleep 0.5
  fi
  echo "  rtt $1 ms: $([ $netem = 1 ] && echo "tc netem" || echo "a delay line of $ms ms each way")"
}

# Garage in the namespace, one node, sqlite.
mkdir -p "$work/garage"
cat > "$work/garage/garage.toml" <<EOF
metadata_dir = "$work/garage/meta"
data_dir = "$work/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "0.0.0.0:3900"
root_domain = ".s3.localhost"
EOF
g() { in_ns "$garage" -c "$work/garage/garage.toml" "$@"; }
RUST_LOG=warn in_ns "$garage" -c "$work/garage/garage.toml" server >"$work/garage/log" 2>&1 &
for _ in $(seq 600); do g status >/dev/null 2>&1 && break; sleep 0.1; done
node=$(g node id -q | cut -d@ -f1)
g layout assign -z dc1 -c 10G "$node" >/dev/null
g layout apply --version 1 >/dev/null
g bucket create bench >/dev/null
key_id=GK$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
g key import --yes -n bench "$key_id" "$secret" >/dev/null
g bucket allow --read --write --owner bench --key "$key_id" >/dev/null
export AWS_ACCESS_KEY_ID=$key_id AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=garage AWS_DEFAULT_REGION=garage

# The strongroom server in the namespace, on local disk.
$sr ca init --out "$work/ca" >/dev/null 2>&1
$sr ca issue --ca "$work/ca" --host $ip_ns --out "$work/cert" >/dev/null 2>&1
mkdir -p "$work/data"
STRONGROOM_PASSWORD=bench $sr -q server account add bench --role r=admin --data "$work/data"
in_ns "$sr" server serve --listen 0.0.0.0:8443 --cert "$work/cert/$ip_ns.pem" --key "$work/cert/$ip_ns.key" \
  --data "$work/data" >"$work/server.log" 2>&1 &
for _ in $(seq 600); do grep -q listening "$work/server.log" && break; sleep 0.1; done
export STRONGROOM_PASSWORD=bench STRONGROOM_CA=$work/ca/ca.pem RESTIC_PASSWORD=bench-password
[ -f "$bench/key" ] || $sr keygen --out "$bench/key" --no-passphrase >/dev/null 2>&1

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
declare -A t

for r in $rtts; do
  rtt "$r"
  declare -A repo=(
    [sr-https]="https://bench@$ip_ns:$p_https/r$r"
    [sr-s3]="s3:http://$ip_ns:$p_s3/bench/sr$r"
    [restic-s3]="s3:http://$ip_ns:$p_s3/bench/restic$r"
  )
  STRONGROOM_PASSWORD=bench $sr -q server account grant bench "r$r=admin" --data "$work/data"
  sleep 6 # the server trusts an account it read for 5 s
  for who in sr-https sr-s3 restic-s3; do
    cache=$work/cache-$who-$r
    rm -rf "$cache"
    if [ "$who" = restic-s3 ]; then
      restic -r "${repo[$who]}" --cache-dir "$cache" init >/dev/null 2>&1
      restic -r "${repo[$who]}" --cache-dir "$cache" backup -q "$data/random" >/dev/null
    else
      $sr -r "${repo[$who]}" -k "$bench/key" --cache-dir "$cache" init >/dev/null 2>&1
      $sr -q -r "${repo[$who]}" -k "$bench/key" --cache-dir "$cache" backup "$data/random" >/dev/null
    fi
    # A cold mount: an empty cache directory, the page cache dropped.
    rm -rf "$cache" && mkdir -p "$work/mnt-$who"
    drop_caches
    if [ "$who" = restic-s3 ]; then
      restic -r "${repo[$who]}" --cache-dir "$cache" mount "$work/mnt-$who" >"$work/mount.log" 2>&1 &
    else
      $sr -r "${repo[$who]}" -k "$bench/key" --cache-dir "$cache" mount "$work/mnt-$who" --snapshot latest \
        >"$work/mount.log" 2>&1 &
    fi
    mpid=$!
    file=
    for _ in $(seq 3000); do
      file=$(find "$work/mnt-$who" -name 1g.bin -print -quit 2>/dev/null || true)
      [ -n "$file" ] && break
      sleep 0.1
    done
    [ -n "$file" ] || { cat "$work/mount.log" >&2; exit 1; }
    t0=$(now)
    cp "$file" /dev/null
    t[cp-$who-$r]=$(since "$t0")
    kill -INT $mpid; wait $mpid 2>/dev/null || true
    umount -l "$work/mnt-$who" 2>/dev/null || true
    # Backup of the Linux source tree, page cache dropped.
    drop_caches
    t0=$(now)
    if [ "$who" = restic-s3 ]; then
      restic -r "${repo[$who]}" --cache-dir "$cache" backup -q "$data/linux" >/dev/null
    else
      $sr -q -r "${repo[$who]}" -k "$bench/key" --cache-dir "$cache" backup "$data/linux" >/dev/null
    fi
    t[bk-$who-$r]=$(since "$t0")
    echo "  rtt $r ms, $who: cold cp of 1 GiB ${t[cp-$who-$r]} s, backup of linux ${t[bk-$who-$r]} s"
  done
done

echo
printf '%-8s %-28s %12s %12s %12s %10s %10s\n' rtt row sr-https sr-s3 restic-s3 https/rs s3/rs
for r in $rtts; do
  cp_mb() { awk -v s="$1" 'BEGIN { printf "%.0f MB/s", 1073.741824 / s }'; }
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", b / a }'; }
  printf '%-8s %-28s %12s %12s %12s %10s %10s\n' "$r ms" "cold cp 1 GiB" \
    "$(cp_mb "${t[cp-sr-https-$r]}")" "$(cp_mb "${t[cp-sr-s3-$r]}")" "$(cp_mb "${t[cp-restic-s3-$r]}")" \
    "$(ratio "${t[cp-sr-https-$r]}" "${t[cp-restic-s3-$r]}")" "$(ratio "${t[cp-sr-s3-$r]}" "${t[cp-restic-s3-$r]}")"
  printf '%-8s %-28s %11ss %11ss %11ss %10s %10s\n' "$r ms" "backup linux tree" \
    "${t[bk-sr-https-$r]}" "${t[bk-sr-s3-$r]}" "${t[bk-restic-s3-$r]}" \
    "$(ratio "${t[bk-sr-https-$r]}" "${t[bk-restic-s3-$r]}")" "$(ratio "${t[bk-sr-s3-$r]}" "${t[bk-restic-s3-$r]}")"
done
