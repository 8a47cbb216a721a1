#!/usr/bin/env bash
# Build the Debian package: binaries, man pages and completions generated
# from the CLI definitions, units, the OCF agent, the Heartbeat script and an
# example configuration. Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
out=target/package
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
target/release/tandemadm man "$out/man"
target/release/tandemd --man > "$out/man/tandemd.8"
gzip -9n "$out"/man/*.8
target/release/tandemadm completions bash > "$out/completions/tandemadm.bash"
target/release/tandemadm completions zsh > "$out/completions/_tandemadm"
target/release/tandemadm completions fish > "$out/completions/tandemadm.fish"
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
cargo deb --no-build --strip --quiet | tail -n 1
