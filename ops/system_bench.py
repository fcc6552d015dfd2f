#!/usr/bin/env python3
"""Allot's system benchmark (issue 17): the whole path — HTTP API, durable PostgreSQL commits — measured against
PostgreSQL's own ceiling on the same server in the same sitting.

Run through ops/bench, which builds allotd and allot in release mode and passes their folder. It starts its
own durable PostgreSQL (fsync and synchronous_commit on), allotd, applies Policies/, and measures:
  - submissions/s through POST /v1/jobs at 1, 4 and 16 concurrent clients (each a keep-alive HTTP connection, each
    submission acknowledged only after its commit), side by side with pgbench doing one single-row insert per
    transaction at the same concurrency, and the ratio;
  - the same with the CLI, one `allot submit` process per job (the way `sbatch` is used);
  - GET /v1/jobs pages over the queue that built up (the list is paginated);
  - real agents: 16 allot-agent processes x 8 simulated GPUs running real ranks (in runc containers as root): one-GPU
    jobs completed from 8 CLI submitters and from 8 API clients, two-node gangs, submit -> first rank started, and
    where a rank's time goes;
  - simulated agents (allot-agent simulate: real HTTP, no processes): jobs completed on 16 and 1,000 nodes; submit ->
    running on 1,000 idle nodes; placements at 1,000 and 10,000 nodes with 100,000 queued; heartbeats of 10,000
    nodes (allotd's share of a core); allotd's peak RSS;
  - allot simulate on a heterogeneous cluster shaped like cluster-trace-gpu-v2023.
It prints each figure and writes JSON (--json-out); ops/bench_record.py puts them in BENCHMARKS.md. Everything it
started is stopped at exit by the shell script.

Written in Python rather than bash: it drives concurrent clients and timers together; http.client keeps one
connection per client, as an SDK would.
"""
import argparse, http.client, json, os, shutil, socket, statistics, subprocess, sys, threading, time

p = argparse.ArgumentParser()
p.add_argument("--bin", required=True)
p.add_argument("--work", required=True)
p.add_argument("--seconds", type=float, default=10.0, help="how long each concurrency level runs")
p.add_argument("--clients", default="1,4,16")
p.add_argument("--cli-jobs", type=int, default=400, help="jobs submitted through the CLI, one process each (0: skip)")
p.add_argument("--nodes", type=int, default=10000, help="simulated nodes for the heartbeat and placement figures (below 10,000: skipped)")
p.add_argument("--queued", type=int, default=100000, help="queued jobs for the placement figure (0: heartbeats only)")
p.add_argument("--placement-seconds", type=float, default=60, help="how long to watch the queued jobs being placed")
p.add_argument("--phases", default="simulate,submit,cli,list,agents,control,latency,scale",
               help="which figures: simulate (allot simulate on a trace-shaped heterogeneous cluster), submit (API vs pgbench), cli, "
                    "list, agents (16 real allot-agent processes running real ranks: jobs and gangs completed, submit to start), "
                    "control (jobs completed on 16 and 1,000 simulated nodes), latency (submit to running on 1,000 idle nodes), "
                    "scale (placements at 1,000 and 10,000 nodes with 100,000 queued; heartbeats of 10,000 nodes)")
p.add_argument("--agent-jobs", type=int, default=2000, help="one-GPU jobs for each real-agent figure (CLI and API)")
p.add_argument("--gang-jobs", type=int, default=200, help="two-node gangs (2 x 8 GPUs) for the real-agent figure")
p.add_argument("--json-out")
args = p.parse_args()
work, bin_ = args.work, args.bin
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.makedirs(f"{work}/logs", exist_ok=True)
levels = [int(c) for c in args.clients.split(",")]
phases = set(args.phases.split(","))


def sh(*cmd, env=None, check=True):
    r = subprocess.run(cmd, env={**os.environ, **(env or {})}, text=True, capture_output=True)
    if check and r.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout.strip()


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port


# --- PostgreSQL, durable -----------------------------------------------------------------------------------------
pgdir = f"{work}/postgres"
superuser = sh(f"{root}/ops/postgres.sh", "start", pgdir)
owner, app = sh(f"{root}/ops/postgres.sh", "roles", pgdir).splitlines()
pgbin = f"/usr/lib/postgresql/{sorted(os.listdir('/usr/lib/postgresql'))[-1]}/bin"
settings = sh("psql", superuser, "-qtAX", "-c", "SELECT current_setting('fsync') || ' ' || current_setting('synchronous_commit')")
assert settings == "on on", f"the benchmark needs a durable server, got fsync/synchronous_commit {settings}"
if os.environ.get("BENCH_SLOW_MS"):  # PostgreSQL logs every statement slower than this, for profiling
    sh("psql", superuser, "-qtAX", "-c", f"ALTER SYSTEM SET log_min_duration_statement = {int(os.environ['BENCH_SLOW_MS'])}")
    sh("psql", superuser, "-qtAX", "-c", "SELECT pg_reload_conf()")

sh(f"{bin_}/allotd", "migrate", "--migrations", f"{root}/Migrations", "--app-role", "allot_app", env={"ALLOT_DATABASE_URL": owner})
with open(f"{work}/app.url", "w") as f:
    f.write(app + "\n")
os.chmod(f"{work}/app.url", 0o600)
base_env = {"ALLOT_DATABASE_URL_FILE": f"{work}/app.url"}
os.environ.pop("ALLOT_DATABASE_URL", None)
sh(f"{bin_}/allotd", "bootstrap", "--token-file", f"{work}/operator.token", "--secret-file", f"{work}/allotd.secret", env=base_env)

port = free_port()
allotd = subprocess.Popen([f"{bin_}/allotd", "serve", "--listen", f"127.0.0.1:{port}", "--secret-file", f"{work}/allotd.secret"],
                          env={**os.environ, **base_env}, stdout=open(f"{work}/logs/allotd.log", "w"), stderr=subprocess.STDOUT)
server = f"http://127.0.0.1:{port}"
for _ in range(300):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1); c.request("GET", "/readyz")
        if c.getresponse().status == 200:
            break
    except OSError:
        pass
    time.sleep(0.05)
cli_env = {"ALLOT_SERVER": server, "ALLOT_TOKEN_FILE": f"{work}/operator.token"}
# One pool and one organisation whose allocation no figure here runs into (quota is not what is measured).
POOLS = ["h200", "real", "k1"]
policy = f"{work}/policy"
os.makedirs(policy, exist_ok=True)
for name, text in {
    # h200: simulated nodes (and 16 without an agent); real: 16 real agents; k1: the 1,000-node placement figure.
    "pools.yaml": "pools:\n" + "".join(f"  - name: {p}\n    gpuModel: H200\n" for p in POOLS),
    "organizations.yaml": "organizations:\n  - name: bench-lab\n    allocations:\n" + "".join(
        f"      - pool: {p}\n        guaranteedGPUs: 0\n        limitGPUs: 1000000\n        gpuHours: 1000000000\n" for p in POOLS),
    "priority-classes.yaml": "priorityClasses:\n  - name: standard\n    value: 100\n",
    "defaults.yaml": "defaults:\n  priorityClass: standard\n",
}.items():
    with open(f"{policy}/{name}", "w") as f:
        f.write(text)
sh(f"{bin_}/allot", "policy", "apply", policy, env=cli_env)
# A member token of the organisation: what researchers submit with.
sh(f"{bin_}/allot", "tokens", "create", "--name", "bench", "--org", "bench-lab", "--role", "member",
   "--token-file", f"{work}/member.token", env=cli_env)
member = open(f"{work}/member.token").read().strip()
# Sixteen 8-GPU nodes in the pool (enrolled, no agent): submissions are checked against the pool's shapes.
for i in range(16):
    sh(f"{bin_}/allot", "nodes", "add", f"b{i:02d}", "--pool", "h200", "--block", "rack-1", "--agent-url", f"http://127.0.0.1:{free_port()}",
       "--token-file", f"{work}/b{i:02d}.token", env=cli_env)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- submissions through the API -----------------------------------------------------------------------------------
SPEC = {"org": "bench-lab", "pool": "h200", "gpusPerNode": 1, "cpusPerNode": 1, "memoryPerNode": "1G", "command": "true",
        "timeLimit": "20m", "hold": True}


def submitter(deadline, counts, latencies, errors, i):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    n = 0
    while time.monotonic() < deadline:
        body = json.dumps({**SPEC, "name": f"s{i}-{n}"})
        t0 = time.monotonic()
        c.request("POST", "/v1/jobs", body=body, headers={"Authorization": f"Bearer {member}", "Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        if r.status == 201:
            counts[i] += 1
            latencies.append(time.monotonic() - t0)
        else:
            errors.append(r.status)
        n += 1
    c.close()


def api_submissions(clients):
    counts, latencies, errors = [0] * clients, [], []
    deadline = time.monotonic() + args.seconds
    cpu0 = cpu_seconds(allotd.pid)
    t0 = time.monotonic()
    ts = [threading.Thread(target=submitter, args=(deadline, counts, latencies, errors, i)) for i in range(clients)]
    for t in ts: t.start()
    for t in ts: t.join()
    wall = time.monotonic() - t0
    latencies.sort()
    return {"clients": clients, "per_s": round(sum(counts) / wall, 1), "errors": len(errors),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None,
            "allotd_cpu": round((cpu_seconds(allotd.pid) - cpu0) / wall, 2)}


def pgbench(clients):
    with open(f"{work}/insert.sql", "w") as f:
        f.write("INSERT INTO bench_rows (payload) VALUES ('x');\n")
    out = sh(f"{pgbin}/pgbench", "-n", "-c", str(clients), "-j", str(clients), "-T", str(int(args.seconds)), "-f", f"{work}/insert.sql",
             superuser.rsplit("/", 1)[0] + "/bench")
    tps = [l for l in out.splitlines() if l.startswith("tps")]
    return float(tps[0].split("=")[1].split()[0])


sh("psql", superuser, "-qtAX", "-c", "CREATE DATABASE bench")
sh("psql", superuser.rsplit("/", 1)[0] + "/bench", "-qtAX", "-c", "CREATE TABLE bench_rows (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), payload text)")

results = {"date": time.strftime("%Y-%m-%d"), "submissions": []}
if "simulate" in phases:
    # The placement core alone on a heterogeneous cluster shaped like cluster-trace-gpu-v2023 (ops/trace_shaped.py:
    # 1,213 nodes of 12 types, 8,328 pods arriving one at a time, each running 10 minutes to 4 hours).
    sh("python3", f"{root}/ops/trace_shaped.py", f"{work}/trace")
    t0 = time.monotonic()
    report = json.loads(sh(f"{bin_}/allot", "simulate", "--cluster", f"{work}/trace/cluster.csv", "--trace", f"{work}/trace/trace.csv",
                           "--output", "json"))
    wall = time.monotonic() - t0
    report = report[0] if isinstance(report, list) else report
    results["simulate"] = {"nodes": 1213, "pods": report["jobs"], "placed": report["placed"], "wall_s": round(wall, 2),
                           "decisions": report["decisions"], "decisions_per_s": round(report["decisionsPerSecond"])}
    r = results["simulate"]
    print(f"allot simulate, trace-shaped heterogeneous cluster (1,213 nodes, 8,328 pods): {r['wall_s']} s wall, "
          f"{r['decisions']} decisions, {r['decisions_per_s']}/s (target 20,000/s)", flush=True)
for clients in (levels if "submit" in phases else []):
    api = api_submissions(clients)
    pg = pgbench(clients)
    api["pgbench_per_s"] = round(pg, 1)
    api["ratio"] = round(api["per_s"] / pg, 3)
    results["submissions"].append(api)
    print(f"submissions, {clients:2d} clients: {api['per_s']:8.1f}/s (p50 {api['p50_ms']} ms, p99 {api['p99_ms']} ms, "
          f"allotd {api['allotd_cpu']:.2f} cores, {api['errors']} errors); pgbench {pg:8.1f}/s; ratio {api['ratio']:.1%}", flush=True)

# --- the CLI, one process per job, 8 submitters --------------------------------------------------------------------
if args.cli_jobs and "cli" in phases:
    spec_file = f"{work}/job.yaml"
    with open(spec_file, "w") as f:
        f.write("org: bench-lab\npool: h200\ngpusPerNode: 1\ncpusPerNode: 1\nmemoryPerNode: 1G\nhold: true\ncommand: 'true'\n")
    done, lock = [0], threading.Lock()
    member_env = {**os.environ, "ALLOT_SERVER": server, "ALLOT_TOKEN_FILE": f"{work}/member.token"}

    def cli_submitter(n):
        for _ in range(n):
            r = subprocess.run([f"{bin_}/allot", "submit", spec_file, "--output", "json"], env=member_env, capture_output=True)
            if r.returncode == 0:
                with lock:
                    done[0] += 1

    t0 = time.monotonic()
    ts = [threading.Thread(target=cli_submitter, args=(args.cli_jobs // 8,)) for _ in range(8)]
    for t in ts: t.start()
    for t in ts: t.join()
    wall = time.monotonic() - t0
    results["cli_submissions"] = {"submitters": 8, "jobs": done[0], "per_s": round(done[0] / wall, 1)}
    print(f"submissions through the CLI, 8 submitters, one process per job: {done[0] / wall:.1f}/s ({done[0]} jobs)", flush=True)

# --- reading the queue back, a page at a time ------------------------------------------------------------------------
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
t0, pages, seen, cursor = time.monotonic(), 0, 0, None
while "list" in phases:
    c.request("GET", "/v1/jobs?limit=1000" + (f"&before={cursor}" if cursor else ""), headers={"Authorization": f"Bearer {member}"})
    r = c.getresponse(); body = json.loads(r.read())
    assert r.status == 200, body
    pages += 1; seen += len(body)
    if len(body) < 1000:
        break
    cursor = body[-1]["id"]
wall = time.monotonic() - t0
if "list" in phases:
    results["list"] = {"jobs": seen, "pages": pages, "jobs_per_s": round(seen / wall)}
    print(f"GET /v1/jobs: {seen} jobs in {pages} pages of 1,000, {seen / wall:.0f} jobs/s", flush=True)

# --- the control plane with simulated nodes (allot-agent simulate: real HTTP, no processes) ------------------------
op_token = open(f"{work}/operator.token").read().strip()


retried = {"503": 0}


def call(method, path, body=None, token=op_token, conn=None):
    """One API call; a 503 (database trouble that passes) is tried again after its Retry-After, as clients should."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for attempt in range(50):
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        r = c.getresponse(); data = r.read()
        if r.status == 503:
            retried["503"] += 1
            time.sleep(min(1.0, float(r.headers.get("Retry-After", "1")) / 4))
            continue
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:300]}")
        return json.loads(data) if data else None
    raise RuntimeError(f"{method} {path}: 503 fifty times")


def psql(query):
    return sh("psql", superuser.rsplit("/", 1)[0] + "/allot", "-qtAX", "-c", query)


sim_port = free_port()
creds = f"{work}/simulated"
os.makedirs(creds, exist_ok=True)
sim_nodes = []


def add_nodes(count):
    """Enrols nodes s00000… in pool h200 until there are `count`, eight clients at once, and writes their credentials."""
    names = [f"s{i:05d}" for i in range(len(sim_nodes), count)]
    chunks = [names[k::8] for k in range(8)]

    def worker(chunk):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for n in chunk:
            r = call("POST", "/v1/nodes", {"name": n, "pool": "h200", "block": f"rack-{int(n[1:]) // 32}",
                                            "agentURL": f"http://127.0.0.1:{sim_port}/nodes/{n}"}, conn=c)
            path = f"{creds}/{n}.token"
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(f"token={r['token']}\nnode-key={r['nodeKey']}\n")
    ts = [threading.Thread(target=worker, args=(ch,)) for ch in chunks]
    t0 = time.monotonic()
    for t in ts: t.start()
    for t in ts: t.join()
    sim_nodes.extend(names)
    return time.monotonic() - t0


simulator = None


def start_simulator(interval):
    global simulator
    if simulator:
        simulator.terminate(); simulator.wait(20)
    simulator = subprocess.Popen([f"{bin_}/allot-agent", "simulate", "--server", server, "--credentials", creds, "--listen",
                                  f"127.0.0.1:{sim_port}", "--gpus", "8xH200", "--cpus", "64", "--memory", "512G",
                                  "--heartbeat-interval", str(interval), "--log-level", "warning"],
                                 stdout=open(f"{work}/logs/simulator.log", "a"), stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 180:
        ready = int(psql("SELECT count(*) FROM nodes WHERE state = 'ready' AND last_heartbeat > now() - interval '1 minute'"))
        if ready >= len(sim_nodes):
            return time.monotonic() - t0
        time.sleep(0.5)
    print(f"bench: only {ready} of {len(sim_nodes)} simulated nodes became ready within 180 s; going on", flush=True)
    return time.monotonic() - t0


def completed_per_s(label, count, clients=8, command="true", pool="h200", shape=None, cli=False):
    """Submits `count` jobs (one GPU each unless `shape` says otherwise) from `clients` submitters, through the API or
    (cli) one `allot submit` process per job as `sbatch` is used; returns jobs completed per second, from the first
    submission to the last job's end."""
    psql("SELECT 1")
    spec = {**SPEC, **(shape or {}), "pool": pool, "hold": False, "command": command}
    chunks = [list(range(k, count, clients)) for k in range(clients)]
    accepted = [0] * clients
    spec_file = f"{work}/{label}.yaml"
    with open(spec_file, "w") as f:  # a JSON scalar is a YAML scalar
        f.write("".join(f"{k}: {json.dumps(v)}\n" for k, v in {**spec, "name": f"{label}-cli"}.items()))
    member_env = {**os.environ, "ALLOT_SERVER": server, "ALLOT_TOKEN_FILE": f"{work}/member.token"}
    t0 = time.monotonic()

    def worker(k, chunk):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in chunk:
            try:
                if cli:
                    r = subprocess.run([f"{bin_}/allot", "submit", spec_file, "--output", "json"], env=member_env, capture_output=True)
                    if r.returncode != 0:
                        raise RuntimeError(r.stderr.decode()[:300])
                else:
                    call("POST", "/v1/jobs", {**spec, "name": f"{label}-{i}"}, token=member, conn=c)
                accepted[k] += 1
            except Exception as e:
                print(f"bench: submission {label}-{i} refused: {e}", flush=True)
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    ts = [threading.Thread(target=worker, args=(k, ch)) for k, ch in enumerate(chunks)]
    for t in ts: t.start()
    for t in ts: t.join()
    submitted = time.monotonic() - t0
    count = sum(accepted)
    done = 0
    while time.monotonic() - t0 < 600:
        done = int(psql(f"SELECT count(*) FROM jobs WHERE name LIKE '{label}-%' AND state IN ('succeeded', 'failed', 'cancelled')"))
        if done >= count:
            break
        time.sleep(0.2)
    wall = time.monotonic() - t0
    failed = int(psql(f"SELECT count(*) FROM jobs WHERE name LIKE '{label}-%' AND state <> 'succeeded'"))
    return {"jobs": count, "clients": clients, "per_s": round(done / wall, 1), "submitted_per_s": round(count / submitted, 1),
            "not_succeeded": failed, "wall_s": round(wall, 1), "retried_503": retried["503"], "via": "cli" if cli else "api"}


def latencies(label, count, pool="h200", command="sleep 5", pause=0.05):
    """One submission at a time onto free capacity; the server's own timestamps give each stage."""
    for i in range(count):
        call("POST", "/v1/jobs", {**SPEC, "pool": pool, "hold": False, "name": f"{label}-{i}", "command": command}, token=member)
        time.sleep(pause)
    time.sleep(3)
    rows = psql(f"""SELECT extract(epoch FROM a.placed_at - j.submitted_at),
                   extract(epoch FROM (SELECT min(r.dispatched_at) FROM attempt_ranks r WHERE r.job_id = a.job_id AND r.attempt = a.number) - j.submitted_at),
                   extract(epoch FROM (SELECT min(r.started_at) FROM attempt_ranks r WHERE r.job_id = a.job_id AND r.attempt = a.number) - j.submitted_at),
                   extract(epoch FROM a.started_at - j.submitted_at)
                   FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.number = 1 WHERE j.name LIKE '{label}-%' AND a.started_at IS NOT NULL""")
    stages = list(zip(*[[float(x) * 1000 for x in r.split("|")] for r in rows.splitlines() if r and "|" in r and "" not in r.split("|")]))
    out = {"jobs": count, "measured": len(stages[0]) if stages else 0}
    for name, values in zip(["placed", "dispatched", "first_rank_started", "running"], stages):
        v = sorted(values)
        out[name] = {"p50_ms": round(v[len(v) // 2], 1), "p99_ms": round(v[min(len(v) - 1, int(len(v) * 0.99))], 1)}
    return out


def where_time_goes(label):
    """Medians over the ranks of jobs named label-…: from submission to placement, placement to dispatch, dispatch to
    the rank's start as its agent reports it (the agent's launch: the OCI runtime's create and start), the rank's run
    (a trivial command: the runtime's own start and teardown around it), and the rank's end to the job's end."""
    row = psql(f"""SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.placed_at - j.submitted_at)),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.dispatched_at - a.placed_at)),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.started_at - r.dispatched_at)),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.ended_at - r.started_at)),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM j.ended_at - r.ended_at))
                   FROM jobs j JOIN attempts a ON a.job_id = j.id JOIN attempt_ranks r ON r.job_id = a.job_id AND r.attempt = a.number
                   WHERE j.name LIKE '{label}-%' AND j.state = 'succeeded'""")
    keys = ["submitted_to_placed", "placed_to_dispatched", "dispatched_to_rank_started", "rank_ran", "rank_ended_to_job_ended"]
    return {k: (round(float(v) * 1000, 1) if v else None) for k, v in zip(keys, row.split("|"))}


# --- real agents: 16 allot-agent processes x 8 simulated GPUs running real, confined ranks ---------------------------
if "agents" in phases:
    isolation = "container" if os.geteuid() == 0 and shutil.which("runc") else "none"
    if isolation == "container":  # the organisation's ranks run as its own Unix account (Policies/: allot-NAME)
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", "allot-bench-lab"],
                       capture_output=True)
    agents = []
    for i in range(16):
        n, aport = f"r{i:02d}", free_port()
        sh(f"{bin_}/allot", "nodes", "add", n, "--pool", "real", "--block", "rack-r", "--agent-url", f"http://127.0.0.1:{aport}",
           "--token-file", f"{work}/{n}.token", env=cli_env)
        agents.append(subprocess.Popen([f"{bin_}/allot-agent", "--server", server, "--node", n, "--token-file", f"{work}/{n}.token",
                                        "--listen", f"127.0.0.1:{aport}", "--gpus", "8xH200", "--cpus", "64", "--memory", "512G",
                                        "--state-dir", f"{work}/agents/{n}", "--isolation", isolation, "--log-level", "warning"],
                                       env={k: v for k, v in os.environ.items() if not k.startswith("ALLOT_DATABASE")},
                                       stdout=open(f"{work}/logs/{n}.log", "w"), stderr=subprocess.STDOUT))
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60 and int(psql("SELECT count(*) FROM nodes WHERE pool = 'real' AND state = 'ready'")) < 16:
        time.sleep(0.2)
    real = {"agents": 16, "gpus_per_node": 8, "isolation": isolation}
    real["submit_to_start"] = latencies("ral", 20, pool="real", command="sleep 2", pause=0.5)
    r = real["cli_1gpu"] = completed_per_s("rcl", args.agent_jobs, pool="real", cli=True)
    print(f"real agents (16 x 8 GPUs, isolation {isolation}): {r['jobs']} one-GPU jobs, 8 CLI submitters: {r['per_s']}/s completed "
          f"(submitted {r['submitted_per_s']}/s, {r['not_succeeded']} not succeeded)", flush=True)
    r = real["api_1gpu"] = completed_per_s("rap", args.agent_jobs, pool="real")
    print(f"real agents: {r['jobs']} one-GPU jobs, 8 API clients: {r['per_s']}/s completed (submitted {r['submitted_per_s']}/s, "
          f"{r['not_succeeded']} not succeeded)", flush=True)
    real["where_time_goes_ms"] = where_time_goes("rap")
    if args.gang_jobs:
        r = real["gang_2x8"] = completed_per_s("rgg", args.gang_jobs, pool="real", shape={"nodes": 2, "gpusPerNode": 8})
        print(f"real agents: {r['jobs']} two-node gangs (2 x 8 GPUs), 8 API clients: {r['per_s']}/s completed "
              f"({r['not_succeeded']} not succeeded)", flush=True)
    print(f"real agents: submit -> started p50 {real['submit_to_start']['first_rank_started']['p50_ms']} ms; median per rank: "
          + ", ".join(f"{k} {v} ms" for k, v in real["where_time_goes_ms"].items()), flush=True)
    results["real_agents"] = real
    for a in agents:
        a.terminate()
    for a in agents:
        try:
            a.wait(20)
        except subprocess.TimeoutExpired:
            a.kill()


if phases & {"control", "latency", "scale"}:
    results["control_plane"] = {}
    add_nodes(16)
if "control" in phases:
    start_simulator(interval=5)
    r = completed_per_s("e16", 2000)
    results["control_plane"]["16_nodes"] = r
    print(f"control plane, 16 simulated nodes x 8 GPUs: 2,000 one-GPU jobs from 8 API clients: {r['per_s']}/s completed "
          f"(submitted {r['submitted_per_s']}/s, {r['not_succeeded']} not succeeded)", flush=True)

    took = add_nodes(1000)
    start_simulator(interval=5)
    r = completed_per_s("e1k", 2000)
    results["control_plane"]["1000_nodes"] = r
    print(f"control plane, 1,000 simulated nodes: 2,000 one-GPU jobs: {r['per_s']}/s completed (submitted {r['submitted_per_s']}/s, "
          f"{r['not_succeeded']} not succeeded); 984 nodes enrolled in {took:.0f} s", flush=True)

if "latency" in phases:
    if len(sim_nodes) < 1000:
        add_nodes(1000)
        start_simulator(interval=5)
    r = latencies("lat", 100)
    results["latency_free_capacity"] = r
    print(f"submit -> placed / first rank started / running, 1,000 idle nodes, one at a time: " + ", ".join(
        f"{k} p50 {r[k]['p50_ms']} ms p99 {r[k]['p99_ms']} ms" for k in ["placed", "first_rank_started", "running"] if k in r), flush=True)


def placements(prefix, nodes, seconds):
    """`args.queued` one-GPU jobs (arrays of 1,000) in pool h200 made eligible at one moment (beginAt) on `nodes` idle
    nodes: placements committed and dispatched per second until every GPU is taken or `seconds` pass."""
    begin = time.time() + max(30, args.queued / 1000 * 1.0)  # 100 arrays of 1,000 take about a minute to submit
    begin_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(begin))
    t0 = time.monotonic()
    for a in range(args.queued // 1000):
        call("POST", "/v1/jobs", {**SPEC, "hold": False, "name": f"{prefix}-{a}", "command": "sleep 900", "array": "0-999",
                                  "beginAt": begin_at}, token=member)
    queued_s = time.monotonic() - t0
    if time.time() > begin:
        print(f"bench: queueing took {queued_s:.0f} s, past the jobs' begin time: placements overlapped the last submissions", flush=True)
    while time.time() < begin:
        time.sleep(0.2)
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        placed, dispatched = map(int, psql(f"""SELECT count(*), count(*) FILTER (WHERE r.dispatched_at IS NOT NULL)
            FROM attempt_ranks r JOIN jobs j ON j.id = r.job_id WHERE j.name LIKE '{prefix}-%'""").split("|"))
        samples.append((time.monotonic() - t0, placed, dispatched))
        if dispatched >= min(args.queued, nodes * 8):
            break
        time.sleep(1)
    end = samples[-1]
    r = {"nodes": nodes, "queued": args.queued, "queue_build_s": round(queued_s), "placed": end[1], "dispatched": end[2],
         "wall_s": round(end[0], 1), "placed_per_s": round(end[1] / end[0]), "dispatched_per_s": round(end[2] / end[0])}
    print(f"placements at {nodes:,} nodes with {args.queued:,} queued: {end[1]:,} placed and {end[2]:,} dispatched in "
          f"{end[0]:.1f} s: {r['placed_per_s']} placed/s, {r['dispatched_per_s']} dispatched/s", flush=True)
    return r


if "scale" in phases and args.nodes >= 1000 and args.queued > 0:
    # First on 1,000 nodes; then the arrays are cancelled (as `scancel ARRAYID`) while the cluster grows to 10,000.
    if len(sim_nodes) < 1000:
        add_nodes(1000)
        start_simulator(interval=5)
    results["placements_1000_nodes"] = placements("p1k", 1000, args.placement_seconds / 2)
    arrays = [int(x) for x in psql("SELECT id FROM jobs WHERE name LIKE 'p1k-%' AND array_job_id = id").split()]
    t0 = time.monotonic()
    def cancel(ids):
        for i in ids:
            try:
                call("POST", f"/v1/jobs/{i}/cancel", token=member)
            except Exception as e:  # reported, and the figures go on
                print(f"bench: cancelling array {i} failed: {e}", flush=True)
    cancels = [threading.Thread(target=cancel, args=(arrays[k::4],)) for k in range(4)]
    for t in cancels: t.start()
    for t in cancels: t.join()
    while int(psql("SELECT count(*) FROM jobs WHERE name LIKE 'p1k-%' AND state NOT IN ('succeeded', 'failed', 'cancelled')")) > 0:
        if time.monotonic() - t0 > 300:
            print("bench: jobs of the 1,000-node figure still live after 300 s; going on", flush=True)
            break
        time.sleep(0.5)
    results["placements_1000_nodes"]["cancel_s"] = round(time.monotonic() - t0, 1)
    print(f"cancelled {args.queued:,} jobs ({len(arrays)} arrays) and saw them end in {time.monotonic() - t0:.0f} s", flush=True)


if "scale" in phases and args.nodes >= 1000:
    took = add_nodes(args.nodes)
    ready = start_simulator(interval=5)
    time.sleep(10)
    cpu0, t0 = cpu_seconds(allotd.pid), time.monotonic()
    time.sleep(30)
    share = (cpu_seconds(allotd.pid) - cpu0) / (time.monotonic() - t0)
    beats = args.nodes / 5
    # What allotd kept up with: the nodes whose last report is under 5 s old, per second (idle nodes report every 5 s).
    served = int(psql("SELECT count(*) FROM nodes WHERE last_heartbeat > now() - interval '5 s'")) / 5
    alive = int(psql("SELECT count(*) FROM nodes WHERE state = 'ready'"))
    results["heartbeats"] = {"nodes": args.nodes, "interval_s": 5, "asked_per_s": beats, "served_per_s": served, "nodes_ready": alive,
                             "allotd_cores": round(share, 3), "enrol_s": round(took), "ready_s": round(ready)}
    print(f"heartbeats of {args.nodes:,} nodes every 5 s ({beats:.0f}/s asked): {served:.0f}/s served, {alive:,} nodes ready, "
          f"allotd {share:.1%} of one core", flush=True)

if "scale" in phases and args.nodes >= 1000 and args.queued > 0:
    results["placements"] = placements("p10k", args.nodes, args.placement_seconds)

results["allotd_peak_rss_mib"] = round(rss_kib(allotd.pid) / 1024, 1)
print(f"allotd peak RSS: {results['allotd_peak_rss_mib']} MiB", flush=True)

if simulator:
    simulator.terminate()
allotd.terminate()
try:
    allotd.wait(10)
except subprocess.TimeoutExpired:
    allotd.kill()
if args.json_out:
    with open(args.json_out, "w") as f:
        json.dump(results, f, indent=2)
