#!/usr/bin/env bash
# Placement benchmarks in release mode (Benchmarks/, a package of its own): cycle time and decisions/s as the
# cluster grows, and packing quality per strategy at 100% and 130% arrived demand.
#   ops/bench.sh            full run (1k/10k/50k nodes)
#   ops/bench.sh --quick    a smaller run
#   ops/bench.sh --json     JSON instead of the table
set -euo pipefail
cd "$(dirname "$0")/../Benchmarks"
swift build -c release --product allot-bench 2>&1 | grep -E "error|Compiling allot|Build complete" || true
exec "$(swift build -c release --show-bin-path)/allot-bench" "$@"
