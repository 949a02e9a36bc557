"""Distribute one image from a seed to 8 nodes, each in its own network
namespace behind a `tc` token bucket (a fixed per-node bandwidth, both
directions, so this measures the network, not memory copies):

  single   one node pulls from the seed alone                 (the yardstick)
  seed     8 nodes pull at once, all from the seed only
  swarm    8 nodes pull at once from the seed and each other (pieces of pulls in progress)

and the serving throughput of one node against busybox httpd (a plain
static file server) for the same blob with curl on loopback.

  python bench/share_distribute.py [--size MB] [--rate MBIT] [--nodes N]
                                   [--piece-mb MB] [--skip-seed] [--dir DIR]

Defaults: a 256 MB image (one random layer; small for the shared machine),
400 mbit/s per node, 8 nodes, the node's own piece size (1 MB at this size), stores on
tmpfs (/dev/shm: eight nodes on one machine share one disk, real ones do not;
--dir /var/tmp to see the disk).  The issue's figure is
`--size 1024 --rate 200 --skip-seed` (about 2 minutes; the all-from-the-seed
scenario alone takes 6 more at that size).
Everything lives under DIR/sh<pid>-bench and in namespaces named sh<pid>-*;
all is removed at the end.  The CPU line is the nodes' and pullers' CPU
seconds (not the seed's): on a small machine the swarm, which moves eight
times the bytes of one pull at once, can run out of CPU before network: at
400 mbit/s per node these 2 cores are the limit, at 200 they are not quite.
Each pull runs cold, in a process of its own (not in a planner worker), so
that its CPU is counted; the bridge of the simulated wire passes no frame
through netfilter (br_netfilter, loaded on container hosts, would add a
firewall pass per frame that a real wire does not have).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(os.path.dirname(HERE), "tests", "share"),
                os.path.join(os.path.dirname(HERE), "tests")]
TAG = f"sh{os.getpid() % 10000}"  # unique per run: the machine is shared
WORK = f"/dev/shm/{TAG}-bench"  # see --dir
BR = f"{TAG}-br"
PORT = 7480


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def ns(i):
    return f"{TAG}-{i}"


def ip_of(i):
    return f"10.231.0.{10 + i}"


def setup_network(n, rate):
    sh("ip", "netns", "add", BR)
    sh("ip", "-n", BR, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", BR, "link", "set", "br0", "up")
    for family in ("iptables", "ip6tables", "arptables"):  # a wire has no firewall on it: with
        # br_netfilter loaded (a container host) the bridge sends every frame through it
        sh("ip", "netns", "exec", BR, "sysctl", "-q", "-w",
           f"net.bridge.bridge-nf-call-{family}=0", check=False)
    for i in range(n + 1):
        sh("ip", "netns", "add", ns(i))
        sh("ip", "-n", BR, "link", "add", f"shb{i}", "type", "veth", "peer", "name", "eth0",
           "netns", ns(i))
        sh("ip", "-n", BR, "link", "set", f"shb{i}", "master", "br0", "up")
        sh("ip", "-n", ns(i), "addr", "add", f"{ip_of(i)}/24", "dev", "eth0")
        sh("ip", "-n", ns(i), "link", "set", "eth0", "up")
        sh("ip", "-n", ns(i), "link", "set", "lo", "up")
        for where, dev in ((ns(i), "eth0"), (BR, f"shb{i}")):  # upload, download
            sh("ip", "netns", "exec", where, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
               "rate", f"{rate}mbit", "burst", "256kb", "latency", "50ms")


def teardown_network(n):
    for i in range(n + 1):
        sh("ip", "netns", "del", ns(i), check=False)
    sh("ip", "netns", "del", BR, check=False)


def wait_port(host, port, netns=None):
    for _ in range(200):
        cmd = ["python3", "-c", f"import socket; socket.create_connection(('{host}', {port}), 1)"]
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        if subprocess.run(cmd, capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{host}:{port} did not come up")


PIECE_SIZE = None  # --piece-mb; None: the node's default
# Each pull runs in its own process (cold), not in a planner worker: its CPU is then
# its own (wait4), and no planner that another install of the same build started
# (the state root's on-demand planner is shared) runs our pulls.
COLD = {**os.environ, "EMERGENCE_PLANNER_SOCKET": "off"}


def start_node(i, store, state):
    cfg = json.dumps({"store": store, **({"piece_size": PIECE_SIZE} if PIECE_SIZE else {})})
    p = subprocess.Popen(["ip", "netns", "exec", ns(i), sys.executable, "-m",
                          "emergence.share.service", "--listen", f"{ip_of(i)}:{PORT}",
                          "--state", state, "--config", cfg],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(ip_of(i), PORT, ns(i))
    return p


def cpu_of(pid):
    """(user, sys) CPU seconds of a live process PID so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def stop(procs):
    """Kill PROCS; their (user, sys) CPU seconds, summed."""
    used = [0.0, 0.0]
    for p in procs:
        try:
            u, s = cpu_of(p.pid)
            used[0] += u
            used[1] += s
        except OSError:
            pass
        p.kill()
    for p in procs:
        p.wait()
    return used


def scenario(name, n, key, emergence, swarm):
    """Nodes 1..N pull at once; returns the time until the last one is done."""
    procs = []
    pulls = []
    cpu0 = sum(os.times()[2:4])
    try:
        for i in range(1, n + 1):
            d = f"{WORK}/run-{name}/n{i}"
            os.makedirs(d)
            procs.append(start_node(i, f"{d}/store", f"{d}/state"))
        t0 = time.monotonic()
        for i in range(1, n + 1):
            d = f"{WORK}/run-{name}/n{i}"
            peers = [f"http://{ip_of(0)}:{PORT}"]
            if swarm:
                peers += [f"http://{ip_of(j)}:{PORT}" for j in range(1, n + 1) if j != i]
            args = [emergence, "--store", f"{d}/store", "pull", "big:1", "--json", "--state",
                    f"{d}/state", "--config", "/dev/null", "--trusted-key", key]
            for p in peers:
                args += ["--peer", p]
            pulls.append(subprocess.Popen(["ip", "netns", "exec", ns(i)] + args,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, env=COLD))
        times, pulled = {}, [0.0, 0.0]
        while len(times) < len(pulls):  # each pull's own finishing time, and its CPU
            for k, p in enumerate(pulls):
                if k in times:
                    continue
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    times[k] = time.monotonic() - t0
                    p.returncode = os.waitstatus_to_exitcode(status)
                    pulled[0] += ru.ru_utime
                    pulled[1] += ru.ru_stime
            time.sleep(0.02)
        from_seed = 0
        for p in pulls:
            out, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"{name}: pull failed: {err.strip()[-3000:]}")
            from_seed += json.loads(out)["from"].get(f"http://{ip_of(0)}:{PORT}", 0)
    finally:
        served = stop(procs)
        cpu = sum(os.times()[2:4]) - cpu0  # the nodes' and pullers' CPU seconds
        shutil.rmtree(f"{WORK}/run-{name}", ignore_errors=True)
    print(f"  {name}: pullers' CPU user {pulled[0]:.1f} s sys {pulled[1]:.1f} s; "
          f"nodes' (serving) user {served[0]:.1f} s sys {served[1]:.1f} s")
    return max(times.values()), sorted(times.values()), from_seed, cpu


def curl_speed(url):
    p = sh("curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}", url)
    return float(p.stdout)


def serving_throughput(seed_store, layer, rounds=5):
    """MB/s curl gets from one node vs busybox httpd, same file, loopback."""
    from sharelib import Node, free_port
    node = Node(seed_store, f"{WORK}/serve-state")
    www = f"{WORK}/www"
    os.makedirs(www, exist_ok=True)
    os.link(os.path.join(seed_store, "blobs", "sha256", layer[7:]), f"{www}/blob")
    port = free_port()
    httpd = subprocess.Popen(["busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", www])
    try:
        socket.create_connection(("127.0.0.1", port), 2).close()
    except OSError:
        time.sleep(0.5)
    ours, plain = [], []
    try:
        for _ in range(rounds):  # interleaved
            ours.append(curl_speed(f"{node.url}/v2/big/blobs/{layer}"))
            plain.append(curl_speed(f"http://127.0.0.1:{port}/blob"))
    finally:
        node.stop()
        httpd.kill()
        httpd.wait()
    return max(ours) / 1e6, max(plain) / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256, help="image size, MB")
    ap.add_argument("--rate", type=int, default=400, help="per-node bandwidth, mbit/s")
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--piece-mb", type=int, default=0,
                    help="bytes per piece of the seed's piece list, MB (default: the node's, 4)")
    ap.add_argument("--skip-seed", action="store_true",
                    help="leave out the all-from-the-seed scenario (slow at large sizes)")
    ap.add_argument("--dir", default="/dev/shm", help="where the stores live (default "
                    "tmpfs: 8 nodes on one machine share one disk, real ones do not)")
    a = ap.parse_args()
    global WORK, PIECE_SIZE
    WORK = os.path.join(a.dir, f"{TAG}-bench")
    PIECE_SIZE = a.piece_mb << 20 or None
    from common import find_emergence
    from sharelib import random_image
    emergence = find_emergence()
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    seed_store = f"{WORK}/seed/store"
    try:
        _, layer = random_image(seed_store, "big:1", a.size << 20)
        mb_s, plain_mb_s = serving_throughput(seed_store, layer)
        print(f"serving one blob on loopback (curl, best of 5): node {mb_s:.0f} MB/s, "
              f"busybox httpd {plain_mb_s:.0f} MB/s, ratio {mb_s / plain_mb_s:.2f}")
        setup_network(a.nodes, a.rate)
        seed = start_node(0, seed_store, f"{WORK}/seed/state")
        try:
            key = json.loads(subprocess.run(
                ["ip", "netns", "exec", ns(0), "curl", "-s",
                 f"http://{ip_of(0)}:{PORT}/share/v1/info"], capture_output=True,
                text=True).stdout)["public_key"]
            t1, _, _, cpu = scenario("single", 1, key, emergence, swarm=False)
            print(f"{a.size} MB at {a.rate} mbit/s per node: one pull alone {t1:.1f} s "
                  f"(CPU {cpu:.1f} s)")
            if not a.skip_seed:
                t_seed, _, _, cpu = scenario("seed", a.nodes, key, emergence, swarm=False)
                print(f"{a.nodes} nodes at once from the seed only: {t_seed:.1f} s "
                      f"({t_seed / t1:.2f}x one pull; CPU {cpu:.1f} s)")
            t_swarm, times, sent, cpu = scenario("swarm", a.nodes, key, emergence, swarm=True)
            print(f"{a.nodes} nodes at once from the seed and each other: {t_swarm:.1f} s "
                  f"({t_swarm / t1:.2f}x one pull; goal <= 1.5x); per node: "
                  + " ".join(f"{t:.1f}" for t in times)
                  + f"; the seed uploaded {sent / (a.size << 20):.2f} copies; "
                  f"CPU {cpu:.1f} s of {os.cpu_count() * t_swarm:.0f} s on {os.cpu_count()} cores")
        finally:
            stop([seed])
    finally:
        teardown_network(a.nodes)
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
