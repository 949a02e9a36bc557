"""Replay of recorded workload traces with interference: what `bench/place_sim.py
--traces` runs.

Tasks are drawn from the four classes recorded by bench/place_traces.py
(CPU-, memory-, I/O- and network-bound busybox containers measured by
Overwatch): each class's profile is its measured use of CPU cores, memory,
disk bytes/s and network bytes/s, normalised so the class that uses a
resource most uses one unit of it; a unit is 2 cores, 8 GB, half a host's
disk and half its network (the trace's figures are of one small VM; the
shape — which resource a class leans on and how much the others — is what
carries over).  Tasks of a class vary ±30 % around its profile.

Interference comes from measurements (bench/data/place_interference.json,
made by bench/place_interference.py): M[a][b] is how much slower a task of
class a ran next to one looping task of class b than alone, each pinned to
its own CPU of this host — what co-location costs when CPU is reserved.  On
a host, a task of class a runs at rate 1 / (1 + Σ_j (M[a][b_j] − 1)·k_j·s_j)
over its co-located tasks j: s_j is j's intensity (its use over its class's
profile, 0.7–1.3) and k_j scales a measurement taken on a 2-CPU machine to
the host: disk and network are one device per host (k = 1), caches and
memory bandwidth grow with the cores (k = 2 / host CPUs).  Pairs are summed
(an additive model: only pairs were measured).  CPU and memory are also
processor-shared, though the fit check keeps them from being over-committed.
`interference="shares"` is the earlier model instead: processor sharing per
resource (two disk-bound tasks on one disk take twice as long).  CPU and
memory are requested (what Kubernetes' scores see) and fit-checked; disk and
network are not, as in Kubernetes.

The D_max policy sees what Overwatch would measure: each host's current use
of all four resources as a fraction of its capacity, and the task's profile
as its class's learned mean (the per-image estimate), not its jittered
truth.  Kubernetes' scores see requests.
"""

import heapq
import json
import os
import random
import time

# Kubernetes' node scores, as the synthetic simulation has them
from place_sim import _fits, balanced_allocation, least_allocated, random_choice

RESOURCES = ("cpu", "memory", "disk_io", "net")
UNIT = {"cpu": 2.0, "memory": 8.0, "disk_io": 0.5, "net": 0.5}
TRACE_KEYS = {"cpu": "cpu", "memory": "memory", "disk_io": "io", "net": "net"}
HERE = os.path.dirname(os.path.abspath(__file__))
TRACES = os.path.join(HERE, "data", "place_traces.json")
MATRIX = os.path.join(HERE, "data", "place_interference.json")
# the resource a class leans on: disk and network are per host, the rest per core
PER_HOST = {"io", "net"}


def interference(path=None):
    """(M, cpus): the measured matrix (separate CPUs) with its entries below
    1 (noise: a neighbour cannot speed a task up) raised to 1, and how many
    CPUs the measuring machine had."""
    with open(path or MATRIX) as f:
        rec = json.load(f)
    m = rec["separate"]["matrix"]
    return {a: {b: max(1.0, x) for b, x in row.items()} for a, row in m.items()}, rec["cpus"]


def profiles(path=None):
    """{class: {resource: amount}} in the simulator's units, from the traces."""
    with open(path or TRACES) as f:
        alone = json.load(f)["alone"]
    top = {r: max(c[TRACE_KEYS[r]] for c in alone.values()) or 1.0 for r in RESOURCES}
    out = {}
    for name, c in alone.items():
        p = {r: UNIT[r] * c[TRACE_KEYS[r]] / top[r] for r in RESOURCES}
        p["cpu"] = max(p["cpu"], 0.25)       # every container needs some CPU
        p["memory"] = max(p["memory"], 0.5)  # and some memory
        out[name] = p
    return out


def make_hosts(n, rng):
    hosts = []
    for i in range(n):
        cpu, mem = rng.choice([(4, 16), (8, 32), (16, 64)])
        hosts.append({"name": f"h{i:04d}", "capacity": {"cpu": cpu, "memory": mem,
                                                        "disk_io": 1.0, "net": 1.0},
                      "allocated": {"cpu": 0.0, "memory": 0.0},
                      "use": {r: 0.0 for r in RESOURCES}, "running": set(),
                      "util": {r: 0.0 for r in RESOURCES}})
    return hosts


def make_tasks(n, hosts, profs, load, rng):
    """Poisson arrivals at a rate that keeps about LOAD of the cluster's CPU
    requested; run times (alone) uniform in 20..100 s."""
    names = sorted(profs)
    total_cpu = sum(h["capacity"]["cpu"] for h in hosts)
    mean_cpu = sum(profs[c]["cpu"] for c in names) / len(names)
    rate = load * total_cpu / (mean_cpu * 60.0)
    t, tasks = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate)
        cls = rng.choice(names)
        use = {r: profs[cls][r] * rng.uniform(0.7, 1.3) for r in RESOURCES}
        own = [use[r] / profs[cls][r] for r in RESOURCES if profs[cls][r]]
        tasks.append({"id": i, "at": t, "run": rng.uniform(20.0, 100.0), "class": cls,
                      "use": use, "request": {"cpu": use["cpu"], "memory": use["memory"]},
                      "intensity": sum(own) / len(own)})
    return tasks


K8S = {"LeastAllocated": least_allocated, "BalancedAllocation": balanced_allocation,
       "Random": random_choice}
POLICIES = ["D_max"] + list(K8S)


class Replay:
    """One policy over one workload: an event simulation with processor sharing."""

    def __init__(self, policy, hosts, tasks, profs, seed, matrix=None):
        from emergence.place import score
        self.score, self.policy = score, policy
        self.matrix = matrix  # (M, cpus) or None: processor sharing per resource
        self.hosts, self.tasks, self.profs = hosts, tasks, profs
        self.rng = random.Random(seed)
        self.by_name = {h["name"]: h for h in hosts}
        self.events = []   # (time, seq, kind, payload)
        self.seq = 0
        self.now = 0.0
        self.state = {}    # task id -> {"rem", "rate", "last", "ver", "host", "start"}
        self.costs, self.slowdowns, self.completions = [], [], []
        self.waits, self.makespan = [], 0.0

    def _push(self, t, kind, payload):
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, payload))

    def _rates(self, h):
        """Advance the host's tasks to now, then give each its new rate."""
        cap = h["capacity"]
        for tid in h["running"]:
            s = self.state[tid]
            s["rem"] -= (self.now - s["last"]) * s["rate"]
            s["last"] = self.now
        load = {r: h["use"][r] / cap[r] for r in RESOURCES}
        if self.matrix:
            m, cpus = self.matrix
            press = {}
            for tid in h["running"]:
                t = self.tasks[tid]
                press[t["class"]] = press.get(t["class"], 0.0) + t["intensity"]
            k = {b: 1.0 if b in PER_HOST else cpus / cap["cpu"] for b in press}
            shared = max(1.0, load["cpu"], load["memory"])
        for tid in h["running"]:
            s, t = self.state[tid], self.tasks[tid]
            if self.matrix:
                row, a = m[t["class"]], t["class"]
                slow = 1.0 + sum((row[b] - 1.0) * k[b] * (p - (t["intensity"] if b == a else 0))
                                 for b, p in press.items())
                s["rate"] = 1.0 / (max(1.0, slow) * shared)
            else:
                use = t["use"]
                worst = max((load[r] for r in RESOURCES if use[r] > 0.02 * UNIT[r]),
                            default=1.0)
                s["rate"] = 1.0 / max(1.0, worst)
            s["ver"] += 1
            self._push(self.now + max(0.0, s["rem"]) / s["rate"], "end", (tid, s["ver"]))
        for r in RESOURCES:
            h["util"][r] = min(2.0, load[r])  # what Overwatch would measure

    def _place(self, t):
        t0 = time.perf_counter()
        if self.policy == "D_max":
            # declared requests win; the image's estimate fills disk and network
            demand = dict(self.profs[t["class"]], **t["request"])
            name = self.score.choose(self.hosts, {"demand": demand})
            h = self.by_name[name] if name else None
        else:
            cands = [h for h in self.hosts if _fits(h, t["request"])]
            h = K8S[self.policy](cands, t["request"], self.rng) if cands else None
        self.costs.append(time.perf_counter() - t0)
        if h is None:
            return False
        for r in ("cpu", "memory"):
            h["allocated"][r] += t["request"][r]
        for r in RESOURCES:
            h["use"][r] += t["use"][r]
        h["running"].add(t["id"])
        self.state[t["id"]] = {"rem": t["run"], "rate": 1.0, "last": self.now, "ver": 0,
                               "host": h["name"], "start": self.now}
        self.waits.append(self.now - t["at"])
        self._rates(h)
        return True

    def _end(self, tid):
        t, s = self.tasks[tid], self.state.pop(tid)
        h = self.by_name[s["host"]]
        for r in ("cpu", "memory"):
            h["allocated"][r] -= t["request"][r]
        for r in RESOURCES:
            h["use"][r] = max(0.0, h["use"][r] - t["use"][r])
        h["running"].discard(tid)
        self.slowdowns.append((self.now - s["start"]) / t["run"])
        self.completions.append(self.now - t["at"])
        self.makespan = max(self.makespan, self.now)
        self._rates(h)

    def run(self):
        for t in self.tasks:
            self._push(t["at"], "arrive", t["id"])
        waiting = []
        while self.events:
            self.now, _, kind, payload = heapq.heappop(self.events)
            if kind == "arrive":
                if waiting or not self._place(self.tasks[payload]):
                    waiting.append(self.tasks[payload])
                continue
            tid, ver = payload
            s = self.state.get(tid)
            if s is None or s["ver"] != ver:
                continue  # superseded by a rate change
            self._end(tid)
            while waiting and self._place(waiting[0]):
                waiting.pop(0)
        c = sorted(self.completions)
        return {"slowdown": sum(self.slowdowns) / len(self.slowdowns),
                "p99": c[int(len(c) * 0.99)], "makespan": self.makespan,
                "wait": sum(self.waits) / len(self.waits), "costs": self.costs}


def replay(policy, n_hosts, n_tasks, load, seed, trace_path=None, model="matrix",
           matrix_path=None):
    """One policy's figures; MODEL is "matrix" (the measured interference) or
    "shares" (processor sharing per resource)."""
    profs = profiles(trace_path)
    hosts = make_hosts(n_hosts, random.Random(seed))
    tasks = make_tasks(n_tasks, hosts, profs, load, random.Random(seed + 1))
    matrix = interference(matrix_path) if model == "matrix" else None
    return Replay(policy, hosts, tasks, profs, seed, matrix).run()
