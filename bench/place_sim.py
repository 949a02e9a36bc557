"""Placement simulator: the command node's own scoring code
(emergence.place.score) against Kubernetes' node scores and random choice,
on a generated workload over 1,000 hosts, no containers.

Every policy sees the same hosts and the same arrivals (seeded).  A task
goes to a host that fits it (free CPU and memory); when none fits it waits,
first come first served, until a task ends.  Utilisation is what is
allocated over capacity (CPU, memory) plus the tasks' disk-IO and network
shares, which Kubernetes' scores do not see and D does.

Printed per policy: mean and final D_max (the background's measure, over all
hosts), utilisation spread (standard deviation of hosts' CPU+memory
utilisation, sampled once a simulated second), makespan, the mean time a
task waited for room (where packing shows), and the cost of one
decision; then ratios against the D_max policy.  A PNG of the spread over
time per policy is written (matplotlib, imported only here).

Then the trace replay (bench/place_replay.py): tasks drawn from the workload
traces Overwatch recorded from real CPU-, memory-, I/O- and network-bound
containers (bench/data/place_traces.json, made by bench/place_traces.py),
with interference as measured between those classes on this machine
(bench/data/place_interference.json, made by bench/place_interference.py;
--interference shares: processor sharing per resource instead), at 50, 65
and 80 % of the cluster's CPU requested.  Printed per load and policy: mean
slowdown (time on the host over time alone), p99 completion time (arrival to
end), makespan, and the cost of a decision; then ratios against D_max.

  python bench/place_sim.py [--hosts 1000] [--tasks 5000] [--seed 1] [--png FILE]
                            [--burst-only] [--replay-only] [--replay-hosts 1000]
                            [--replay-tasks 5000] [--traces FILE]
                            [--interference matrix|shares] [--matrix FILE]
"""

import argparse
import heapq
import os
import random
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from emergence.place import score  # noqa: E402

# Task classes: (cpu cores, memory GB, disk-io share, net share), drawn with jitter.
CLASSES = [(4.0, 4.0, 0.02, 0.01), (1.0, 16.0, 0.01, 0.01),
           (2.0, 2.0, 0.15, 0.02), (2.0, 2.0, 0.01, 0.15)]


def make_hosts(n, rng):
    hosts = []
    for i in range(n):
        cpu, mem = rng.choice([(2, 8), (4, 16), (8, 32), (16, 64)])
        hosts.append({"name": f"h{i:04d}", "capacity": {"cpu": cpu, "memory": mem},
                      "allocated": {"cpu": 0.0, "memory": 0.0},
                      "util": {"cpu": 0.0, "memory": 0.0, "disk_io": 0.0, "net": 0.0}})
    return hosts


def make_tasks(n, hosts, rng, burst_only=False):
    """A burst (three quarters at once, more than the cluster holds, so tasks
    queue and the policies' packing shows in the makespan), then Poisson
    arrivals at a rate that would keep the cluster about 70 % busy.  With
    BURST_ONLY every task arrives at once: a batch, whose makespan shows how
    well a policy packs."""
    total_cpu = sum(h["capacity"]["cpu"] for h in hosts)
    mean_cpu = statistics.mean(c[0] for c in CLASSES)
    mean_run = 60.0  # run times uniform in 20..100 s: no single long task sets the makespan
    rate = 0.7 * total_cpu / (mean_cpu * mean_run)
    t, tasks = 0.0, []
    burst = n if burst_only else n * 3 // 4
    for i in range(n):
        if i >= burst:
            t += rng.expovariate(rate)
        c = rng.choice(CLASSES)
        j = lambda x: x * rng.uniform(0.5, 1.5)  # noqa: E731
        tasks.append({"id": i, "at": t, "run": rng.uniform(20.0, 100.0),
                      "demand": {"cpu": j(c[0]), "memory": j(c[1]),
                                 "disk_io": j(c[2]), "net": j(c[3])}})
    return tasks


def _fits(h, d):
    cap, al = h["capacity"], h["allocated"]
    return (al["cpu"] + d["cpu"] <= cap["cpu"] + 1e-9
            and al["memory"] + d["memory"] <= cap["memory"] + 1e-9)


def _fracs(h, d):
    cap, al = h["capacity"], h["allocated"]
    return ((al["cpu"] + d["cpu"]) / cap["cpu"], (al["memory"] + d["memory"]) / cap["memory"])


def least_allocated(cands, d, rng):
    """k8s NodeResourcesFit LeastAllocated: mean free fraction after placing."""
    return max(cands, key=lambda h: sum(1 - f for f in _fracs(h, d)) / 2)


def most_allocated(cands, d, rng):
    """k8s NodeResourcesFit MostAllocated: mean used fraction after placing."""
    return max(cands, key=lambda h: sum(_fracs(h, d)) / 2)


def balanced_allocation(cands, d, rng):
    """k8s NodeResourcesBalancedAllocation: 1 − std of the used fractions."""
    def s(h):
        c, m = _fracs(h, d)
        return 1 - abs(c - m) / 2
    return max(cands, key=s)


def random_choice(cands, d, rng):
    return rng.choice(cands)


def dmax(hosts, d):
    """The command node's choice: score.rank over every host (fit included)."""
    task = {"demand": d}
    best = score.choose(hosts, task)
    return best


POLICIES = ["D_max", "LeastAllocated", "MostAllocated", "BalancedAllocation", "Random"]
K8S = {"LeastAllocated": least_allocated, "MostAllocated": most_allocated,
       "BalancedAllocation": balanced_allocation, "Random": random_choice}


def _apply(h, d, sign):
    for r in ("cpu", "memory"):
        h["allocated"][r] += sign * d[r]
        h["util"][r] = h["allocated"][r] / h["capacity"][r]
    for r in ("disk_io", "net"):
        h["util"][r] = max(0.0, h["util"][r] + sign * d[r])


def _spread(hosts):
    return statistics.pstdev([(h["util"]["cpu"] + h["util"]["memory"]) / 2 for h in hosts])


def _dmax_now(hosts):
    mean = score.mean_utilisation(hosts)
    return max(score.distance(h["util"], {}, mean) for h in hosts)


def simulate(policy, n_hosts, tasks, seed):
    rng = random.Random(seed)
    hosts = make_hosts(n_hosts, random.Random(seed))
    by_name = {h["name"]: h for h in hosts}
    running = []  # (end, seq, host, demand)
    waiting = []
    spread, dmaxes, costs, waits = [], [], [], []
    now, seq, makespan = 0.0, 0, 0.0
    # a host's demand is in absolute units for cpu/memory, shares for the rest:
    # score.demand_fraction divides by capacity only where a capacity is given.

    def place(t, now):
        nonlocal seq, makespan
        d = t["demand"]
        t0 = time.perf_counter()
        if policy == "D_max":
            name = dmax(hosts, d)
            h = by_name[name] if name else None
        else:
            cands = [h for h in hosts if _fits(h, d)]
            h = K8S[policy](cands, d, rng) if cands else None
        costs.append(time.perf_counter() - t0)
        if h is None:
            return False
        _apply(h, d, +1)
        waits.append(now - t["at"])
        end = now + t["run"]
        makespan = max(makespan, end)
        seq += 1
        heapq.heappush(running, (end, seq, h["name"], d))
        return True

    last = [-1.0]

    def sample(now):  # at most once a simulated second
        if now - last[0] >= 1.0:
            last[0] = now
            spread.append((now, _spread(hosts)))
            dmaxes.append(_dmax_now(hosts))

    def release_until(t):
        nonlocal now
        while running and running[0][0] <= t:
            end, _, name, d = heapq.heappop(running)
            now = end
            _apply(by_name[name], d, -1)
            while waiting and place(waiting[0], now):
                waiting.pop(0)
            sample(now)

    for t in tasks:
        release_until(t["at"])
        now = max(now, t["at"])
        if waiting or not place(t, now):
            waiting.append(t)
        sample(now)
    release_until(float("inf"))
    return {"spread": spread, "dmax": dmaxes, "makespan": makespan, "costs": costs,
            "wait": statistics.mean(waits)}


def replay_report(a):
    import place_replay
    loads = (0.5, 0.65, 0.8)
    print(f"\ntrace replay with interference: {a.replay_tasks} tasks on {a.replay_hosts} hosts "
          f"(seed {a.seed}; traces {a.traces or 'bench/data/place_traces.json'}; "
          f"interference {a.interference}"
          + (f" from {a.matrix}" if a.matrix and a.interference == "matrix" else "") + ")")
    print(f"{'load':>5} {'policy':<19} {'mean slowdown':>13} {'p99 completion s':>16} "
          f"{'makespan s':>10} {'decision ms (median/p99)':>25}")
    out = {}
    for load in loads:
        for p in place_replay.POLICIES:
            t0 = time.perf_counter()
            r = out[load, p] = place_replay.replay(p, a.replay_hosts, a.replay_tasks, load,
                                                   a.seed, a.traces, a.interference, a.matrix)
            print(f"  replayed {p} at {load:.2f} in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
            c = sorted(r["costs"])
            print(f"{load:5.2f} {p:<19} {r['slowdown']:13.3f} {r['p99']:16.1f} "
                  f"{r['makespan']:10.1f} {c[len(c) // 2] * 1e3:12.3f} / "
                  f"{c[int(len(c) * 0.99)] * 1e3:8.3f}")
    print("\nratios against D_max (>1: the peer is worse; the aim is >=1.10 on slowdown and "
          "p99, >=1.00 on makespan)")
    for load in loads:
        base = out[load, "D_max"]
        for p in place_replay.POLICIES[1:]:
            r = out[load, p]
            print(f"{load:5.2f} {p:<19} slowdown x{r['slowdown'] / base['slowdown']:.3f}  "
                  f"p99 x{r['p99'] / base['p99']:.3f}  "
                  f"makespan x{r['makespan'] / base['makespan']:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--png", default="/tmp/place_sim_spread.png")
    ap.add_argument("--burst-only", action="store_true",
                    help="every task at t=0 (a batch: makespan shows packing)")
    ap.add_argument("--replay-only", action="store_true", help="only the trace replay")
    ap.add_argument("--replay-hosts", type=int, default=1000)
    ap.add_argument("--replay-tasks", type=int, default=5000)
    ap.add_argument("--traces", default=None, help="a traces file (default bench/data/...)")
    ap.add_argument("--interference", choices=("matrix", "shares"), default="matrix",
                    help="the replay's interference: the measured matrix "
                         "(bench/data/place_interference.json) or processor sharing")
    ap.add_argument("--matrix", default=None,
                    help="another matrix file (as bench/place_interference.py writes)")
    a = ap.parse_args()
    if a.replay_only:
        replay_report(a)
        return
    tasks = make_tasks(a.tasks, make_hosts(a.hosts, random.Random(a.seed)),
                       random.Random(a.seed + 1), burst_only=a.burst_only)
    results = {}
    for p in POLICIES:
        t0 = time.perf_counter()
        results[p] = simulate(p, a.hosts, tasks, a.seed)
        print(f"  simulated {p:<19} in {time.perf_counter() - t0:6.1f} s", file=sys.stderr)
    print(f"{a.tasks} tasks on {a.hosts} hosts (seed {a.seed}); shared machine, "
          "decision costs are noisy")
    print(f"{'policy':<19} {'mean D_max':>10} {'mean spread':>11} {'makespan s':>10} "
          f"{'mean wait s':>11} {'decision ms (median/p99)':>25}")
    base = results["D_max"]
    for p in POLICIES:
        r = results[p]
        c = sorted(r["costs"])
        med, p99 = c[len(c) // 2] * 1e3, c[int(len(c) * 0.99)] * 1e3
        print(f"{p:<19} {statistics.mean(r['dmax']):10.4f} "
              f"{statistics.mean(s for _, s in r['spread']):11.4f} {r['makespan']:10.1f} "
              f"{r['wait']:11.2f} "
              f"{med:12.3f} / {p99:8.3f}")
    print("\nratios against D_max (>1: the peer is worse)")
    for p in POLICIES[1:]:
        r = results[p]
        d = statistics.mean(r["dmax"]) / statistics.mean(base["dmax"])
        s = (statistics.mean(x for _, x in r["spread"])
             / statistics.mean(x for _, x in base["spread"]))
        print(f"{p:<19} D_max x{d:.2f}  spread x{s:.2f}"
              f"  makespan x{r['makespan'] / base['makespan']:.3f}"
              f"  wait x{r['wait'] / base['wait'] if base['wait'] else float('nan'):.2f}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 5))
    for p in POLICIES:
        xs = [t for t, _ in results[p]["spread"]]
        ys = [s for _, s in results[p]["spread"]]
        ax.plot(xs, ys, label=p, linewidth=1)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("utilisation spread (std of hosts' CPU+memory use)")
    ax.set_title(f"{a.tasks} tasks on {a.hosts} hosts")
    ax.legend()
    fig.savefig(a.png, dpi=100)
    print(f"\nplot: {a.png}")
    replay_report(a)


if __name__ == "__main__":
    main()
