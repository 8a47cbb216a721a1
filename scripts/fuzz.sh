#!/usr/bin/env bash
# Run every fuzz target for a bounded time (default 20 s each) on the stable
# toolchain (no sanitizer: `-s none`), starting from the committed corpus.
# A crash leaves its input under fuzz/artifacts/ and fails the run; add that
# input to fuzz/corpus/<target>/ so tests/fuzz_corpus.rs keeps replaying it.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
targets=(nbd_option nbd_request config superblock control peer_frame)
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  # New inputs go to a scratch dir so a test run never dirties the committed corpus.
  scratch=$(mktemp -d)
  echo "fuzz: $t for ${SECS}s"
  cargo fuzz run -s none "$t" "$scratch" "fuzz/corpus/$t" -- -max_total_time="$SECS" -print_final_stats=0 >"$scratch.log" 2>&1 \
    || { tail -40 "$scratch.log"; echo "fuzz target $t failed; see fuzz/artifacts/$t/"; exit 1; }
  grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs" "$scratch.log" | tail -1 || true
  rm -rf "$scratch" "$scratch.log"
done
