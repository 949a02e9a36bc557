"""A real placement run: three worker nodes, each in its own network
namespace (a veth pair to the host), one TLS etcd with RBAC as `cluster init`
makes it, and a command node, all `emergence cluster join` processes; 60
mixed tasks (CPU-, memory-, I/O- and network-bound busybox containers, 15 of
each, 1-3 s alone) submitted at a steady pace, once under D_max
(InterferenceAwareScheduler) and once under Kubernetes' LeastAllocated, in
the same run, with the same task sequence.

Each task's slowdown is its run time (the worker's wall time of
`emergence run`) over its class's run time alone, measured first in the same
run (each class twice, one task at a time on the idle cluster).  Printed:
every task's slowdown, the mean and p90 per scheduler, and their ratio.

The workloads are place_traces.py's, shortened; the network class moves
bytes over the loopback of the task's own network namespace (busybox httpd
and wget), since a worker's policy keeps task containers out of the
worker's namespaces.  The three nodes share this machine's cores, disk and
memory: what the scheduler can keep apart here is the load it sees per node
(measured windows, the demand it placed since, per-image estimates), not
separate hardware.  On a shared machine the figures are noisy.

  python bench/place_cluster.py [--tasks 60] [--gap 0.4] [--seed 7]
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from common import find_emergence, make_bundle  # noqa: E402

# about 1-3 s alone on a small VM: the recorded traces' workloads, smaller
from place_traces import CLASSES as TRACED  # noqa: E402

CLASSES = {
    **{k: TRACED[k].format(n=1500000, mb=192, n4=60, io=12000)
       for k in ("cpu", "memory", "io")},
    "net": "ip link set lo up; mkdir -p /dev/shm/w; "
           "dd if=/dev/zero of=/dev/shm/w/f bs=1M count=64 2>/dev/null; "
           "httpd -p 127.0.0.1:8080 -h /dev/shm/w; i=0; "
           "while [ $i -lt 20 ]; do wget -q -O /dev/null http://127.0.0.1:8080/f; "
           "i=$((i+1)); done",
}
# what each task declares: requests (cpu, memory: what LeastAllocated sees and
# what fit is checked against) and, for D_max, the shares of a node's disk and
# network it leans on (place_traces.json's shape)
DEMAND = {"cpu": {"cpu": 1.0, "memory": 32e6},
          "memory": {"cpu": 1.0, "memory": 400e6},
          "io": {"cpu": 0.5, "memory": 32e6, "disk_io": 0.5},
          "net": {"cpu": 1.0, "memory": 96e6, "net": 0.5}}
SCHEDULERS = ("InterferenceAwareScheduler", "LeastAllocated")
SHORT = {"InterferenceAwareScheduler": "D_max", "LeastAllocated": "LeastAllocated"}


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


class Namespaces:
    """N network namespaces, each joined to the host by a veth pair with a
    /30 of 10.216/16 that no host interface uses; removed by close()."""

    def __init__(self, n, tag):
        self.names, self.host_ifs, self.host_ips = [], [], []
        used = sh("ip", "-4", "addr").stdout
        octets = [o for o in range(1, 255) if f"10.216.{o}." not in used]
        try:
            for i in range(n):
                ns, hif, nif = f"pc-w{i}-{tag}", f"pc-h{i}-{tag}", f"pc-n{i}-{tag}"
                net = f"10.216.{octets[i]}"
                sh("ip", "netns", "add", ns)
                self.names.append(ns)
                sh("ip", "link", "add", hif, "type", "veth", "peer", "name", nif)
                self.host_ifs.append(hif)
                sh("ip", "link", "set", nif, "netns", ns)
                sh("ip", "addr", "add", f"{net}.1/30", "dev", hif)
                sh("ip", "link", "set", hif, "up")
                sh("ip", "-n", ns, "addr", "add", f"{net}.2/30", "dev", nif)
                sh("ip", "-n", ns, "link", "set", nif, "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                self.host_ips.append(f"{net}.1")
        except BaseException:
            self.close()
            raise

    def close(self):
        for hif in self.host_ifs:
            sh("ip", "link", "del", hif, check=False)
        for ns in self.names:
            sh("ip", "netns", "del", ns, check=False)


def class_bundles(work):
    """A bundle per class: /work a scratch bind (the I/O class's files, on a
    disk: O_DIRECT), /dev/shm a tmpfs (memory and network classes)."""
    scratch = os.path.join(work, "scratch")
    os.mkdir(scratch)
    out = {}
    for cls, script in CLASSES.items():
        d = os.path.join(work, "bundles", cls)
        os.makedirs(d)
        b = make_bundle(d, ["sh", "-c", script])
        path = os.path.join(b, "config.json")
        with open(path) as f:
            c = json.load(f)
        c["mounts"].append({"destination": "/work", "type": "bind", "source": scratch,
                            "options": ["rbind", "rw"]})
        c["mounts"].append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                            "options": ["nosuid", "nodev", "size=512m"]})
        with open(path, "w") as f:
            json.dump(c, f)
        out[cls] = b
    return out, scratch


class Run:
    """The cluster: etcd, a command node, three workers in namespaces."""

    def __init__(self, work, workers=3):
        self.work, self.procs, self.logs, self.workers = work, [], [], []
        self.ns = self.etcd = None
        self.em = find_emergence()
        self.prefix = f"/pc-{uuid.uuid4().hex[:8]}/"
        try:
            self._start(workers)
        except BaseException:
            self.close()
            raise

    def _start(self, workers):
        from emergence.cluster import bootstrap
        from emergence.place.state import Cluster
        work = self.work
        self.ns = Namespaces(workers, os.getpid() % 10000)
        d = os.path.join(work, "etcd")
        self.etcd, self.url, self.material = bootstrap.init(
            os.path.join(d, "cluster"), os.path.join(d, "data"), name="pc-admin",
            prefix=self.prefix, log=os.path.join(d, "log"), also_listen=self.ns.host_ips)
        self.cluster = Cluster(self.url, prefix=self.prefix, material=self.material)
        self.bundles, scratch = class_bundles(work)
        self.port = self.url.rsplit(":", 1)[1]
        self._join("pc-cmd", "command", self.url, ["--ack-timeout", "10"])
        policy = ["--allow-bundle", os.path.join(work, "bundles"), "--allow-bind", scratch,
                  "--cpu", "2", "--memory", "2g"]
        for i, ns in enumerate(self.ns.names):
            name = f"pc-w{i}"
            root = os.path.join(work, f"root-{i}")
            self._join(name, "worker", f"https://{self.ns.host_ips[i]}:{self.port}", policy,
                       before=["ip", "netns", "exec", ns], globals_=["--root", root])
            self.workers.append((name, root))
        deadline = time.monotonic() + 120
        while len(self.cluster.items("members")) < workers or \
                self.cluster.get("leader") is None:
            if time.monotonic() > deadline:
                raise SystemExit("the nodes did not come up in 120 s:\n" + self.tails())
            time.sleep(0.2)

    def tails(self):
        out = []
        for log in self.logs:
            with open(log) as f:
                out.append(f"--- {os.path.basename(log)}\n{f.read()[-1500:]}")
        return "\n".join(out)

    def _join(self, name, role, url, extra=(), before=(), globals_=()):
        from emergence.cluster import bootstrap
        b = bootstrap.issue(self.material.dir, name, [role])
        creds = bootstrap.install(os.path.join(self.work, f"node-{name}"), b)
        log = os.path.join(self.work, f"{name}.log")
        self.logs.append(log)
        self.procs.append(subprocess.Popen(
            list(before) + [self.em] + list(globals_) + [
                "cluster", "join", "--etcd", url, "--prefix", self.prefix, "--role", role,
                "--name", name, "--cluster-dir", creds.dir, "--lease-ttl", "5", *extra],
            stdout=subprocess.DEVNULL, stderr=open(log, "w")))

    def submit(self, tid, cls):
        from emergence.place import tasks
        tasks.submit(self.cluster, {"kind": "bundle", "bundle": self.bundles[cls],
                                    "id": tid, "timeout": 300, "demand": DEMAND[cls]})

    def wait(self, ids, timeout=600):
        deadline = time.monotonic() + timeout
        while True:
            results = self.cluster.items("results")
            if all(i in results for i in ids):
                return {i: results[i] for i in ids}
            if time.monotonic() > deadline:
                missing = [i for i in ids if i not in results]
                raise SystemExit(f"no result for {len(missing)} tasks ({missing[:3]}...) "
                                 f"in {timeout} s")
            time.sleep(0.2)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for _, root in self.workers:
            for cid in os.listdir(root) if os.path.isdir(root) else ():
                sh(self.em, "--root", root, "delete", "--force", cid, check=False)
        if self.etcd is not None:
            self.etcd.kill()
            self.etcd.wait()
        if self.ns is not None:
            self.ns.close()


def seconds(result, tid):
    if result.get("exit") != 0:
        raise SystemExit(f"task {tid} failed on {result.get('host')}: "
                         f"{(result.get('output') or '')[-300:]}")
    return float(result["seconds"])


def alone(run, reps=2):
    """Each class's run time alone: one task at a time on the idle cluster."""
    out = {}
    for cls in CLASSES:
        times = []
        for r in range(reps):
            tid = f"alone-{cls}-{r}"
            run.submit(tid, cls)
            times.append(seconds(run.wait([tid])[tid], tid))
        out[cls] = sum(times) / len(times)
        print(f"alone {cls:<7} {out[cls]:.2f} s (runs {', '.join(f'{t:.2f}' for t in times)})",
              flush=True)
    return out


def mixed(run, scheduler, sequence, gap, base, round_=0):
    """SEQUENCE submitted at GAP-second intervals (a fixed timetable, whatever
    a submission takes) under SCHEDULER; every task's (id, class, host, run
    time, slowdown)."""
    run.cluster.put(scheduler, "config", "scheduler")
    time.sleep(1.0)  # the leader's next pass reads it
    tag = SHORT[scheduler] + (f"{round_}" if round_ else "")
    ids = []
    t0 = time.monotonic()
    for i, cls in enumerate(sequence):
        time.sleep(max(0.0, t0 + i * gap - time.monotonic()))
        tid = f"{tag}-{i:02d}-{cls}"
        run.submit(tid, cls)
        ids.append(tid)
    results = run.wait(ids)
    makespan = max(r["finished"] for r in results.values()) - min(
        r["finished"] - r["seconds"] for r in results.values())
    rows = []
    for tid, cls in zip(ids, sequence):
        r = results[tid]
        s = seconds(r, tid)
        rows.append((tid, cls, r["host"], s, s / base[cls]))
    print(f"{tag}: {len(ids)} tasks submitted in {time.monotonic() - t0:.1f} s, "
          f"makespan {makespan:.1f} s", flush=True)
    return rows


def p(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=60, help="tasks per scheduler (mixed)")
    ap.add_argument("--gap", type=float, default=0.4, help="seconds between submissions")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (node logs)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="2: D_max, LeastAllocated, LeastAllocated, D_max (each run twice, "
                         "in an order that cancels a steady drift of the machine's load)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it runs containers and makes network namespaces")
    rng = random.Random(a.seed)
    sequence = [list(CLASSES)[i % len(CLASSES)] for i in range(a.tasks)]
    rng.shuffle(sequence)
    work = tempfile.mkdtemp(prefix="pc-", dir="/var/tmp")  # a disk: O_DIRECT works there
    run = None
    try:
        run = Run(work)
        base = alone(run)
        marks = run.cluster.items("unresponsive")
        if marks:
            print(f"note: marked unresponsive: {marks}", flush=True)
        order = list(SCHEDULERS)
        for r in range(1, a.rounds):
            order += list(reversed(SCHEDULERS)) if r % 2 else list(SCHEDULERS)
        rows = {s: [] for s in SCHEDULERS}
        for i, s in enumerate(order):
            rows[s] += mixed(run, s, sequence, a.gap, base, i // 2 if a.rounds > 1 else 0)
        print(f"\n{'task':<22} {'class':<7} {'host':<6} {'run s':>6} {'slowdown':>9}")
        for s in SCHEDULERS:
            for tid, cls, host, secs, slow in rows[s]:
                print(f"{tid:<22} {cls:<7} {host:<6} {secs:>6.2f} {slow:>8.2f}x")
        print("\nslowdown = run time / the class's run time alone (same run); noisy: the "
              "machine's cores are shared")
        means = {}
        for s in SCHEDULERS:
            sl = [r[4] for r in rows[s]]
            means[s] = sum(sl) / len(sl)
            per = {cls: sum(r[4] for r in rows[s] if r[1] == cls) /
                   max(1, sum(1 for r in rows[s] if r[1] == cls)) for cls in CLASSES}
            spread = {h: sum(1 for r in rows[s] if r[2] == h) for h, _ in run.workers}
            print(f"{SHORT[s]:<15} mean slowdown {means[s]:.3f}x  p90 {p(sl, 0.9):.3f}x  "
                  f"per class {', '.join(f'{c} {v:.2f}' for c, v in per.items())}  "
                  f"tasks per node {spread}")
        d, la = means[SCHEDULERS[0]], means[SCHEDULERS[1]]
        print(f"D_max / LeastAllocated mean slowdown: {d / la:.3f} "
              f"({'lower' if d < la else 'not lower'})")
    except BaseException:
        if run is not None:
            print(run.tails(), file=sys.stderr)
        raise
    finally:
        if run is not None:
            run.close()
        if a.keep:
            print(f"work dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
