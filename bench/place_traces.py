"""Record the workload traces bench/place_sim.py replays: real busybox
containers, one CPU-bound, one memory-bound, one I/O-bound and one
network-bound, run by `emergence run` and measured by Overwatch's collector
(cgroup CPU, working set, block I/O bytes; network bytes from the init's
netns) every 0.25 s.  Recorded once and kept as data
(bench/data/place_traces.json); run again to re-record on another machine.

Each class is run alone, then two at once on this host, so the file also
holds what contention costs here: the slowdown of two of a kind together,
which the simulator's interference model is checked against.

The network class sends to a sink in a network namespace this script makes
(a veth pair between two namespaces of its own), never the host's interfaces.

  python bench/place_traces.py [--seconds 4] [--out bench/data/place_traces.json]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from common import find_emergence, make_bundle  # noqa: E402

# what each class runs for WORK units; its time alone is the base run time
CLASSES = {
    "cpu": "i=0; while [ $i -lt {n} ]; do i=$((i+1)); done",
    "memory": "dd if=/dev/zero of=/dev/shm/m bs=1M count={mb} 2>/dev/null; "
              "i=0; while [ $i -lt {n4} ]; do cat /dev/shm/m >/dev/null; i=$((i+1)); done",
    # direct I/O: cgroup v1's blkio counts only what bypasses the page cache
    "io": "f=/work/$(cat /proc/sys/kernel/random/uuid); "
          "dd if=/dev/zero of=$f bs=4k count={io} oflag=direct 2>/dev/null; "
          "dd if=$f of=/dev/null bs=4k iflag=direct 2>/dev/null; rm $f",
    "net": "dd if=/dev/zero bs=64k count={net} 2>/dev/null | nc {sink} 5001",
}


SINK = """
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.213.7.2", 5001)); s.listen(16)
def drain(c):
    while c.recv(1 << 20):
        pass
while True:
    threading.Thread(target=drain, args=(s.accept()[0],), daemon=True).start()
"""


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


class Sink:
    """Two namespaces joined by a veth pair; `nc -l` in the far one."""

    def __init__(self, tag):
        self.a, self.b = f"pt-a{tag}", f"pt-b{tag}"
        sh("ip", "netns", "add", self.a)
        sh("ip", "netns", "add", self.b)
        sh("ip", "-n", self.a, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
           "netns", self.b)
        sh("ip", "-n", self.a, "addr", "add", "10.213.7.1/30", "dev", "v0")
        sh("ip", "-n", self.b, "addr", "add", "10.213.7.2/30", "dev", "v1")
        for ns, dev in ((self.a, "v0"), (self.b, "v1")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        self.procs = []

    def listen(self):
        """A sink on port 5001 that takes any number of senders and drops the bytes."""
        if self.procs:
            return
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", self.b, sys.executable,
                                            "-c", SINK]))
        time.sleep(0.5)

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        sh("ip", "netns", "del", self.a, check=False)
        sh("ip", "netns", "del", self.b, check=False)


def bundle_for(workdir, cls, script, scratch, netns):
    b = make_bundle(workdir, ["sh", "-c", script])
    path = os.path.join(b, "config.json")
    with open(path) as f:
        c = json.load(f)
    c["mounts"].append({"destination": "/work", "type": "bind", "source": scratch,
                        "options": ["rbind", "rw"]})
    c["mounts"].append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                        "options": ["nosuid", "nodev", "size=512m"]})
    if netns:
        for ns in c["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = f"/var/run/netns/{netns}"
    with open(path, "w") as f:
        json.dump(c, f)
    return b


def run_measured(em, root, runs):
    """Run [(cid, bundle)] at once; sample them until all end.  Returns
    {cid: {"seconds", "cpu", "memory", "io", "net"}} (cores, bytes, bytes/s)."""
    from emergence.overwatch.collector import Collector
    col = Collector(root)
    first, last, peak = {}, {}, {}
    procs = {cid: subprocess.Popen([em, "--root", root, "run", "--bundle", b, cid],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for cid, b in runs}
    t0 = time.monotonic()
    ends = {}

    def reap(cid, p):
        p.wait()
        ends[cid] = time.monotonic()
    for cid, p in procs.items():
        threading.Thread(target=reap, args=(cid, p), daemon=True).start()
    while len(ends) < len(procs):
        now = time.monotonic()
        for cid, sample in col.collect().items():
            v = {k: sum(x for _, x in vals) for k, vals in sample.values.items()}
            fig = (now, v.get("container_cpu_usage_seconds_total", 0.0),
                   v.get("container_fs_reads_bytes_total", 0.0)
                   + v.get("container_fs_writes_bytes_total", 0.0),
                   v.get("container_network_receive_bytes_total", 0.0)
                   + v.get("container_network_transmit_bytes_total", 0.0))
            first.setdefault(cid, fig)
            last[cid] = fig
            peak[cid] = max(peak.get(cid, 0.0),
                            v.get("container_memory_working_set_bytes", 0.0))
        time.sleep(0.25)
    col.close()
    out = {}
    for cid, p in procs.items():
        if p.returncode != 0:
            raise SystemExit(f"{cid} failed: {p.stderr.read().decode()[-300:]}")
        f, la = first.get(cid), last.get(cid)
        dt = (la[0] - f[0]) if f and la and la[0] > f[0] else 0.0
        rate = [(la[i] - f[i]) / dt if dt else 0.0 for i in range(4)]
        out[cid] = {"seconds": round(ends[cid] - t0, 3), "cpu": round(rate[1], 4),
                    "memory": peak.get(cid, 0.0), "io": round(rate[2]),
                    "net": round(rate[3])}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="about how long each runs")
    ap.add_argument("--out", default=os.path.join(HERE, "data", "place_traces.json"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it runs containers and makes network namespaces")
    em = find_emergence()
    work = tempfile.mkdtemp(prefix="pt-", dir="/var/tmp")  # a disk: O_DIRECT works there
    root = os.path.join(work, "state")
    sink = Sink(os.getpid() % 10000)
    try:
        scale = a.seconds / 4.0
        params = {"n": int(4_000_000 * scale), "mb": 256, "n4": int(160 * scale),
                  "io": int(40_000 * scale), "net": int(3000 * scale),
                  "sink": "10.213.7.2"}
        bundles = {}
        for cls, tmpl in CLASSES.items():
            scratch = os.path.join(work, f"scratch-{cls}")
            os.mkdir(scratch)
            d = os.path.join(work, cls)
            os.mkdir(d)
            bundles[cls] = bundle_for(d, cls, tmpl.format(**params), scratch,
                                      sink.a if cls == "net" else None)
        result = {"recorded": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                  "alone": {}, "pair": {}}
        for cls, b in bundles.items():
            sink.listen()
            result["alone"][cls] = run_measured(em, root, [(f"pt-{cls}", b)])[f"pt-{cls}"]
            print(f"alone {cls:<7} {result['alone'][cls]}", file=sys.stderr)
        for cls, b in bundles.items():
            two = run_measured(em, root, [(f"pt-{cls}1", b), (f"pt-{cls}2", b)])
            slow = sum(r["seconds"] for r in two.values()) / 2 / result["alone"][cls]["seconds"]
            result["pair"][cls] = round(slow, 3)
            print(f"pair  {cls:<7} slowdown x{slow:.2f}", file=sys.stderr)
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"traces: {a.out}")
    finally:
        sink.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
