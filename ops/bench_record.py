#!/usr/bin/env python3
"""Records a run of ops/bench: merges its figures into BENCHMARKS.json (each figure keeps the date and commit of the
run that measured it, so a run of some phases leaves the others' figures standing) and rewrites the section of
BENCHMARKS.md between its markers: issue 17's targets, each with its figure and whether it is met.

  ops/bench_record.py RESULTS.json [--root DIR] [--command 'ops/bench …']
  ops/bench_record.py RESULTS.json --slurm PEER/run-peer.sh --no-record   Slurm's figures on the real-agent workloads,
                                                                          added to RESULTS.json
"""
import argparse, json, os, subprocess

BEGIN, END = "<!-- ops/bench: begin (written by ops/bench_record.py) -->", "<!-- ops/bench: end -->"


def merge(store, results, stamp):
    for key, value in results.items():
        if key not in ("date",):
            store[key] = {**stamp, "value": value}
    return store


def figure(store, key, *path):
    entry = store.get(key)
    if not entry:
        return None, None
    v = entry["value"]
    for p in path:
        if isinstance(v, list):
            v = next((x for x in v if x.get("clients") == p), None)
        elif isinstance(v, dict):
            v = v.get(p)
        if v is None:
            return None, entry
    return v, entry


def rows(store):
    """(target, figure as text, met: True/False/None, where it comes from) for each target of issue 17."""
    out = []

    def add(target, text, met, entry):
        out.append((target, text if entry else "not measured", met if entry else None,
                    f"{entry['date']} {entry['commit']}" if entry else "—"))

    subs, e = figure(store, "submissions")
    if subs:
        text = "; ".join(f"{s['clients']} clients {s['per_s']:,.0f}/s vs pgbench {s['pgbench_per_s']:,.0f}/s = {s['ratio']:.1%}" for s in subs)
        add("submissions ≥ 50% of pgbench's durable single-row inserts, same concurrency", text, all(s["ratio"] >= 0.5 for s in subs), e)
        best = max(s["per_s"] for s in subs)
        add("≥ 1,000 acknowledged durable submissions/s through the API", f"{best:,.0f}/s (best level)", best >= 1000, e)
    else:
        add("submissions ≥ 50% of pgbench's durable single-row inserts, same concurrency", "", None, None)
    for key, n in (("placements_1000_nodes", "1,000"), ("placements", "10,000")):
        p, e = figure(store, key)
        rate = min(p["placed_per_s"], p["dispatched_per_s"]) if p else 0
        add(f"placements committed and dispatched/s at {n} nodes, 100,000 queued" + (" (≥ 5,000)" if n == "10,000" else ""),
            f"{p['placed_per_s']:,}/s placed, {p['dispatched_per_s']:,}/s dispatched" if p else "", rate >= 5000 if n == "10,000" else None, e)
    for n in ("16_nodes", "1000_nodes"):
        c, e = figure(store, "control_plane", n)
        add(f"≥ 600 one-GPU jobs completed/s, simulated agents, {n.replace('_', ' ').replace('1000', '1,000')}",
            f"{c['per_s']}/s ({c['jobs']:,} jobs, 8 API clients)" if c else "", c["per_s"] >= 600 if c else None, e)
    real, e = figure(store, "real_agents")
    slurm, se = figure(store, "slurm")
    for key, label, skey in (("cli_1gpu", "one-GPU jobs, 8 CLI submitters (one process per job)", "complete_1gpu_per_s"),
                             ("api_1gpu", "one-GPU jobs, 8 API clients", "complete_1gpu_per_s"),
                             ("gang_2x8", "two-node gangs (2 × 8 GPUs), 8 clients", "complete_gang_per_s")):
        r = real.get(key) if real else None
        theirs = slurm.get(skey) if slurm else None
        text = f"{r['per_s']}/s ({r['jobs']:,} jobs, isolation {real['isolation']})" if r else ""
        if r and theirs:
            text += f"; Slurm {theirs}/s in the same sitting"
        add(f"real agents, completed/s ≥ Slurm's: {label}", text, (r["per_s"] >= theirs) if r and theirs else None, e if r else None)
    start = real["submit_to_start"].get("first_rank_started") if real else None
    theirs = slurm.get("submit_to_start_p50_ms") if slurm else None
    text = f"p50 {start['p50_ms']:,} ms, p99 {start['p99_ms']:,} ms" if start else ""
    if start and theirs:
        text += f"; Slurm p50 {theirs:,} ms"
    add("real agents, submit → first rank started ≤ a fifth of Slurm's", text, (start["p50_ms"] * 5 <= theirs) if start and theirs else None,
        e if start else None)
    lat, e = figure(store, "latency_free_capacity", "running")
    add("submit → running with free capacity: p99 ≤ 1 s, median ≤ 200 ms (1,000 idle simulated nodes)",
        f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms" if lat else "", (lat["p99_ms"] <= 1000 and lat["p50_ms"] <= 200) if lat else None, e)
    hb, e = figure(store, "heartbeats")
    add("10,000 nodes heartbeating every 5 s with allotd < 50% of one core",
        f"{hb['served_per_s']:,.0f} of {hb['asked_per_s']:,.0f} reports/s served, allotd {hb['allotd_cores']:.1%} of a core" if hb else "",
        (hb["allotd_cores"] < 0.5 and hb["served_per_s"] >= 0.95 * hb["asked_per_s"]) if hb else None, e)
    rss, e = figure(store, "allotd_peak_rss_mib")
    scaled = store.get("placements")
    add("allotd peak RSS < 1 GiB at 10,000 nodes, 100,000 queued", f"{rss} MiB" + ("" if scaled and scaled["commit"] == e["commit"] else
        " (this run did not reach 10,000 nodes)") if rss else "", rss < 1024 if rss else None, e)
    sim, e = figure(store, "simulate")
    add("heterogeneous `allot simulate` ≥ 20,000 decisions/s", f"{sim['decisions_per_s']:,}/s ({sim['decisions']:,} decisions, {sim['wall_s']} s wall)"
        if sim else "", sim["decisions_per_s"] >= 20000 if sim else None, e)
    return out


def render(store, command):
    mark = {True: "yes", False: "no", None: "—"}
    lines = [BEGIN, "", "Written by `ops/bench` at the end of each run (figures in `BENCHMARKS.json`; each keeps the date and commit",
             "of the run that measured it). Last command:", "", "```sh", command, "```", "",
             "| target (issue 17) | figure | met | measured |", "|---|---|---|---|"]
    lines += [f"| {t} | {f} | {mark[m]} | {w} |" for t, f, m, w in rows(store)]
    return "\n".join(lines + ["", END])


def slurm(script, results):
    """Runs the Slurm peer (16 nodes x 8 GPUs on loopback, one run) on the real-agent phase's workloads and returns
    its figures next to the JSON line it printed."""
    real = results.get("real_agents", {})
    jobs = real.get("api_1gpu", {}).get("jobs", 2000)
    gangs = real.get("gang_2x8", {}).get("jobs", 200)
    r = subprocess.run(["bash", script, "-n", "16", "-j", str(jobs), "-s", "8", "-r", "1", "-l", "7", "-g", str(gangs)],
                       capture_output=True, text=True)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        raise SystemExit(f"bench: the Slurm peer failed (rc {r.returncode}):\n{r.stderr[-2000:]}")
    raw = json.loads(lines[-1])
    one, gang = raw["throughput_1gpu"]["8"], raw.get("throughput_gang_2x8", {}).get("8") or {}
    return {"version": raw["slurm_version"], "nodes": raw["nodes"], "jobs": jobs, "gang_jobs": gangs,
            "complete_1gpu_per_s": one["complete_jobs_per_s"]["median"],
            "accepted_held_per_s": one["submit_held_jobs_per_s"]["median"],
            "complete_gang_per_s": (gang.get("complete_jobs_per_s") or {}).get("median"),
            "submit_to_start_p50_ms": raw["latency_1gpu"]["sbatch_submit_to_start_ms_pooled"]["median"],
            "raw": raw}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p.add_argument("--command", default="ops/bench")
    p.add_argument("--slurm", help="the Slurm peer's run-peer.sh: measure Slurm and add its figures to RESULTS")
    p.add_argument("--no-record", action="store_true", help="leave BENCHMARKS.json and BENCHMARKS.md alone")
    args = p.parse_args()
    results = json.load(open(args.results))
    if args.slurm:
        results["slurm"] = slurm(args.slurm, results)
        with open(args.results, "w") as f:
            json.dump(results, f, indent=2)
        s = results["slurm"]
        print(f"Slurm {s['version']}, 16 nodes x 8 GPUs: {s['complete_1gpu_per_s']} one-GPU jobs/s completed, {s['complete_gang_per_s']} "
              f"gangs/s, sbatch -> start p50 {s['submit_to_start_p50_ms']} ms", flush=True)
    if args.no_record:
        return
    commit = subprocess.run(["git", "-C", args.root, "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    path = os.path.join(args.root, "BENCHMARKS.json")
    store = json.load(open(path)) if os.path.exists(path) else {}
    merge(store, results, {"date": results.get("date"), "commit": commit or "unknown"})
    with open(path, "w") as f:
        json.dump(store, f, indent=2, sort_keys=True)
        f.write("\n")
    md = os.path.join(args.root, "BENCHMARKS.md")
    text = open(md).read()
    section = render(store, args.command)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:  # first run: under the whole path's heading
        at = text.index("## The whole path")
        at = text.index("\n", at) + 1
        text = text[:at] + "\n" + section + "\n" + text[at:]
    with open(md, "w") as f:
        f.write(text)
    print("\n".join(l for l in section.splitlines() if l.startswith("|")))


if __name__ == "__main__":
    main()
