#!/usr/bin/env bash
# Runs Allot for real on this machine, end to end:
#   a private PostgreSQL (in .allot/, when ALLOT_DATABASE_URL is unset) → allotd migrate → bootstrap →
#   allotd serve → allot policy apply Policies/ → two nodes with agents (simulated 8xH200 each, real processes) →
#   submits examples/gang.yaml (a 2-node × 4-GPU gang) → shows it running, then finished, with each rank's log →
#   submits examples/train.sbatch (a Slurm batch script with srun and scontrol, unchanged) → its steps and output.
# Options: --keep   leave everything running afterwards (Ctrl-C stops it all)
#          --job F  submit F instead of the two examples
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/.allot
keep=0; job=examples/gang.yaml; custom_job=
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --job) job=$2; custom_job=1; shift ;;
    *) echo "usage: $0 [--keep] [--job FILE]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$work/agents" "$work/logs"

echo "== building (first build fetches and compiles dependencies: a few minutes)"
swift build 2>&1 | grep -E "error|warning: unre|Compiling|Build complete" | grep -v Compiling || true
bin=$(swift build --show-bin-path)
export PATH="$bin:$PATH"

pids=()
started_pg=0
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$started_pg" = 1 ]; then ops/postgres.sh stop "$work/postgres"; fi
}
trap cleanup EXIT INT TERM

# allotd serves as an application role that may read and append the audit log but never rewrite it; the
# migrations run as the database's owner. With a database of your own (ALLOT_DATABASE_URL), that URL does both.
(umask 077; : >"$work/app.url")
if [ -z "${ALLOT_DATABASE_URL:-}" ]; then
  echo "== starting a private PostgreSQL in $work/postgres"
  ops/postgres.sh start "$work/postgres" >/dev/null
  started_pg=1
  { read -r owner_url; read -r app_url; } < <(ops/postgres.sh roles "$work/postgres")
  echo "== allotd migrate (as allot_owner; allotd serves as allot_app)"
  ALLOT_DATABASE_URL=$owner_url allotd migrate --migrations "$root/Migrations" --app-role allot_app
  printf '%s\n' "$app_url" >"$work/app.url"
else
  echo "== allotd migrate"
  allotd migrate --migrations "$root/Migrations"
  printf '%s\n' "$ALLOT_DATABASE_URL" >"$work/app.url"
fi
unset ALLOT_DATABASE_URL  # in no process's environment: allotd reads the file, the agents need none
export ALLOT_DATABASE_URL_FILE=$work/app.url
if [ ! -s "$work/operator.token" ]; then
  echo "== allotd bootstrap"
  allotd bootstrap --token-file "$work/operator.token" --secret-file "$work/allotd.secret"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
echo "== allotd serve --listen 127.0.0.1:$port   (log: .allot/logs/allotd.log)"
allotd serve --listen "127.0.0.1:$port" --heartbeat-timeout 15s --secret-file "$work/allotd.secret" >"$work/logs/allotd.log" 2>&1 &
pids+=($!)
export ALLOT_SERVER="http://127.0.0.1:$port" ALLOT_TOKEN_FILE="$work/operator.token"
for _ in $(seq 100); do curl -fs "$ALLOT_SERVER/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "$ALLOT_SERVER/readyz" >/dev/null || { echo "allotd did not start:"; tail -20 "$work/logs/allotd.log"; exit 1; }

echo "== allot policy apply Policies/"
allot policy apply Policies/

# Every rank runs in an OCI container (runc) under its organisation's Unix account, which needs root; an
# unprivileged developer gets plain processes instead, with a warning.
isolation=none
if [ "$(id -u)" = 0 ] && command -v runc >/dev/null; then
  isolation=container
  for a in allot-defense allot-national-ai-lab allot-university allot-startups; do
    id "$a" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin --user-group "$a"
  done
else
  echo "   (not root, or no runc: ranks run as plain processes, NOT isolated; run as root with runc installed for containers)"
fi
echo "== agents: isolation $isolation"
for n in gpu-001 gpu-002; do
  aport=$(free_port)
  # An agent's address is fixed at enrolment: a node from an earlier run is enrolled again at its new port.
  if allot nodes show "$n" >/dev/null 2>&1; then
    allot nodes enrol "$n" --agent-url "http://127.0.0.1:$aport" --token-file "$work/$n.token" >/dev/null
  else
    allot nodes add "$n" --pool h200 --block rack-1 --agent-url "http://127.0.0.1:$aport" --token-file "$work/$n.token"
  fi
  env -u ALLOT_DATABASE_URL_FILE allot-agent --server "$ALLOT_SERVER" --node "$n" --token-file "$work/$n.token" --listen "127.0.0.1:$aport" \
    --gpus 8xH200 --cpus 32 --memory 256G --state-dir "$work/agents/$n" --isolation "$isolation" >"$work/logs/$n.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  [ "$(allot nodes --output json | python3 -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin) if n["state"]=="ready" and n["gpus"]))')" -ge 2 ] && break
  sleep 0.2
done
echo "== allot nodes"
allot nodes

echo "== allot submit $job"
id=$(allot submit "$job" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "   job $id submitted"
state=""
for _ in $(seq 600); do
  state=$(allot jobs show "$id" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  if [ "$state" = running ]; then echo "== job $id is running"; allot jobs show "$id"; break; fi
  case "$state" in succeeded|failed|cancelled) break ;; esac
  sleep 0.5
done
for _ in $(seq 1200); do
  state=$(allot jobs show "$id" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  case "$state" in succeeded|failed|cancelled) break ;; esac
  sleep 0.5
done
echo "== job $id ended: $state"
allot jobs show "$id"
nodes=$(allot jobs show "$id" --output json | python3 -c 'import json,sys; a=json.load(sys.stdin)["attempts"]; print(len(a[-1]["nodes"]) if a else 0)')
for ((r = 0; r < nodes; r++)); do
  echo "== allot logs $id --rank $r"
  allot logs "$id" --rank "$r"
done

if [ -z "$custom_job" ]; then
  echo "== allot submit examples/train.sbatch   (a Slurm batch script, unchanged)"
  sid=$(allot submit examples/train.sbatch --output json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  for _ in $(seq 600); do
    sstate=$(allot jobs show "$sid" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
    case "$sstate" in succeeded|failed|cancelled) break ;; esac
    sleep 0.5
  done
  allot jobs show "$sid"
  echo "== allot logs $sid"
  allot logs "$sid"
fi

echo "== allot quota"
allot quota --org national-ai-lab

if [ "$keep" = 1 ]; then
  echo
  echo "Allot is running. In another shell:"
  echo "  export PATH=$bin:\$PATH ALLOT_SERVER=$ALLOT_SERVER ALLOT_TOKEN_FILE=$work/operator.token"
  echo "  allot nodes; allot jobs; allot submit examples/gang.yaml"
  echo "Ctrl-C stops allotd, the agents and PostgreSQL."
  wait
fi
[ "$state" = succeeded ] && { [ -n "$custom_job" ] || [ "$sstate" = succeeded ]; }
