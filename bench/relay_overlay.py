"""Relay across hosts, side by side in one run:
  throughput   iperf3 between containers on two simulated hosts over
               Emergence's VXLAN (leased subnets, `emergence net agent`)
               against the same layout made by hand with `ip link`/`bridge`
               (a VXLAN device, a bridge, one FDB entry, neighbour and route)
  convergence  a node joining a cluster of N-1: from its agent's start, and
               from its lease, until every peer holds its entries
  kernel ops   per join on each existing node, at two cluster sizes
               (constant: FDB, neighbour, route = 3)

Hosts are network namespaces on a bridge in another namespace (the underlay,
MTU 1500); the script's own namespace reaches it through one veth it makes,
for etcd (a TLS etcd with RBAC as `cluster init` makes it).  Everything it
makes it removes; the host's own interfaces and rules are never touched.
The machine may be shared: figures are noisy, ratios in one run are what
to read.  Run as root:
  python3 bench/relay_overlay.py [--nodes 10] [--seconds 5]
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

NET = "bench"


def sh(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode:
        raise SystemExit(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


def nsx(ns, *cmd, check=True):
    return sh("ip", "netns", "exec", ns, *cmd, check=check)


def emergence():
    here = os.path.join(os.path.dirname(sys.executable), "emergence")
    return [here] if os.path.exists(here) else [sys.executable, "-m", "emergence"]


def wait_for(pred, timeout=30.0, step=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


class Lab:
    def __init__(self, tmp):
        self.tmp, self.tag = tmp, uuid.uuid4().hex[:5]
        self.ns, self.procs, self.hosts = [], [], {}
        used = sh("ip", "-4", "addr").stdout
        for _ in range(50):
            self.net = f"10.217.{random.randrange(1, 255)}"
            if f"{self.net}." not in used:
                break
        self.under = self.new_ns("u")
        nsx(self.under, "ip", "link", "add", "br0", "type", "bridge")
        nsx(self.under, "ip", "link", "set", "br0", "up")
        self.host_if = f"rlb{self.tag}"
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "tst", "netns",
           self.under)
        sh("ip", "addr", "add", f"{self.net}.254/24", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        nsx(self.under, "ip", "link", "set", "tst", "master", "br0", "up")
        from emergence.cluster import bootstrap
        d = os.path.join(tmp, "etcd")
        self.prefix = f"/bench-{self.tag}/"
        self.etcd, url, self.material = bootstrap.init(
            os.path.join(d, "cluster"), os.path.join(d, "data"), name="bench-admin",
            prefix=self.prefix, log=os.path.join(d, "log"), also_listen=[f"{self.net}.254"])
        self.url = url.replace("127.0.0.1", f"{self.net}.254")

    def new_ns(self, role):
        name = f"rl-b{role}-{self.tag}"
        sh("ip", "netns", "add", name)
        self.ns.append(name)
        nsx(name, "ip", "link", "set", "lo", "up")
        return name

    def host(self, i):
        ns = self.new_ns(f"h{i}")
        sh("ip", "-n", self.under, "link", "add", f"p{i}", "type", "veth", "peer", "name",
           "eth0", "netns", ns)
        nsx(self.under, "ip", "link", "set", f"p{i}", "master", "br0", "up")
        nsx(ns, "ip", "link", "set", "eth0", "up")
        nsx(ns, "ip", "addr", "add", f"{self.net}.{i}/24", "dev", "eth0")
        self.hosts[i] = {"ns": ns, "vtep": f"{self.net}.{i}",
                         "state": os.path.join(self.tmp, f"state-{i}")}
        return ns

    def cli(self, *args):
        return sh(*emergence(), "net", *args, "--etcd", self.url, "--prefix", self.prefix,
                  "--cluster-dir", self.material.dir)

    def agent(self, i):
        from emergence.cluster import bootstrap
        h = self.hosts[i]
        creds = bootstrap.install(os.path.join(self.tmp, f"node-{i}"),
                                  bootstrap.issue(self.material.dir, f"n{i}", ["worker"]))
        log = open(os.path.join(self.tmp, f"agent-{i}.log"), "w")
        t0 = time.monotonic()
        p = subprocess.Popen(["ip", "netns", "exec", h["ns"]] + emergence() + [
            "net", "agent", NET, "--cluster", "--etcd", self.url, "--prefix", self.prefix,
            "--cluster-dir", creds.dir, "--vtep", h["vtep"], "--state", h["state"],
            "--lease-ttl", "5"], stdout=log, stderr=log)
        self.procs.append(p)
        h["proc"] = p
        return t0

    def status(self, i):
        try:
            with open(os.path.join(self.hosts[i]["state"], f"overlay-{NET}.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def container(self, i, name):
        ns = self.new_ns(f"c{name}")
        r = nsx(self.hosts[i]["ns"], *emergence(), "net", "attach", NET, name,
                f"/var/run/netns/{ns}", "--state", self.hosts[i]["state"])
        return ns, r.stdout.split()[0].split("/")[0]

    def remove(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
        for ns in self.ns:
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", self.host_if, check=False)
        self.etcd.send_signal(signal.SIGKILL)
        self.etcd.wait()


def iperf(client_ns, server_ns, addr, seconds):
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            r = nsx(client_ns, "iperf3", "-c", addr, "-t", str(seconds), "-J", check=False)
            try:
                return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
            except (ValueError, KeyError):
                time.sleep(0.2)     # the server not listening yet: try again
        raise SystemExit(f"iperf3 to {addr}: {r.stdout[-300:]} {r.stderr[-300:]}")
    finally:
        srv.kill()
        srv.wait()


def by_hand(lab, a, b, subnet_a, subnet_b, mtu):
    """The same layout as the agent's, made with ip/bridge on hosts A and B
    (VNI 99, port 4790): returns the two containers' (netns, address)."""
    out = []
    for me, peer, mine, theirs in ((a, b, subnet_a, subnet_b), (b, a, subnet_b, subnet_a)):
        ns, pns = lab.hosts[me]["ns"], lab.hosts[peer]["ns"]
        mac = f"02:00:00:00:99:{me:02x}"
        pmac = f"02:00:00:00:99:{peer:02x}"
        nsx(ns, "ip", "link", "add", "vxh", "address", mac, "mtu", str(mtu), "type", "vxlan",
            "id", "99", "local", lab.hosts[me]["vtep"], "dstport", "4790", "dev", "eth0",
            "nolearning")
        nsx(ns, "ip", "addr", "add", f"{mine}.0/32", "dev", "vxh")
        nsx(ns, "ip", "link", "set", "vxh", "up")
        nsx(ns, "bridge", "fdb", "append", pmac, "dev", "vxh", "dst", lab.hosts[peer]["vtep"])
        nsx(ns, "ip", "neigh", "replace", f"{theirs}.0", "lladdr", pmac, "dev", "vxh",
            "nud", "permanent")
        nsx(ns, "ip", "route", "replace", f"{theirs}.0/24", "via", f"{theirs}.0", "dev", "vxh",
            "onlink")
        nsx(ns, "ip", "link", "add", "brh", "mtu", str(mtu), "type", "bridge")
        nsx(ns, "ip", "addr", "add", f"{mine}.1/24", "dev", "brh")
        nsx(ns, "ip", "link", "set", "brh", "up")
        nsx(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        c = lab.new_ns(f"x{me}")
        nsx(ns, "ip", "link", "add", "vh", "mtu", str(mtu), "type", "veth", "peer", "name",
            "eth0", "netns", c)
        nsx(ns, "ip", "link", "set", "vh", "master", "brh", "up")
        nsx(c, "ip", "addr", "add", f"{mine}.2/24", "dev", "eth0")
        nsx(c, "ip", "link", "set", "eth0", "up")
        nsx(c, "ip", "route", "add", "default", "via", f"{mine}.1")
        out.append((c, f"{mine}.2"))
        del pns
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("iperf3"):
        raise SystemExit("run as root with iperf3 installed (apt-get install iperf3)")
    tmp = tempfile.mkdtemp(prefix="rl-bench-ov-")
    lab = Lab(tmp)
    try:
        lab.cli("create", NET, "--cluster", "--subnet", "10.219.0.0/16", "--node-prefix", "24",
                "--grace", "30")
        n = args.nodes
        for i in range(1, n + 1):
            lab.host(i)
        ops_at = {}
        half = max(2, n // 2)
        for i in range(1, n):
            if i == half:
                # a join at half size: kernel ops on each existing node
                assert wait_for(lambda i=i: all(len(lab.status(j)["peers"]) == i - 2
                                                for j in range(1, i)), 60)
                before = {j: lab.status(j)["kernel_ops"] for j in range(1, i)}
            lab.agent(i)
            assert wait_for(lambda i=i: lab.status(i) is not None, 60), f"agent {i} did not start"
            if i == half:
                assert wait_for(lambda i=i: all(len(lab.status(j)["peers"]) == i - 1
                                                for j in range(1, i + 1)), 60)
                ops_at[i] = [lab.status(j)["kernel_ops"] - before[j] for j in range(1, i)]
        assert wait_for(lambda: all(len(lab.status(j)["peers"]) == n - 2
                                    for j in range(1, n)), 60), "the cluster did not converge"
        # the join measured: node N into N-1
        before = {j: lab.status(j)["kernel_ops"] for j in range(1, n)}
        t0 = time.monotonic()
        lab.agent(n)
        assert wait_for(lambda: lab.status(n) is not None, 60)
        t_lease = time.monotonic()
        name = f"n{n}"
        assert wait_for(lambda: all(name in lab.status(j)["peers"] for j in range(1, n)), 60)
        t_all = time.monotonic()
        leased_at = lab.status(n)["leased_at"]
        converged = max(lab.status(j)["updated"] for j in range(1, n)) - leased_at
        ops_at[n] = [lab.status(j)["kernel_ops"] - before[j] for j in range(1, n)]
        # ... and reached: a container on node 1 pings one on node N
        ca, a_ip = lab.container(1, "ca")
        cn, n_ip = lab.container(n, "cn")
        reach = nsx(ca, "ping", "-c", "1", "-W", "2", n_ip, check=False).returncode == 0

        # throughput: containers on nodes 1 and 2, ours against by hand
        cb, b_ip = lab.container(2, "cb")
        mtu = lab.status(1)["mtu"]
        ours = iperf(ca, cb, b_ip, args.seconds)
        (ha, _), (hb, hb_ip) = by_hand(lab, 1, 2, "10.230.1", "10.230.2", mtu)
        hand = iperf(ha, hb, hb_ip, args.seconds)
        ours2 = iperf(ca, cb, b_ip, args.seconds)
        hand2 = iperf(ha, hb, hb_ip, args.seconds)
        ours, hand = (ours + ours2) / 2, (hand + hand2) / 2
    finally:
        lab.remove()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"throughput (iperf3 TCP, {args.seconds} s x 2, MTU {mtu}, noisy shared machine):")
    print(f"  emergence VXLAN       {ours:9.0f} Mbit/s")
    print(f"  VXLAN made by hand    {hand:9.0f} Mbit/s")
    print(f"  ratio emergence/hand  {ours / hand:9.2f}   (goal >= 0.95)")
    print(f"join of node {n} into {n - 1} nodes:")
    print(f"  agent start -> every peer holds it   {t_all - t0:6.3f} s")
    print(f"  its lease in etcd -> every peer holds it (FDB, neighbour, route)"
          f"   {converged:6.3f} s   (goal <= 1 s)")
    print(f"  agent start -> lease taken, device up {t_lease - t0:6.3f} s (process start, imports)")
    print(f"  a container on node 1 reaches one on node {n}: {'yes' if reach else 'NO'}")
    print("kernel ops per join on each existing node (goal: constant, 3):")
    for size, ops in sorted(ops_at.items()):
        print(f"  join at {size:2} nodes: min {min(ops)} max {max(ops)} "
              f"({len(ops)} existing nodes)")
    ratio = ops_at[n] and max(ops_at[n]) / 3
    print(f"  ratio max ops / 3 at {n} nodes: {ratio:.2f}")


if __name__ == "__main__":
    main()
