#!/bin/sh
# Builds one static executable for rescue systems: no interpreter, no shared
# library, no fusermount needed (as root it mounts through /dev/fuse).
# glibc linked statically (-C target-feature=+crt-static); the musl target
# works too where rustup can add it (TRIPLE=x86_64-unknown-linux-musl).
# Prints the path of the stripped binary, target/static/strongroom.
set -eu
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
triple=${TRIPLE:-x86_64-unknown-linux-gnu}

# With --target, RUSTFLAGS reach only what runs on the target: build scripts
# and proc-macros stay dynamic, as they must. getrandom calls getrandom(2)
# directly: its default looks the function up with dlsym, which a static
# binary cannot, and falls back to /dev/urandom, which a bare rescue root
# lacks.
RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
    cargo build --release --locked --quiet --target "$triple"
built="$target/$triple/release/strongroom"

if readelf --program-headers "$built" | grep -q 'INTERP' ||
    readelf --dynamic "$built" | grep -q 'NEEDED'; then
    echo "static.sh: $built is not static" >&2
    exit 1
fi

mkdir -p "$target/static"
strip --strip-all -o "$target/static/strongroom.tmp" "$built"
mv "$target/static/strongroom.tmp" "$target/static/strongroom"
echo "$target/static/strongroom"
