#!/usr/bin/env bash
# The system benchmark (issue 17): builds allotd and allot in release mode, starts its own durable PostgreSQL
# (fsync and synchronous_commit on) and allotd, and measures the API against pgbench on the same server in the
# same sitting (ops/system_bench.py says what). Everything it started is stopped and deleted at exit.
#   ops/bench-system.sh                         1, 4 and 16 clients, 10 s each, 400 CLI submissions
#   ops/bench-system.sh --seconds 5 --cli-jobs 0 --json-out s.json
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/allot-bench.XXXXXX)
cleanup() {
  pkill -f "$work" 2>/dev/null || true
  sleep 0.3
  if [ -n "${KEEP_BENCH:-}" ]; then ops/postgres.sh stop "$work/postgres" >/dev/null 2>&1 || true; else ops/postgres.sh destroy "$work/postgres" >/dev/null 2>&1 || true; fi
  if [ -n "${KEEP_BENCH:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM
swift build -c release --product allotd 2>&1 | grep -E "error|Build complete" || true
swift build -c release --product allot 2>&1 | grep -E "error|Build complete" || true
swift build -c release --product allot-agent 2>&1 | grep -E "error|Build complete" || true
bin=$(swift build -c release --show-bin-path)
python3 ops/system_bench.py --bin "$bin" --work "$work" "$@"
