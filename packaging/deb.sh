#!/bin/sh
# Builds the Debian package target/debian/strongroom_VERSION-1_amd64.deb with
# cargo-deb (`cargo install cargo-deb --locked`): the release binary, the
# manual pages of man/, shell completions generated from the binary,
# /etc/strongroom/ and the systemd units of packaging/systemd/. Prints the
# package's path.
set -eu
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}

# One packaging script at a time: static.sh links target/release/strongroom
# statically for a moment.
mkdir -p "$target"
exec 9>"$target/.packaging.lock"
flock 9

cargo build --release --locked --quiet
mkdir -p "$target/release/completions"
"$target/release/strongroom" completions bash >"$target/release/completions/strongroom.bash"
"$target/release/strongroom" completions zsh >"$target/release/completions/_strongroom"
"$target/release/strongroom" completions fish >"$target/release/completions/strongroom.fish"
cargo deb --locked --no-build --strip --quiet
