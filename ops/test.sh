#!/usr/bin/env bash
# Runs every test of Allot: starts a private, throwaway PostgreSQL (as the `postgres` user when run as root),
# builds, runs `swift test` against it, and stops and deletes the cluster on exit, whatever happens.
# Extra arguments go to `swift test` (e.g. --filter AllotStoreTests).
# ALLOT_PROPERTY_RUNS=N makes the placement property tests run N random clusters per strategy (default 10,000).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=$(mktemp -d /tmp/allot-test.XXXXXX)
# The container tests make Unix accounts (allot-t-*, and the example programme's allot-* when absent): the ones
# this run made are removed at exit, with any container a test left.
accounts_before=$(getent passwd | cut -d: -f1 | grep '^allot-' | sort || true)
cleanup() {
  ops/postgres.sh destroy "$dir" || true
  rm -rf "$dir"
  if [ "$(id -u)" = 0 ]; then
    if command -v runc >/dev/null; then
      for c in $(runc list -q 2>/dev/null | grep '^allot-' || true); do runc delete --force "$c" >/dev/null 2>&1 || true; done
    fi
    for a in $(comm -13 <(echo "$accounts_before") <(getent passwd | cut -d: -f1 | grep '^allot-' | sort || true)); do
      userdel "$a" >/dev/null 2>&1 || true
    done
  fi
}
trap cleanup EXIT INT TERM

url=$(ops/postgres.sh start "$dir" --fast)
# Tests make one database per test through the server's `postgres` database.
export ALLOT_TEST_DATABASE_URL="${url%/*}/postgres"
echo "test PostgreSQL: $ALLOT_TEST_DATABASE_URL"

swift build --build-tests
if [ $# -gt 0 ]; then
  swift test --skip-build "$@"
else
  # The end-to-end suite runs real daemons and agents against timeouts: run it on its own, after the rest,
  # so the CPU-heavy property tests running in parallel cannot starve it.
  swift test --skip-build --skip EndToEndTests
  swift test --skip-build --filter EndToEndTests
fi
