#!/usr/bin/env bash
# Runs every test of Allot: starts a private, throwaway PostgreSQL (as the `postgres` user when run as root),
# builds, runs `swift test` against it, and stops and deletes the cluster on exit, whatever happens.
# Extra arguments go to `swift test` (e.g. --filter AllotStoreTests).
# ALLOT_PROPERTY_RUNS=N makes the placement property tests run N random clusters per strategy (default 10,000).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=$(mktemp -d /tmp/allot-test.XXXXXX)
cleanup() { ops/postgres.sh destroy "$dir" || true; rm -rf "$dir"; }
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
