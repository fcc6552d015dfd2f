#!/usr/bin/env bash
# The fault script (issue 14): builds, starts its own durable PostgreSQL, two allotd and four agents, and runs each
# fault scenario under load with the invariant checks after it (ops/faults.py says which). One command:
#   ops/faults.sh            the full version (50 kills, 2,000 submissions, 30 s SIGSTOP, 20 agent restarts, …)
#   ops/faults.sh --bounded  the short version CI runs (a few minutes)
# Extra: --seed N repeats a run's random moments; --only standby-promotion,race runs those scenarios alone (names in
# ops/faults.py). Everything it started is stopped and deleted at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/allot-faults.XXXXXX)
cleanup() {
  pkill -CONT -f "$work" 2>/dev/null || true
  pkill -f "$work" 2>/dev/null || true
  sleep 0.5
  ops/postgres.sh destroy "$work/standby" >/dev/null 2>&1 || true
  ops/postgres.sh destroy "$work/postgres" >/dev/null 2>&1 || true
  if command -v runc >/dev/null; then
    for c in $(runc list -q 2>/dev/null | grep '^allot-' || true); do runc delete --force "$c" >/dev/null 2>&1 || true; done
  fi
  if [ -n "${KEEP_FAULTS:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM
swift build --product allotd >/dev/null
swift build --product allot-agent >/dev/null
swift build --product allot >/dev/null
bin=$(swift build --show-bin-path)
python3 ops/faults.py --bin "$bin" --work "$work" "$@"
