#!/bin/sh
# Builds one static executable for rescue systems: no interpreter, no shared
# library, no fusermount needed (as root it mounts through /dev/fuse).
# It is the release build's code, linked with glibc statically
# (-C target-feature=+crt-static on the final link only, so every other
# crate is the release build's own); getrandom calls getrandom(2) directly
# (.cargo/config.toml). Prints the path of the stripped binary,
# target/static/strongroom.
set -eu
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target/static"

# The static link and the dynamic one share target/release/strongroom: one
# packaging script at a time, and the dynamic binary put back before the
# lock is let go.
exec 9>"$target/.packaging.lock"
flock 9

cargo build --release --locked --quiet
cargo rustc --release --locked --quiet --bin strongroom -- -C target-feature=+crt-static
built="$target/release/strongroom"
if readelf --program-headers "$built" | grep -q 'INTERP' ||
    readelf --dynamic "$built" | grep -q 'NEEDED'; then
    echo "static.sh: $built is not static" >&2
    exit 1
fi
strip --strip-all -o "$target/static/strongroom.tmp" "$built"
mv "$target/static/strongroom.tmp" "$target/static/strongroom"
cargo build --release --locked --quiet
echo "$target/static/strongroom"
