#!/usr/bin/env python3
"""The exact packing optimum of small instances, to compare the placement strategies against.

Reads the instances allot-bench writes (`--instances FILE`): nodes, the jobs that arrived, and the GPU
thousandths each strategy allocated placing them one at a time. For each instance it solves, as an integer
linear programme (HiGHS through scipy.optimize.milp), the most GPU capacity any placement of those jobs could
allocate at once — knowing every job in advance, choosing freely which to leave out — under the same rules
as the placer: a share goes on one GPU, whole GPUs are not shared, every GPU holds at most 1000 thousandths,
and no node gives more CPU or memory than it has.

    ops/optimum.py INSTANCES.json [--json]

Variables, per node n: w[n,i] = 1 when GPU i is given whole; x[j,n] = 1 when job j (whole-GPU or CPU-only)
runs on n; y[j,n,i] = 1 when share j runs on GPU i of n. Whole GPUs are the first ones of a node (w[n,i] ≥
w[n,i+1]) and GPUs of a node are otherwise alike, so symmetric solutions are cut away.
"""

import json
import os
import sys

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix


def solve(instance, time_limit=60.0):
    nodes, jobs = instance["nodes"], instance["jobs"]
    index = {}

    def var(key):
        if key not in index:
            index[key] = len(index)
        return index[key]

    for n, node in enumerate(nodes):
        for i in range(node["gpus"]):
            var(("w", n, i))
    def accepts(job, node):
        # A job that names models takes GPUs of those only (case-insensitive); CPU-only jobs go anywhere.
        models = [m.lower() for m in job.get("models") or []]
        uses_gpu = job.get("milli") is not None or job["gpus"] > 0
        return not models or not uses_gpu or node.get("model", "").lower() in models

    for j, job in enumerate(jobs):
        for n, node in enumerate(nodes):
            if not accepts(job, node):
                continue
            if job.get("milli") is not None:
                for i in range(node["gpus"]):
                    var(("y", j, n, i))
            elif job["gpus"] <= node["gpus"]:
                var(("x", j, n))

    rows, lower, upper = [], [], []

    def row(coefficients, lo, hi):
        rows.append(coefficients)
        lower.append(lo)
        upper.append(hi)

    objective = np.zeros(len(index))
    for j, job in enumerate(jobs):
        placed = {}
        for n, node in enumerate(nodes):
            if not accepts(job, node):
                continue
            if job.get("milli") is not None:
                for i in range(node["gpus"]):
                    placed[index[("y", j, n, i)]] = 1
                    objective[index[("y", j, n, i)]] = job["milli"]
            elif ("x", j, n) in index:
                placed[index[("x", j, n)]] = 1
                objective[index[("x", j, n)]] = job["gpus"] * 1000
        row(placed, 0, 1)  # each job at most once
    for n, node in enumerate(nodes):
        cpu, memory, whole = {}, {}, {}
        for j, job in enumerate(jobs):
            keys = (
                [("y", j, n, i) for i in range(node["gpus"])] if job.get("milli") is not None else [("x", j, n)]
            )
            for k in keys if accepts(job, node) else []:
                if k in index:
                    cpu[index[k]] = job["cpuMilli"]
                    memory[index[k]] = job["memoryMiB"]
                    if k[0] == "x" and job["gpus"] > 0:
                        whole[index[k]] = job["gpus"]
        row(cpu, -np.inf, node["cpuMilli"])
        row(memory, -np.inf, node["memoryMiB"])
        # Whole GPUs taken by jobs = GPUs marked whole.
        for i in range(node["gpus"]):
            whole[index[("w", n, i)]] = -1
        row(whole, 0, 0)
        for i in range(node["gpus"]):
            # A GPU is either whole for one job or shared up to 1000 thousandths.
            shared = {index[("w", n, i)]: 1000}
            for j, job in enumerate(jobs):
                if job.get("milli") is not None and accepts(job, node):
                    shared[index[("y", j, n, i)]] = job["milli"]
            row(shared, -np.inf, 1000)
            if i + 1 < node["gpus"]:
                row({index[("w", n, i)]: -1, index[("w", n, i + 1)]: 1}, -np.inf, 0)

    a = lil_matrix((len(rows), len(index)))
    for r, coefficients in enumerate(rows):
        for c, v in coefficients.items():
            a[r, c] = v
    # HiGHS prints progress notes on the process's standard output; keep them out of the report.
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        try:
            result = milp(
                -objective,
                constraints=LinearConstraint(a.tocsr(), lower, upper),
                integrality=np.ones(len(index)),
                bounds=Bounds(0, 1),
                options={"time_limit": time_limit, "mip_rel_gap": 0},
            )
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    if result.x is None:
        raise RuntimeError(f"instance seed {instance['seed']}: {result.message}")
    best = int(round(-result.fun))
    bound = int(np.floor(-result.mip_dual_bound + 1e-6)) if result.mip_dual_bound is not None else best
    return best, max(best, bound), result.status == 0


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: ops/optimum.py INSTANCES.json [--json]")
    instances = json.load(open(sys.argv[1]))
    rows = []
    for inst in instances:
        capacity = sum(n["gpus"] for n in inst["nodes"]) * 1000
        optimum, bound, proven = solve(inst)
        for strategy, allocated in sorted(inst["allocatedMilli"].items()):
            rows.append(
                {
                    "mix": inst.get("mix", "default"),
                    "seed": inst["seed"],
                    "demand": inst["demand"],
                    "strategy": strategy,
                    "jobs": len(inst["jobs"]),
                    "capacityMilli": capacity,
                    "allocatedMilli": allocated,
                    "optimumMilli": optimum,
                    "optimumBoundMilli": bound,
                    "proven": proven,
                }
            )
    summary = []
    mixes = list(dict.fromkeys(r["mix"] for r in rows))
    demands = sorted({r["demand"] for r in rows})
    strategies = sorted({r["strategy"] for r in rows})
    for mix, demand, strategy in [(m, d, s) for m in mixes for d in demands for s in strategies]:
        sel = [r for r in rows if r["mix"] == mix and r["demand"] == demand and r["strategy"] == strategy]
        if sel:
            ratio = sum(r["allocatedMilli"] for r in sel) / max(1, sum(r["optimumBoundMilli"] for r in sel))
            gap = [(r["optimumBoundMilli"] - r["allocatedMilli"]) / r["capacityMilli"] for r in sel]
            summary.append(
                {
                    "mix": mix,
                    "demand": demand,
                    "strategy": strategy,
                    "instances": len(sel),
                    "allProven": all(r["proven"] for r in sel),
                    "allocatedVsOptimum": ratio,
                    "meanGapOfCapacity": sum(gap) / len(gap),
                    "worstGapOfCapacity": max(gap),
                    "unallocatedShare": 1 - sum(r["allocatedMilli"] for r in sel) / sum(r["capacityMilli"] for r in sel),
                    "optimumUnallocatedShare": 1 - sum(r["optimumBoundMilli"] for r in sel) / sum(r["capacityMilli"] for r in sel),
                }
            )
    if "--json" in sys.argv:
        print(json.dumps({"instances": rows, "summary": summary}, indent=2))
        return
    print(f"{'MIX':19}{'STRATEGY':21}{'DEMAND':8}{'N':4}{'UNALLOC':9}{'OPTIMUM':9}{'VS OPTIMUM':12}{'MEAN GAP':10}{'WORST GAP':10}PROVEN")
    for s in summary:
        print(
            f"{s['mix']:19}{s['strategy']:21}{int(s['demand'] * 100):>3}%    {s['instances']:<4}{s['unallocatedShare'] * 100:6.2f}%  "
            f"{s['optimumUnallocatedShare'] * 100:6.2f}%  {s['allocatedVsOptimum'] * 100:8.2f}%   "
            f"{s['meanGapOfCapacity'] * 100:6.2f}%   {s['worstGapOfCapacity'] * 100:6.2f}%   {'yes' if s['allProven'] else 'no'}"
        )


if __name__ == "__main__":
    main()
