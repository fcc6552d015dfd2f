#!/usr/bin/env python3
"""Writes a cluster and a trace shaped like Alibaba's cluster-trace-gpu-v2023 (Weng et al., ATC'23) for
`allot simulate`: the node types and pod shapes of Benchmarks/ (allot-bench's traceNodeTypes and tracePods: 1-, 2-,
4- and 8-GPU nodes of seven models, 16-128 CPUs; a seventh of pods CPU-only, about half a share of one GPU, most of
the rest one GPU, a few 2-8), pods arriving one at a time with durations, so the replay sees arrivals and
completions. Deterministic for a seed.
  ops/trace_shaped.py OUT_DIR [--nodes 1213] [--pods 8328] [--seed 1]"""
import argparse, os, random

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--nodes", type=int, default=1213)
p.add_argument("--pods", type=int, default=8328)
p.add_argument("--seed", type=int, default=1)
a = p.parse_args()
rng = random.Random(a.seed)

# (gpus, cpus, memory MiB, model), weight: as allot-bench's traceNodeTypes.
node_types = [((8, 96, 393216, "G2"), 46), ((2, 104, 524288, "T4"), 32), ((4, 96, 393216, "T4"), 2), ((2, 16, 122880, "P100"), 8),
              ((2, 64, 262144, "P100"), 2), ((8, 128, 786432, "G3"), 3), ((4, 32, 131072, "V100M16"), 3), ((8, 64, 262144, "V100M16"), 1),
              ((8, 96, 786432, "V100M32"), 2), ((4, 48, 376832, "V100M32"), 1), ((1, 32, 131072, "T4"), 4), ((1, 16, 65536, "A10"), 3)]
# kind → [((gpus, milli, cpu milli, memory MiB), weight)]: as allot-bench's tracePods.
pods = {
    "cpu": [((0, 0, 8000, 30517), 4), ((0, 0, 32000, 49152), 3), ((0, 0, 12500, 57344), 1), ((0, 0, 16000, 31250), 1), ((0, 0, 20000, 65536), 1)],
    "share": [((0, 470, 8000, 30517), 5), ((0, 470, 11908, 47104), 4), ((0, 460, 6000, 12288), 4), ((0, 320, 4000, 15258), 3),
              ((0, 320, 8000, 30517), 2), ((0, 220, 4000, 15258), 2), ((0, 220, 8000, 30517), 1), ((0, 160, 4000, 15258), 1),
              ((0, 110, 4000, 15258), 1), ((0, 650, 11908, 47104), 3), ((0, 810, 3152, 5600), 4), ((0, 550, 4152, 10600), 1),
              ((0, 230, 4000, 30517), 1), ((0, 50, 4000, 15258), 0.5), ((0, 480, 4000, 22888), 1)],
    "one": [((1, 0, 3152, 5600), 5), ((1, 0, 12000, 24576), 3), ((1, 0, 16000, 32768), 3), ((1, 0, 11400, 48128), 3), ((1, 0, 18708, 64512), 2),
            ((1, 0, 12000, 16384), 2), ((1, 0, 9810, 41560), 1), ((1, 0, 8000, 16384), 1), ((1, 0, 4000, 24576), 1), ((1, 0, 15200, 80896), 1),
            ((1, 0, 11908, 47104), 1)],
    "multi": [((2, 0, 6000, 65536), 3), ((2, 0, 16000, 98304), 2), ((4, 0, 32200, 132096), 2), ((4, 0, 24000, 98304), 1), ((8, 0, 88000, 327680), 1),
              ((8, 0, 64000, 262144), 1)],
}
kinds = [("cpu", 13), ("share", 38), ("one", 47), ("multi", 2)]


def pick(choices):
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


os.makedirs(a.out, exist_ok=True)
gpus = 0
with open(os.path.join(a.out, "cluster.csv"), "w") as f:
    f.write("node,pool,gpus,gpu_model,cpu_milli,memory_mib,block\n")
    for i in range(a.nodes):
        g, c, m, model = pick(node_types)
        gpus += g
        f.write(f"n{i:05d},default,{g},{model},{c * 1000},{m},\n")
# Arrivals: a Poisson stream whose mean GPU demand keeps the cluster about 90% busy for durations of 10 minutes to 4
# hours (log-uniform), so queues form and drain.
mean_duration = 3600.0
mean_gpu = 0.38 * 0.4 + 0.47 + 0.02 * 3.4
rate = 0.9 * gpus / mean_gpu / mean_duration
t = 0.0
with open(os.path.join(a.out, "trace.csv"), "w") as f:
    f.write("id,submit_s,duration_s,org,kind,pool,nodes,gpus_per_node,gpu_milli,gpu_model,cpu_milli,memory_mib,priority,time_limit_s\n")
    for i in range(1, a.pods + 1):
        t += rng.expovariate(rate)
        g, milli, c, m = pick(pods[pick(kinds)])
        d = int(600 * (24 ** rng.random()))
        f.write(f"{i},{int(t)},{d},org{i % 8},training,default,1,{g},{milli or ''},,{c},{m},0,\n")
print(f"{a.nodes} nodes, {gpus} GPUs; {a.pods} pods over {int(t)} s")
