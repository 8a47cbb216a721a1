#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests use
# (when missing), then builds and runs every test. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages of the real clients the tests drive (one list, shared with .ci/run).
read -r -a PACKAGES < scripts/test-packages
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets --release -- -D warnings
cargo test --release --all-targets -- --test-threads="${TEST_THREADS:-4}"
scripts/check-deb.sh
scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
