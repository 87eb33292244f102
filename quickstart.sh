#!/usr/bin/env bash
# Builds strongroom, backs up a sample directory into a local repository,
# lists the snapshot, looks inside it, restores it and copies a file out
# through a read-only mount of it, all under ./quickstart.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --locked
sr=target/release/strongroom
work=quickstart
rm -rf "$work" && mkdir -p "$work/sample/docs"
export STRONGROOM_REPO="$work/repo" STRONGROOM_KEY="$work/key" STRONGROOM_CACHE_DIR="$work/cache"

# A sample tree: some text, a symlink, a hard link, a sparse file.
cp /etc/hostname /etc/services "$work/sample/docs/"
echo "quarterly numbers" > "$work/sample/report.txt"
ln -s report.txt "$work/sample/latest-report"
ln "$work/sample/report.txt" "$work/sample/docs/report-link.txt"
truncate -s 64M "$work/sample/sparse.img" && echo data | dd of="$work/sample/sparse.img" bs=1 seek=1M conv=notrunc status=none

$sr keygen --out "$work/key" --no-passphrase
$sr init
$sr backup "$work/sample" --tag demo
$sr snapshots
$sr ls latest "$PWD/$work/sample"
$sr restore latest --target "$work/restored"
diff -r "$work/sample" "$work/restored$PWD/$work/sample"
echo "the restored tree is identical to the source: $work/restored$PWD/$work/sample"
$sr check --read-data

# Browse it: mount the snapshot (FUSE; as root no fusermount is needed),
# list it, copy a file out, unmount. The trap unmounts on any failure.
mnt="$work/mnt" && mkdir -p "$mnt"
$sr mount "$mnt" --snapshot latest &
daemon=$!
trap 'umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null; kill $daemon 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do mountpoint -q "$mnt" && break; sleep 0.1; done
ls -l "$mnt$PWD/$work/sample"
cp "$mnt$PWD/$work/sample/report.txt" "$work/report-from-mount.txt"
cmp "$work/sample/report.txt" "$work/report-from-mount.txt"
echo "copied report.txt out through the mount: $work/report-from-mount.txt"
umount "$mnt"
wait $daemon
trap - EXIT
