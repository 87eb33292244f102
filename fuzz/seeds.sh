#!/usr/bin/env bash
# Makes a small real repository (a full-key and a writer-key backup of a
# tree with every kind of entry) and writes the fuzz targets' seeds from it
# into fuzz/seeds/<target>/. Run it again when a stored format changes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --locked
sr=$PWD/target/debug/strongroom
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export STRONGROOM_CACHE_DIR=$tmp/cache
$sr keygen --no-passphrase --bits 3072 --out "$tmp/full.key" 2>/dev/null
$sr -k "$tmp/full.key" key export-writer --host seed-host --no-passphrase --bits 3072 --out "$tmp/writer.key" 2>/dev/null
src=$tmp/src
mkdir -p "$src/dir/deeper"
echo hello > "$src/dir/file"
head -c 200000 /dev/urandom > "$src/dir/random"
truncate -s 3M "$src/sparse" && printf x | dd of="$src/sparse" bs=1 seek=1000000 conv=notrunc status=none
ln -s dir/file "$src/link"
ln "$src/dir/file" "$src/dir/deeper/hardlink"
mkfifo "$src/fifo"
setfattr -n user.note -v seed "$src/dir/file" 2>/dev/null || true
$sr -r "$tmp/repo" -k "$tmp/full.key" init >/dev/null 2>&1
$sr -r "$tmp/repo" -k "$tmp/full.key" backup --tag seed "$src" >/dev/null
$sr -r "$tmp/repo" -k "$tmp/writer.key" backup "$src" >/dev/null
rm -rf fuzz/seeds
cargo run -q --locked --example fuzz_seeds -- "$tmp/repo" "$tmp/full.key" "$tmp/cache" fuzz/seeds
cp "$tmp/writer.key" fuzz/seeds/key_file/writer.key
find fuzz/seeds -type f | wc -l
