#!/usr/bin/env python3
"""Writes the example simulation inputs (SPEC §6): a 16-node H200 pool in two racks, and a day's trace shaped like
published GPU-cluster traces: many single-GPU and fractional inference pods, some CPU-only work, multi-GPU training
and a few multi-node gangs. Seeded, so the files are the same every time."""
import random

rng = random.Random(7)
with open("cluster.csv", "w") as f:
    f.write("node,pool,gpus,gpu_model,cpu_milli,memory_mib,block\n")
    for i in range(16):
        f.write(f"gpu-{i + 1:03d},h200,8,H200,112000,2097152,rack-{1 + i // 8}\n")

orgs = ["defense", "national-ai-lab", "university-consortium", "startups"]
with open("trace.csv", "w") as f:
    f.write("id,submit_s,duration_s,org,kind,pool,nodes,gpus_per_node,gpu_milli,gpu_model,cpu_milli,memory_mib,priority,time_limit_s\n")
    t = 0
    for i in range(1, 401):
        t += int(rng.expovariate(1 / 180))
        shape = rng.random()
        kind, nodes, gpus, milli, prio = "training", 1, 1, "", 100
        if shape < 0.35:
            kind, gpus, milli = "inference", 0, str(rng.choice([100, 250, 500]))
        elif shape < 0.45:
            gpus = 0
        elif shape < 0.75:
            gpus = rng.choice([1, 2, 4])
        elif shape < 0.93:
            gpus = 8
        else:
            nodes, gpus = rng.choice([2, 2, 4]), 8
        if rng.random() < 0.1:
            prio = 1000
        duration = int(rng.lognormvariate(8, 1.2))
        limit = duration * 2 if rng.random() < 0.9 else ""
        never = kind == "inference" and rng.random() < 0.3
        f.write(f"{i},{t},{'' if never else duration},{rng.choice(orgs)},{kind},h200,{nodes},{gpus},{milli},,{rng.choice([2000, 8000, 16000])},"
                f"{rng.choice([16384, 65536, 262144])},{prio},{'' if never else limit}\n")
