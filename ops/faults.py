#!/usr/bin/env python3
"""Allot's fault script: real allotd (two of them), real agents, real durable PostgreSQL, real faults.

Run through ops/faults.sh, which builds and passes the paths. Each scenario is followed by the invariant checks
in SQL (and in the ranks' own output); the script prints each scenario's figures and exits 1 if any invariant
broke. --bounded is the short version CI runs.

Written in Python rather than bash: it drives concurrent submitters, timers and process signals together.
"""
import argparse, json, os, random, signal, socket, subprocess, sys, threading, time, urllib.error, urllib.request

p = argparse.ArgumentParser()
p.add_argument("--bin", required=True)
p.add_argument("--work", required=True)
p.add_argument("--bounded", action="store_true")
p.add_argument("--seed", type=int, default=int(time.time()))
p.add_argument("--only", help="a comma-separated list of scenarios to run, in order (default: all), e.g. standby-promotion")
args = p.parse_args()
random.seed(args.seed)
B = args.bounded
N = dict(kills=5 if B else 50, submissions=150 if B else 2000, stop_s=15 if B else 30, agent_restarts=3 if B else 20,
         race=300 if B else 1000, agents=4)
TIMEOUT_S = 10  # allotd --heartbeat-timeout
work, bin_ = args.work, args.bin
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.makedirs(f"{work}/logs", exist_ok=True)
print(f"faults: seed {args.seed}, {'bounded' if B else 'full'}: {N}", flush=True)


def sh(*cmd, env=None, check=True, capture=True):
    r = subprocess.run(cmd, env={**os.environ, **(env or {})}, text=True, capture_output=capture)
    if check and r.returncode != 0:
        sys.exit(f"faults: {' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout.strip()


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port


# --- PostgreSQL (durable: fsync and synchronous commit on) -------------------------------------------------------
pgdir = f"{work}/postgres"
superuser = sh(f"{root}/ops/postgres.sh", "start", pgdir)
owner, app = sh(f"{root}/ops/postgres.sh", "roles", pgdir).splitlines()
pghome = os.path.realpath(f"{pgdir}/cluster")
# A synchronous streaming standby (ops/postgres.sh standby): allotd's URL names both servers, read-write first.
standby_dir = f"{work}/standby"
standby_superuser = sh(f"{root}/ops/postgres.sh", "standby", standby_dir, pgdir)
standby_port = standby_superuser.rsplit(":", 1)[1].split("/")[0]
primary_port = superuser.rsplit(":", 1)[1].split("/")[0]
app = app.replace(f"127.0.0.1:{primary_port}/", f"127.0.0.1:{primary_port},127.0.0.1:{standby_port}/") + "?target_session_attrs=read-write"
pgbin = sorted(d for d in os.listdir("/usr/lib/postgresql"))[-1]
pgbin = f"/usr/lib/postgresql/{pgbin}/bin"


def as_pg(*cmd):
    return ["runuser", "-u", "postgres", "--", *cmd] if os.getuid() == 0 else list(cmd)


def sql(query):
    return sh("psql", superuser, "-qtAX", "-v", "ON_ERROR_STOP=1", "-c", query)


def restart_postgres():
    # With a log file of its own: the server must not hold this script's pipes open.
    subprocess.run(as_pg(f"{pgbin}/pg_ctl", "-D", f"{pghome}/data", "-l", f"{pghome}/server.log", "-m", "fast", "-w", "restart"),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


sh(f"{bin_}/allotd", "migrate", "--migrations", f"{root}/Migrations", "--app-role", "allot_app", env={"ALLOT_DATABASE_URL": owner})
with open(f"{work}/app.url", "w") as f:
    f.write(app + "\n")
os.chmod(f"{work}/app.url", 0o600)
base_env = {"ALLOT_DATABASE_URL_FILE": f"{work}/app.url"}
os.environ.pop("ALLOT_DATABASE_URL", None)
sh(f"{bin_}/allotd", "bootstrap", "--token-file", f"{work}/operator.token", "--secret-file", f"{work}/allotd.secret", env=base_env)
token = open(f"{work}/operator.token").read().strip()

# --- processes ---------------------------------------------------------------------------------------------------
procs = {}


def start(name, cmd, env=None):
    log = open(f"{work}/logs/{name}.log", "a")
    procs[name] = subprocess.Popen(cmd, env={**os.environ, **base_env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)


ports = {"a": free_port(), "b": free_port()}
url = {k: f"http://127.0.0.1:{v}" for k, v in ports.items()}


def start_allotd(k):
    start(f"allotd-{k}", [f"{bin_}/allotd", "serve", "--listen", f"127.0.0.1:{ports[k]}", "--heartbeat-timeout", f"{TIMEOUT_S}s",
                          "--secret-file", f"{work}/allotd.secret"])


def ready(k, within=30.0):
    t0 = time.time()
    while time.time() - t0 < within:
        try:
            with urllib.request.urlopen(f"{url[k]}/readyz", timeout=1) as r:
                if r.status == 200:
                    return time.time() - t0
        except Exception:
            pass
        time.sleep(0.05)
    return None


def api(method, path, body=None, k="a", timeout=10):
    req = urllib.request.Request(url[k] + path, method=method, data=body.encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


for k in "ab":
    start_allotd(k)
    assert ready(k) is not None, f"allotd-{k} did not start"
cli_env = {"ALLOT_SERVER": url["a"], "ALLOT_TOKEN_FILE": f"{work}/operator.token"}
sh(f"{bin_}/allot", "policy", "apply", f"{root}/Policies", env=cli_env)

isolation = "container" if os.getuid() == 0 and subprocess.run(["which", "runc"], capture_output=True).returncode == 0 else "none"
if isolation == "container":
    for a in ["allot-defense", "allot-national-ai-lab", "allot-university", "allot-startups"]:
        if subprocess.run(["id", a], capture_output=True).returncode != 0:
            sh("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", a)
agents = [f"f{i:02d}" for i in range(N["agents"])]
agent_ports = {n: free_port() for n in agents}


def start_agent(n):
    # The kernel log each agent reads XIDs from: a fixture the XID scenario writes to (simulated GPUs sit at PCI
    # buses 0x18, 0x19, … as `allot-agent --gpus` numbers them).
    dmesg = f"{work}/dmesg-{n}"
    if not os.path.exists(dmesg):
        with open(dmesg, "w") as f:
            f.write(f"#!/bin/sh\ncat {work}/kmsg-{n}.txt 2>/dev/null\nexit 0\n")
        os.chmod(dmesg, 0o755)
    start(f"agent-{n}", [f"{bin_}/allot-agent", "--server", f"{url['a']},{url['b']}", "--node", n, "--token-file", f"{work}/{n}.token",
                         "--listen", f"127.0.0.1:{agent_ports[n]}", "--gpus", "8xH200", "--cpus", "32", "--memory", "256G",
                         "--state-dir", f"{work}/agents/{n}", "--output-dir", f"{work}/output/{n}", "--isolation", isolation],
          env={"ALLOT_DMESG": dmesg})


for n in agents:
    sh(f"{bin_}/allot", "nodes", "add", n, "--pool", "h200", "--block", "rack-1", "--agent-url", f"http://127.0.0.1:{agent_ports[n]}",
       "--token-file", f"{work}/{n}.token", env=cli_env)
    start_agent(n)
for _ in range(200):
    if sum(1 for x in api("GET", "/v1/nodes") if x["state"] == "ready" and x.get("gpus")) == len(agents):
        break
    time.sleep(0.2)


def leader():
    row = sql("SELECT holder FROM leader WHERE expires_at > now()")
    for k in "ab":
        if procs[f"allotd-{k}"].poll() is None and f":{procs[f'allotd-{k}'].pid}:" in row:
            return k
    return None


# --- load --------------------------------------------------------------------------------------------------------
acked, lock = [], threading.Lock()
figures = {"503": 0, "refused": 0, "5xx": 0}


def submit(i, seconds=0.3):
    # The default maxAttempts: an infrastructure ending (a lost node, a rank gone with its agent) spends none.
    spec = json.dumps({"name": f"f{i}", "org": "national-ai-lab", "pool": "h200", "gpusPerNode": 1, "cpusPerNode": 1,
                       "memoryPerNode": "1G", "command": f"echo launched-$ALLOT_JOB_ID-$ALLOT_ATTEMPT-$ALLOT_NODE_RANK; sleep {seconds}"})
    for attempt in range(200):
        k = "ab"[(i + attempt) % 2]
        try:
            job = api("POST", "/v1/jobs", spec, k=k)
            with lock:
                acked.append(job["id"])
            return
        except urllib.error.HTTPError as e:
            with lock:
                figures["503" if e.code == 503 else "refused"] += 1
                # Database trouble is a 503 with Retry-After; any other 5xx is a fault of allotd's.
                if e.code >= 500 and e.code not in (502, 503):
                    figures["5xx"] += 1
            if e.code not in (502, 503):
                print(f"faults: submission {i} refused: {e.code} {e.read()[:300]}", flush=True)
                return
            time.sleep(float(e.headers.get("Retry-After", "1")) / 4)
        except Exception:
            with lock:
                figures["refused"] += 1
            time.sleep(0.1)


def load(count, clients=8, seconds=0.3):
    chunks = [list(range(c, count, clients)) for c in range(clients)]
    base = len(acked) * 10 + random.randrange(10**6)
    ts = [threading.Thread(target=lambda c=c: [submit(base + i, seconds) for i in c]) for c in chunks]
    for t in ts:
        t.start()
    return ts


def settle(within=240):
    t0 = time.time()
    while time.time() - t0 < within:
        left = int(sql("SELECT count(*) FROM jobs WHERE state NOT IN ('succeeded', 'failed', 'cancelled')"))
        if left == 0:
            return 0
        time.sleep(1)
    return left


# --- invariants --------------------------------------------------------------------------------------------------
broken = []


def check(scenario):
    with lock:
        ids = list(acked)
    out = {}
    out["double-booked GPUs"] = int(sql("""
        SELECT count(*) FROM (SELECT c.node, c.gpu_index FROM gpu_claims c JOIN attempts a ON a.job_id = c.job_id AND a.number = c.attempt
        WHERE attempt_is_live(a.state) GROUP BY 1, 2 HAVING sum(c.milli) > 1000) x"""))
    present = int(sql(f"SELECT count(*) FROM jobs WHERE id = ANY('{{{','.join(map(str, ids)) or '0'}}}'::bigint[])"))
    out["acknowledged jobs lost"] = len(set(ids)) - present
    out["jobs with two live attempts"] = int(sql(
        "SELECT count(*) FROM (SELECT job_id FROM attempts WHERE attempt_is_live(state) AND replaces IS NULL GROUP BY 1 HAVING count(*) > 1) x"))
    out["jobs failed by the infrastructure"] = int(sql("SELECT count(*) FROM jobs WHERE state = 'failed'"))
    out["over quota"] = int(sql("""
        SELECT count(*) FROM (SELECT j.org, j.pool, sum(cardinality(r.gpu_indices)) AS gpus FROM attempts a
        JOIN jobs j ON j.id = a.job_id JOIN attempt_ranks r ON r.job_id = a.job_id AND r.attempt = a.number
        WHERE attempt_is_live(a.state) GROUP BY 1, 2) u JOIN allocations l ON l.org = u.org AND l.pool = u.pool WHERE u.gpus > l.limit_gpus"""))
    out["writes by a deposed leader"] = int(sql(
        "SELECT count(*) FROM attempts a JOIN leader_terms t ON t.epoch > a.epoch WHERE a.placed_at > t.began_at"))
    out["jobs without a submit record in the audit log"] = int(sql(
        "SELECT count(*) FROM jobs j WHERE NOT EXISTS (SELECT 1 FROM audit WHERE target = 'job/' || j.id AND action = 'job.submit')"))
    dup = 0
    for dirpath, _, files in os.walk(f"{work}/output"):
        for fn in files:
            with open(os.path.join(dirpath, fn), errors="replace") as f:
                if sum(1 for line in f if line.startswith("launched-")) > 1:
                    dup += 1
    out["duplicate launches"] = dup
    # allotd must stay up through every fault but its own kill -9 (after which the script restarts it).
    dead = [name for name, proc in procs.items() if name.startswith("allotd-") and proc.poll() is not None]
    out["allotd exited by itself"] = len(dead)
    for name in dead:
        with open(f"{work}/logs/{name}.log", errors="replace") as f:
            tail = f.readlines()[-40:]
        print(f"   {name} exited with {procs[name].returncode}; the end of its log:\n" + "".join("     " + line for line in tail), flush=True)
    # Database trouble is a 503 with Retry-After; any other 5xx under these faults is a defect of allotd's.
    out["5xx answers other than 503"] = figures["5xx"]
    figures["5xx"] = 0
    bad = {k: v for k, v in out.items() if v}
    if bad:
        broken.append((scenario, bad))
    print(f"   invariants: {'all hold' if not bad else 'BROKEN ' + json.dumps(bad)}", flush=True)


def scenario(name):
    print(f"== {name}", flush=True)


# --- scenarios ---------------------------------------------------------------------------------------------------
results = {}

def kill_9():
    scenario(f"kill -9 of the leading allotd at {N['kills']} random moments during {N['submissions']} submissions, restarted each time")
    threads = load(N["submissions"])
    restart_s = []
    for _ in range(N["kills"]):
        time.sleep(random.uniform(0.5, 3.0))
        k = leader() or random.choice("ab")
        procs[f"allotd-{k}"].send_signal(signal.SIGKILL)
        procs[f"allotd-{k}"].wait()
        start_allotd(k)
        restart_s.append(ready(k))
    for t in threads:
        t.join()
    left = settle()
    results["kill-9"] = {"kills": N["kills"], "serving again after restart s (max)": round(max(s or 99 for s in restart_s), 2),
                         "submissions acknowledged": len(acked), "503 answers": figures["503"], "jobs not finished": left}
    print("  ", results["kill-9"], flush=True)
    check("kill-9")


def sigstop():
    scenario(f"the leader SIGSTOPped for {N['stop_s']} s then SIGCONTed, under load")
    k = leader()
    for _ in range(50):
        if k:
            break
        time.sleep(0.5)
        k = leader()
    other = "b" if k == "a" else "a"
    terms = int(sql("SELECT max(epoch) FROM leader_terms"))
    threads = load(N["submissions"] // 3)
    stopped_at = time.time()
    procs[f"allotd-{k}"].send_signal(signal.SIGSTOP)
    takeover = None
    while time.time() - stopped_at < N["stop_s"]:
        if takeover is None and int(sql("SELECT max(epoch) FROM leader_terms")) > terms and leader() == other:
            takeover = time.time() - stopped_at
        time.sleep(0.25)
    procs[f"allotd-{k}"].send_signal(signal.SIGCONT)
    for t in threads:
        t.join()
    time.sleep(3)
    left = settle()
    results["sigstop"] = {"standby scheduling after s": round(takeover, 1) if takeover else None, "jobs not finished": left,
                          "leader afterwards": leader() == other}
    print("  ", results["sigstop"], flush=True)
    if takeover is None or takeover > 15:
        broken.append(("sigstop", {"takeover s": takeover}))
    check("sigstop")


def agent_restarts():
    scenario(f"an agent killed and restarted {N['agent_restarts']} times while its ranks run")
    threads = load(N["submissions"] // 3, seconds=2)
    victim = agents[0]
    for _ in range(N["agent_restarts"]):
        time.sleep(random.uniform(1.0, 3.0))
        procs[f"agent-{victim}"].send_signal(signal.SIGKILL)
        procs[f"agent-{victim}"].wait()
        start_agent(victim)
    for t in threads:
        t.join()
    left = settle()
    requeued = int(sql("SELECT count(*) FROM attempts WHERE state IN ('lost', 'dispatch_failed')"))
    results["agent-restarts"] = {"restarts": N["agent_restarts"], "attempts ended lost or undelivered (requeued)": requeued, "jobs not finished": left}
    print("  ", results["agent-restarts"], flush=True)
    check("agent-restarts")


def postgres_restart():
    scenario("PostgreSQL restarted mid-load")
    before = figures["503"]
    threads = load(N["submissions"] // 3)
    time.sleep(1.5)
    t0 = time.time()
    restart_postgres()
    pg_back = time.time() - t0
    serving = None
    while time.time() - t0 < 60:
        try:
            api("GET", "/v1/nodes", k="a", timeout=2)
            api("GET", "/v1/nodes", k="b", timeout=2)
            serving = time.time() - t0
            break
        except Exception:
            time.sleep(0.1)
    for t in threads:
        t.join()
    left = settle()
    results["postgres-restart"] = {"postgres back after s": round(pg_back, 1), "both allotd serving after s": round(serving, 1) if serving else None,
                                   "503 answers meanwhile": figures["503"] - before, "jobs not finished": left,
                                   "allotd still running": all(procs[f"allotd-{k}"].poll() is None for k in "ab")}
    print("  ", results["postgres-restart"], flush=True)
    check("postgres-restart")


def partition():
    half = agents[: len(agents) // 2]
    scenario(f"a partition of half the pool ({', '.join(half)}) for {TIMEOUT_S + 8} s (agents SIGSTOPped), with ranks running")
    threads = load(24, seconds=TIMEOUT_S + 20)
    for t in threads:
        t.join()
    time.sleep(3)
    lost_before = int(sql("SELECT count(*) FROM attempts WHERE state = 'lost'"))
    for n in half:
        procs[f"agent-{n}"].send_signal(signal.SIGSTOP)
    held_after_s = None
    t0 = time.time()
    while time.time() - t0 < TIMEOUT_S + 8:
        if held_after_s is None and sql("SELECT count(*) FROM pool_holds") == "1":
            held_after_s = time.time() - t0
        time.sleep(0.5)
    held = sql("SELECT count(*) FROM pool_holds")
    lost_during = int(sql("SELECT count(*) FROM attempts WHERE state = 'lost'")) - lost_before
    for n in half:
        procs[f"agent-{n}"].send_signal(signal.SIGCONT)
    time.sleep(6)
    held_after = sql("SELECT count(*) FROM pool_holds")
    left = settle()
    results["partition"] = {"attempts lost (requeued) during the partition": lost_during, "pool held after s": round(held_after_s, 1) if held_after_s else None,
                            "still held at its end": held == "1", "hold ended by itself": held_after == "0",
                            "jobs not finished": left}
    print("  ", results["partition"], flush=True)
    if lost_during or held != "1" or held_after != "0":
        broken.append(("partition", results["partition"]))
    check("partition")


def race():
    scenario(f"{N['race']} concurrent submissions racing for the last free GPUs")
    threads = load(N["race"], clients=16, seconds=0.2)
    for t in threads:
        t.join()
    check("race (while placing)")
    left = settle()
    results["race"] = {"jobs": N["race"], "jobs not finished": left}
    print("  ", results["race"], flush=True)
    check("race")


def xid_gang():
    scenario("a GPU hardware XID (79, fallen off the bus) on a node of a running 2-node gang, from the agent's kernel log")
    gang = api("POST", "/v1/jobs", json.dumps({
        "name": "xid-gang", "org": "national-ai-lab", "pool": "h200", "nodes": 2, "gpusPerNode": 4, "cpusPerNode": 1, "memoryPerNode": "1G",
        "command": "echo launched-$ALLOT_JOB_ID-$ALLOT_ATTEMPT-$ALLOT_NODE_RANK; if [ $ALLOT_ATTEMPT = 1 ]; then sleep 600; else sleep 2; fi"}))["id"]
    with lock:
        acked.append(gang)
    t0 = time.time()
    while time.time() - t0 < 60 and sql(f"SELECT state FROM jobs WHERE id = {gang}") != "running":
        time.sleep(0.5)
    node, slot = sql(f"SELECT node, gpu_indices[1] FROM attempt_ranks WHERE job_id = {gang} AND attempt = 1 AND rank = 1").split("|")
    bus = 0x18 + int(sql(f"SELECT substring(uuid from '[0-9]+$') FROM gpus WHERE node = '{node}' AND idx = {slot}"))
    with open(f"{work}/kmsg-{node}.txt", "a") as f:
        f.write(f"[ 4242.123456] NVRM: Xid (PCI:0000:{bus:02x}:00): 79, pid=4242, name=python3, GPU has fallen off the bus.\n")
    fault_at = time.time()
    ended = None
    while time.time() - fault_at < 90:
        if sql(f"SELECT state FROM attempts WHERE job_id = {gang} AND number = 1") == "lost":
            ended = time.time() - fault_at
            break
        time.sleep(0.5)
    left = settle()
    row = sql(f"SELECT j.state, (SELECT count(*) FROM attempts WHERE job_id = j.id), (SELECT health FROM gpus WHERE node = '{node}' AND idx = {slot}),"
              f" (SELECT count(*) FROM attempt_ranks r WHERE r.job_id = j.id AND r.attempt > 1 AND r.node = '{node}' AND {slot} = ANY(r.gpu_indices))"
              f" FROM jobs j WHERE j.id = {gang}").split("|")
    results["xid-gang"] = {"gang stopped and requeued after s (the agent reads its kernel log every 30 s)": round(ended, 1) if ended else None,
                           "job": row[0], "attempts": int(row[1]), "GPU": row[2], "placed on the faulty GPU again": row[3] != "0", "jobs not finished": left}
    print("  ", results["xid-gang"], flush=True)
    if ended is None or row[0] != "succeeded" or row[2] != "quarantined" or row[3] != "0":
        broken.append(("xid-gang", results["xid-gang"]))
    check("xid-gang")
    sh(f"{bin_}/allot", "nodes", "restore-gpu", node, slot, "--reason", "fault drill over", env=cli_env)


def standby_promotion():
    global superuser
    scenario("the primary PostgreSQL killed mid-load (immediate stop) and its synchronous standby promoted")
    before, acked_before = figures["503"], len(acked)
    threads = load(N["submissions"] // 3)
    time.sleep(1.5)
    t0 = time.time()
    subprocess.run(as_pg(f"{pgbin}/pg_ctl", "-D", f"{pghome}/data", "-m", "immediate", "-w", "stop"), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sh(f"{root}/ops/postgres.sh", "promote", standby_dir)
    promoted = time.time() - t0
    superuser = standby_superuser
    serving = None
    while time.time() - t0 < 60:
        try:
            for k in "ab":
                job = api("POST", "/v1/jobs", json.dumps({"name": f"after-promotion-{k}", "org": "national-ai-lab", "pool": "h200", "gpusPerNode": 1,
                                                          "cpusPerNode": 1, "memoryPerNode": "1G", "command": "true"}), k=k, timeout=5)
                with lock:
                    acked.append(job["id"])
            serving = time.time() - t0
            break
        except Exception:
            time.sleep(0.2)
    for t in threads:
        t.join()
    left = settle()
    results["standby-promotion"] = {"standby promoted after s": round(promoted, 1),
                                    "both allotd accepting submissions after s": round(serving, 1) if serving else None,
                                    "submissions acknowledged meanwhile": len(acked) - acked_before, "503 answers meanwhile": figures["503"] - before,
                                    "jobs not finished": left, "allotd still running": all(procs[f"allotd-{k}"].poll() is None for k in "ab")}
    print("  ", results["standby-promotion"], flush=True)
    if serving is None:
        broken.append(("standby-promotion", results["standby-promotion"]))
    check("standby-promotion")


SCENARIOS = {"kill-9": kill_9, "sigstop": sigstop, "agent-restarts": agent_restarts, "postgres-restart": postgres_restart, "partition": partition, "race": race, "xid-gang": xid_gang, "standby-promotion": standby_promotion}
for name in args.only.split(",") if args.only else SCENARIOS:
    if name not in SCENARIOS:
        sys.exit(f"faults: --only: no scenario {name!r} (there are: {', '.join(SCENARIOS)})")
    SCENARIOS[name]()

with open(f"{work}/faults.json", "w") as f:
    json.dump({"seed": args.seed, "bounded": B, "results": results, "broken": broken}, f, indent=2)
for proc in procs.values():
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
for proc in procs.values():
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
if broken:
    print(f"faults: BROKEN (seed {args.seed}): {broken}", flush=True)
    sys.exit(1)
print(f"faults: every invariant held in every scenario (seed {args.seed}); figures in {work}/faults.json", flush=True)
