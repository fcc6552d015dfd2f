#!/usr/bin/env bash
# Fuzzes allotd's HTTP API with schemathesis (from PyPI) against openapi.yaml: a private PostgreSQL, allotd, the
# example programme (Policies/), two nodes, a job of each organisation, and a token of every role. For each role
# it checks that no answer is a server error; every answer matches the document (status, content type, schema);
# no route ignores a missing or bad token (ignored_auth); a role never succeeds where the document's
# x-allot-roles (the access table) does not name it; and no body shows a member another organisation's names.
#   ops/fuzz.sh                 the full run: 1000 cases per operation and role
#   ops/fuzz.sh --bounded       what CI runs: 25 cases per operation and role (a few minutes)
#   ops/fuzz.sh --examples N    N cases per operation and role
# The figures (operations, cases, failures) are printed at the end and written to .allot/fuzz/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
examples=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --bounded) examples=25 ;;
    --examples) examples=$2; shift ;;
    *) echo "usage: $0 [--bounded | --examples N]" >&2; exit 2 ;;
  esac
  shift
done
work=$root/.allot/fuzz
rm -rf "$work"
mkdir -p "$work/reports"

venv=${ALLOT_FUZZ_VENV:-$root/.allot/fuzz-venv}
if [ ! -x "$venv/bin/st" ]; then
  echo "== installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==4.32.5"
fi

echo "== building allotd and allot"
swift build --product allotd 2>&1 | grep -E "error|Build complete" || true
swift build --product allot 2>&1 | grep -E "error|Build complete" || true
bin=$(swift build --show-bin-path)
export PATH="$bin:$PATH"

pid=""
# allotd must end on SIGTERM within 10 s; one that does not is killed, and the run fails saying so.
cleanup() {
  status=$?
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "== allotd did not exit within 10 s of SIGTERM: killed" >&2
      kill -9 "$pid" 2>/dev/null || true
      status=1
    fi
  fi
  wait 2>/dev/null || true
  ops/postgres.sh destroy "$work/postgres" >/dev/null 2>&1 || true
  exit $status
}
trap cleanup EXIT INT TERM

# Served as production serves: migrations as the owner, allotd as the application role.
ops/postgres.sh start "$work/postgres" --fast >/dev/null
{ read -r owner_url; read -r app_url; } < <(ops/postgres.sh roles "$work/postgres")
ALLOT_DATABASE_URL=$owner_url allotd migrate --migrations "$root/Migrations" --app-role allot_app >/dev/null
export ALLOT_DATABASE_URL=$app_url
allotd bootstrap --token-file "$work/operator.token" --secret-file "$work/allotd.secret" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
allotd serve --listen "127.0.0.1:$port" --secret-file "$work/allotd.secret" --log-level warning >"$work/allotd.log" 2>&1 &
pid=$!
export ALLOT_SERVER="http://127.0.0.1:$port" ALLOT_TOKEN_FILE="$work/operator.token"
for _ in $(seq 100); do curl -fs "$ALLOT_SERVER/readyz" >/dev/null 2>&1 && break; sleep 0.2; done

# The programme, two nodes, a token of every role, and a job of each of two organisations whose names carry a
# marker that must never reach the other's members.
allot policy apply Policies/ >/dev/null
allot nodes add n1 --pool h200 --agent-url http://127.0.0.1:9 --token-file "$work/agent.token" >/dev/null
allot nodes add n2 --pool h200 --agent-url http://127.0.0.1:9 --token-file "$work/agent2.token" >/dev/null
allot tokens create --name fuzz-auditor --role auditor --token-file "$work/auditor.token" >/dev/null
allot tokens create --name fuzz-scraper --role scraper --token-file "$work/scraper.token" >/dev/null
allot tokens create --name uni-secret-member --role member --org university-consortium --token-file "$work/member.token" >/dev/null
allot tokens create --name uni-secret-admin --role org-admin --org university-consortium --token-file "$work/org-admin.token" >/dev/null
allot tokens create --name defense-secret-member --role member --org defense --token-file "$work/defense.token" >/dev/null
ALLOT_TOKEN_FILE="$work/member.token" allot submit - >/dev/null <<'EOF'
name: uni-secret-train
pool: h200
gpusPerNode: 1
command: echo uni-secret-command
EOF
ALLOT_TOKEN_FILE="$work/defense.token" allot submit - >/dev/null <<'EOF'
name: defense-secret-train
pool: h200
gpusPerNode: 1
command: echo defense-secret-command
EOF

export PYTHONPATH="$root/ops/fuzz" SCHEMATHESIS_HOOKS=allot_checks
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,ignored_auth,allot_authorization
# applyPolicy and revokeToken would change the programme or end the very tokens the other runs use: they run
# last, in the operator's run alone.
later=(--exclude-operation-id applyPolicy --exclude-operation-id revokeToken)
failed=0
run() { # role, token file, foreign markers, extra options…
  local role=$1 token=$2 foreign=$3
  shift 3
  echo "== schemathesis as $role ($examples cases per operation)"
  if ! ALLOT_FUZZ_ROLE=$role ALLOT_FUZZ_FOREIGN=$foreign "$venv/bin/st" run "$root/openapi.yaml" --url "$ALLOT_SERVER" \
    -H "Authorization: Bearer $(sed -n 's/^token=//p; /=/!p' "$token" | head -n 1)" --max-examples "$examples" --checks "$checks" --workers 2 --seed 2026 \
    --suppress-health-check all --generation-database none --request-timeout 30 --no-color \
    --report json --report-json-path "$work/reports/$role.json" "$@" >"$work/$role.log" 2>&1; then
    failed=1
  fi
  tail -n 12 "$work/$role.log"
}
run member "$work/member.token" "defense-secret" "${later[@]}"
run org-admin "$work/org-admin.token" "defense-secret" "${later[@]}"
run auditor "$work/auditor.token" "" "${later[@]}"
run scraper "$work/scraper.token" "" "${later[@]}"
run agent "$work/agent.token" "" "${later[@]}"
run operator "$work/operator.token" ""

"$venv/bin/python" - "$work/reports" <<'EOF' | tee "$work/summary.txt"
import json, pathlib, sys
cases = failures = 0
operations = 0
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(path.read_text())
    t, o = r["test_cases"], r["operations"]
    operations = max(operations, o["tested"])
    cases += t["generated"]
    failures += t["unique_failures"] + len(r.get("errors", []))
    print(f"{path.stem:10} operations {o['tested']}/{o['total']}  cases {t['generated']:7}  failures {t['unique_failures']}  errors {len(r.get('errors', []))}")
print(f"all roles: operations {operations}, cases {cases}, failures {failures}")
EOF
grep -qE " (error|critical) " "$work/allotd.log" && { echo "== allotd logged errors:"; grep -E " (error|critical) " "$work/allotd.log" | head -20; failed=1; }
exit $failed
