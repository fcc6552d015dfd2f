#!/usr/bin/env bash
# Placement benchmarks in release mode (Benchmarks/, a package of its own), in one run so figures compare side by side:
# decisions/s and cycle p50/p99 as the cluster grows; unallocated GPUs per strategy at 100% and 130% arrived demand for
# six workload mixes after the published variants of Alibaba's GPU trace (default, sharing-100, multi-gpu-20,
# multi-gpu-50, cpu-heavy, model-constrained) on a heterogeneous cluster; small instances of every mix against the
# exact placement optimum; then ops/optimum.py solves the same small instances as an integer programme (the offline
# optimum, any subset of the jobs) when scipy is at hand.
#   ops/bench.sh            full run (1k/10k/50k nodes, 100,000 queued jobs; 400-node packing, 5 seeds)
#   ops/bench.sh --quick    a smaller run
#   ops/bench.sh --json     JSON instead of tables (--json-out FILE: both)
#   ops/bench.sh --only small --small-seeds 60    only the small instances, more of them
#   ops/bench.sh --only packing --mix cpu-heavy --detail    one mix, with what each replay left free per node type
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/Benchmarks"
swift build -c release --product allot-bench 2>&1 | grep -E "error|Build complete" || true
instances="$(mktemp /tmp/allot-instances.XXXXXX.json)"
trap 'rm -f "$instances"' EXIT
"$(swift build -c release --show-bin-path)/allot-bench" "$@" --instances "$instances"
if python3 -c "import scipy.optimize, numpy" 2>/dev/null; then
  [[ " $* " == *" --json "* ]] || printf '\nSmall instances against the offline optimum (ILP, HiGHS via scipy; any subset of the jobs, all known in advance)\n'
  python3 "$root/ops/optimum.py" "$instances" $([[ " $* " == *" --json "* ]] && echo --json)
else
  echo "ops/optimum.py skipped: python3 with scipy not found (pip install scipy)" >&2
fi
