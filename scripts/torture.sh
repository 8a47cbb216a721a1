#!/usr/bin/env bash
# A long torture run: several seeds, many faults each, real processes in
# network namespaces. Appends each run's report to RELIABILITY.md.
# Usage: scripts/torture.sh [SEEDS] [FAULTS]     (default 5 seeds × 40 faults)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-5}
faults=${2:-40}
report=$PWD/RELIABILITY.md
{
  echo
  echo "## $(date -u +%Y-%m-%d) — $seeds seeds × $faults faults ($(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
} >> "$report"
for seed in $(seq 1 "$seeds"); do
  TANDEM_TORTURE_SEED=$seed TANDEM_TORTURE_FAULTS=$faults TANDEM_TORTURE_REPORT=$report \
    cargo test --release --test torture -- --nocapture
done
echo "appended to $report"
