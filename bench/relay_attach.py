"""Relay: attach + detach of 100 containers, side by side in one run:
  relay in-process     Relay.attach/detach (in-process rtnetlink, no subprocess)
  emergence-cni        the CNI plugin, one exec per ADD/DEL: cold (opted out of any
                       planner), through a node, and with no node (the default
                       path: the first call starts the default root's planner on
                       demand, the next ones run warm in it)
  bridge + host-local  Debian's containernetworking-plugins, one exec per ADD/DEL
then the cost of one attachment change at 10, 100 and 1,000 attachments:
in-process (time, split into the kernel's answers to netlink requests and
Relay's own work; netlink operations, lookups, and bytes appended to Relay's
state), through the node, and cold (no node), with the bridge plugin's ADD
and DEL of one container on the same bridge at each size beside it (the
kernel's part of a change grows with a bridge's ports, for any plugin); and
last the ratios the issue sets goals for.

emergence-cni's DEL answers once the detach is committed (graph written,
address freed) and deletes the veth after (the kernel takes ~20 ms for that,
an RCU grace period); the bridge plugin's DEL returns after the deletion.

Everything happens in network namespaces this script makes (rl-bench-*);
the host's own interfaces and rules are never touched.  Run as root:
  python3 bench/relay_attach.py [--n 100] [--sizes 10,100,1000] [--rounds 15]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

CNI_DIR = "/usr/lib/cni"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def make_netns(names):
    for n in names:
        sh("ip", "netns", "add", n)


def drop_netns(names):
    for n in names:
        subprocess.run(["ip", "netns", "del", n], capture_output=True)


# s between two contenders' calls: a DEL that answered before its veth's
# deletion (~20 ms in the kernel, holding its lock) does not bill the next
# contender for it
PAUSE = 0.05
DEMAND_IDLE = "120"  # s: the on-demand planner outlives a build-up, and then goes


def cni_call(plugin, command, conf, cid, netns, path, planner="off"):
    """PLANNER: "off" (cold), a node's socket, or None (the default path)."""
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": path,
           "EMERGENCE_PLANNER_IDLE": DEMAND_IDLE}
    if planner is not None:
        env["EMERGENCE_PLANNER_SOCKET"] = planner
    p = subprocess.run([plugin], input=json.dumps(conf), capture_output=True, text=True,
                       env=env)
    if p.returncode != 0:
        raise SystemExit(f"{plugin} {command}: {p.stdout}{p.stderr}")


def timed(fn, items):
    """Each call's time, after a pause: the kernel finishes the work the last
    phase left it (veths' deletion, IPv6 DAD/MLD), so no phase pays another's."""
    time.sleep(3)
    out = []
    for it in items:
        t = time.perf_counter()
        fn(it)
        out.append(time.perf_counter() - t)
    return out


def ms(xs):
    return statistics.median(xs) * 1000


def written(relay):
    """Bytes appended to Relay's state (graph, applied, IPAM journals); 0 for
    a Relay without journals (an earlier version, benched for comparison)."""
    if not hasattr(relay, "_gj"):
        return 0
    return relay._gj.appended + relay._aj.appended + sum(
        j.appended for j in relay.ipam._journals.values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--rounds", type=int, default=15,
                    help="calls of each plugin per size, taking turns (medians)")
    args = ap.parse_args()
    from emergence.relay.engine import Relay
    from emergence.relay.graph import Network
    from emergence.relay.kernel import _setns

    tmp = tempfile.mkdtemp(prefix="rl-bench-")
    host = "rl-bench-h"
    # one set of containers per contender, so they can take turns
    sets = {who: [f"rl-bench-{who}{i}" for i in range(args.n)] for who in "rwbd"}
    made = [host] + [c for cs in sets.values() for c in cs]
    make_netns(made)
    # a node whose warm planner serves emergence-cni (the worker enters the caller's netns)
    em = os.path.join(os.path.dirname(sys.executable), "emergence")
    node = ["--node-run-dir", os.path.join(tmp, "node"), "--node-state-dir",
            os.path.join(tmp, "nodest"), "--node-services", ""]
    subprocess.run([em, "node", "start", *node], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, EMERGENCE_PLANNER_SOCKET="off"))
    planner = os.path.join(tmp, "node", "planner.sock")
    # this process (and the plugins it execs) now plays the host
    _setns(f"/var/run/netns/{host}")
    emergence_cni = os.path.join(os.path.dirname(sys.executable), "emergence-cni")
    path = f"{os.path.dirname(emergence_cni)}:{CNI_DIR}"
    if os.path.exists("/run/emergence/node/planner.sock"):
        print("note: a node is up on this host: the no-node rows use its planner")
    try:
        results = {}
        # -- emergence-cni without a node (the cold path), on its own
        cold = {"cniVersion": "1.1.0", "name": "rlbc", "type": "emergence-cni",
                "bridge": "rlbc0", "subnets": ["10.95.0.0/22"], "veth_prefix": "rl",
                "stateDir": os.path.join(tmp, "cni")}
        add = timed(lambda c: cni_call(emergence_cni, "ADD", cold, c, f"/var/run/netns/{c}",
                                       path), sets["r"])
        dele = timed(lambda c: cni_call(emergence_cni, "DEL", cold, c, f"/var/run/netns/{c}",
                                        path), sets["r"])
        rr = Relay(os.path.join(tmp, "cni"))
        rr.remove_network("rlbc")
        rr.close()
        results["emergence-cni (cold)"] = (add, dele)
        # -- the three that matter take turns, container by container, so a
        # burst of load on this shared machine hits them alike
        r = Relay(os.path.join(tmp, "inproc"))
        r.create_network(Network("rlbi", "rlbi0", ["10.94.0.0/22"], veth_prefix="rl"))
        warm = dict(cold, name="rlbw", bridge="rlbw0", subnets=["10.93.0.0/22"])
        nonode = dict(cold, name="rlbd", bridge="rlbd0", subnets=["10.92.0.0/22"])
        # the default path's first call runs cold and starts the planner
        cni_call(emergence_cni, "DEL", nonode, "none", "/var/run/netns/none", path, None)
        conf = {"cniVersion": "1.0.0", "name": "rlbb", "type": "bridge", "bridge": "rlbb0",
                "isGateway": True, "ipMasq": False,
                "ipam": {"type": "host-local", "subnet": "10.96.0.0/22",
                         "dataDir": os.path.join(tmp, "host-local")}}
        bridge = os.path.join(CNI_DIR, "bridge")
        contenders = {
            "relay in-process": ("r", lambda c: r.attach("rlbi", c, f"/var/run/netns/{c}"),
                                 lambda c: r.detach("rlbi", c)),
            "emergence-cni (node up)": (
                "w", lambda c: cni_call(emergence_cni, "ADD", warm, c, f"/var/run/netns/{c}",
                                        path, planner),
                lambda c: cni_call(emergence_cni, "DEL", warm, c, f"/var/run/netns/{c}", path,
                                   planner)),
            "emergence-cni (no node)": (
                "d", lambda c: cni_call(emergence_cni, "ADD", nonode, c, f"/var/run/netns/{c}",
                                        path, None),
                lambda c: cni_call(emergence_cni, "DEL", nonode, c, f"/var/run/netns/{c}", path,
                                   None)),
            "bridge + host-local": (
                "b", lambda c: cni_call(bridge, "ADD", conf, c, f"/var/run/netns/{c}", CNI_DIR),
                lambda c: cni_call(bridge, "DEL", conf, c, f"/var/run/netns/{c}", CNI_DIR)),
        }
        times = {name: ([], []) for name in contenders}
        for phase in (0, 1):            # all attaches, then all detaches
            time.sleep(3)
            for i in range(args.n):
                for name, (who, *calls) in contenders.items():
                    t = time.perf_counter()
                    calls[phase](sets[who][i])
                    times[name][phase].append(time.perf_counter() - t)
                    time.sleep(PAUSE)
        r.remove_network("rlbi")
        r.close()
        rr = Relay(os.path.join(tmp, "cni"))
        rr.remove_network("rlbw")
        rr.remove_network("rlbd")
        rr.close()
        subprocess.run(["ip", "link", "del", "rlbb0"], capture_output=True)
        results.update(times)

        base = statistics.median(results["bridge + host-local"][0]) + \
            statistics.median(results["bridge + host-local"][1])
        print(f"attach + detach of {args.n} containers (median per call; the last four take "
              "turns; machine shared, numbers are noisy; emergence-cni's DEL answers before "
              "the veth's deletion)")
        print(f"  {'':22} {'attach ms':>10} {'detach ms':>10} {'total s':>8} {'vs bridge':>10}")
        for name, (a, d) in results.items():
            per = statistics.median(a) + statistics.median(d)
            print(f"  {name:22} {ms(a):10.2f} {ms(d):10.2f} {sum(a) + sum(d):8.2f} "
                  f"{base / per:9.2f}x")
        ref_add, ref_del = (statistics.median(x) for x in results["bridge + host-local"])
        cold_add, cold_del = (statistics.median(x) for x in results["emergence-cni (cold)"])
        dem_add, dem_del = (statistics.median(x) for x in results["emergence-cni (no node)"])
        summary = [("no node (default path) ADD / reference ADD (goal <= 1.0)", dem_add / ref_add),
                   ("no node (default path) DEL / reference DEL (goal <= 1.0)", dem_del / ref_del),
                   ("  opted out (cold) ADD / reference ADD", cold_add / ref_add),
                   ("  opted out (cold) DEL / reference DEL", cold_del / ref_del)]

        # -- one attachment change at growing sizes
        print("\none-attachment change (attach + detach of one more container) on a network "
              "holding N attachments;")
        print("after each build-up the kernel is given a few seconds to finish its own work "
              "for the new interfaces (IPv6 DAD, MLD) before timing")
        print("(in-process: Relay's attach = the kernel answering netlink requests + Relay's "
              "own work; node: emergence-cni through the node's planner; no node: the default "
              "path (the planner started on demand); cold: opted out of any planner; "
              "bridge: the CNI bridge + host-local plugins' ADD and DEL of one "
              "container on the same bridge -- the kernel's share grows with a bridge's ports, "
              "for any plugin)")
        print(f"  {'N':>5} {'attach':>7} {'kernel':>7} {'own':>6} {'detach':>7} {'ops':>4} "
              f"{'looks':>5} {'bytes':>6} {'node ADD/DEL':>13} {'cold ADD/DEL':>13} "
              f"{'no-node ADD/DEL':>15} {'bridge ADD/DEL':>15} {'node vs bridge':>15} "
              f"{'cold vs bridge ADD, DEL':>24} {'no-node vs bridge':>18}")
        # the time the kernel takes to answer each netlink request, to tell
        # Relay's own cost from the kernel's (which grows with a bridge's ports)
        from emergence.relay import kernel as kmod
        in_kernel = [0.0]
        plain = kmod.Rtnl.exchange

        def timed_request(self, *a, **kw):
            t = time.perf_counter()
            try:
                return plain(self, *a, **kw)
            finally:
                in_kernel[0] += time.perf_counter() - t
        kmod.Rtnl.exchange = timed_request
        scale_state = os.path.join(tmp, "scale")
        r = Relay(scale_state)
        r.create_network(Network("rlbs", "rlbs0", ["10.80.0.0/16"], veth_prefix="rl"))
        have = []
        extra = [f"rl-bench-x{i}" for i in range(args.rounds)]
        # the peer on the same bridge at each size: the bridge plugin's own
        # one-container change shows what the kernel's growth costs anyone
        peer = [f"rl-bench-y{i}" for i in range(args.rounds)]
        via_node = [f"rl-bench-n{i}" for i in range(args.rounds)]
        via_cold = [f"rl-bench-c{i}" for i in range(args.rounds)]
        via_demand = [f"rl-bench-o{i}" for i in range(args.rounds)]
        make_netns(extra + peer + via_node + via_cold + via_demand)
        made += extra + peer + via_node + via_cold + via_demand
        on_rlbs = {"cniVersion": "1.0.0", "name": "rlbp", "type": "bridge", "bridge": "rlbs0",
                   "isGateway": False, "ipMasq": False,
                   "ipam": {"type": "host-local", "subnet": "10.80.0.0/16",
                            "rangeStart": "10.80.250.1", "rangeEnd": "10.80.250.250",
                            "dataDir": os.path.join(tmp, "host-local-scale")}}
        ours = {"cniVersion": "1.1.0", "name": "rlbs", "type": "emergence-cni",
                "network": "rlbs", "stateDir": scale_state}
        rows = {}
        for size in [int(s) for s in args.sizes.split(",")]:
            more = [f"rl-bench-s{i}" for i in range(len(have), size)]
            make_netns(more)
            made += more
            for c in more:
                r.attach("rlbs", c, f"/var/run/netns/{c}")
            have += more
            time.sleep(min(10, 1 + len(more) / 100))
            # the node's workers learn this state directory from a first call
            cni_call(emergence_cni, "ADD", ours, via_node[0], f"/var/run/netns/{via_node[0]}",
                     path, planner)
            cni_call(emergence_cni, "DEL", ours, via_node[0], f"/var/run/netns/{via_node[0]}",
                     path, planner)
            # and the planner on demand (started again, had it gone idle)
            for cmd in ("ADD", "DEL"):
                cni_call(emergence_cni, cmd, ours, via_demand[0],
                         f"/var/run/netns/{via_demand[0]}", path, None)
            a, ak, d, ops, looks, wrote = [], [], [], [], [], []
            for x in extra:
                r.kernel.ops.clear()
                r.kernel.lookups = 0
                w0 = written(r)
                in_kernel[0] = 0.0
                t = time.perf_counter()
                r.attach("rlbs", x, f"/var/run/netns/{x}")
                a.append(time.perf_counter() - t)
                ak.append(in_kernel[0])
                t = time.perf_counter()
                r.detach("rlbs", x)
                d.append(time.perf_counter() - t)
                ops.append(len(r.kernel.ops))
                looks.append(r.kernel.lookups)
                wrote.append(written(r) - w0)
            # the three plugins take turns, container by container (a burst of
            # load on this shared machine hits them alike, and no call waits
            # for the veth deletion its predecessor left to the kernel); each
            # round adds one container per plugin and removes it again, as a
            # bridge takes at most 1,024 ports
            runs = {"node": (via_node, lambda cmd, c: cni_call(
                        emergence_cni, cmd, ours, c, f"/var/run/netns/{c}", path, planner)),
                    "cold": (via_cold, lambda cmd, c: cni_call(
                        emergence_cni, cmd, ours, c, f"/var/run/netns/{c}", path)),
                    "no node": (via_demand, lambda cmd, c: cni_call(
                        emergence_cni, cmd, ours, c, f"/var/run/netns/{c}", path, None)),
                    "bridge": (peer, lambda cmd, c: cni_call(
                        bridge, cmd, on_rlbs, c, f"/var/run/netns/{c}", CNI_DIR))}
            took = {(who, cmd): [] for who in runs for cmd in ("ADD", "DEL")}
            time.sleep(3)
            for i in range(len(peer)):
                for cmd in ("ADD", "DEL"):
                    for who, (names, fn) in runs.items():
                        t = time.perf_counter()
                        fn(cmd, names[i])
                        took[who, cmd].append(time.perf_counter() - t)
                        time.sleep(PAUSE)
                    time.sleep(0.5)
            na, nd = took["node", "ADD"], took["node", "DEL"]
            ca, cd = took["cold", "ADD"], took["cold", "DEL"]
            pa, pd = took["bridge", "ADD"], took["bridge", "DEL"]
            oa, od = took["no node", "ADD"], took["no node", "DEL"]
            own = [x - y for x, y in zip(a, ak)]
            rows[size] = {"attach": ms(a), "own": ms(own), "node": ms(na) + ms(nd),
                          "node_add": ms(na), "bridge": ms(pa) + ms(pd),
                          "cold_add": ms(ca) / ms(pa), "cold_del": ms(cd) / ms(pd),
                          "dem_add": ms(oa) / ms(pa), "dem_del": ms(od) / ms(pd),
                          "bridge_add": ms(pa)}
            print(f"  {size:5d} {ms(a):7.2f} {ms(ak):7.2f} {ms(own):6.2f} {ms(d):7.2f} "
                  f"{max(ops):4d} {max(looks):5d} {max(wrote):6} "
                  f"{ms(na):6.2f}/{ms(nd):<6.2f} {ms(ca):6.2f}/{ms(cd):<6.2f} "
                  f"{ms(oa):7.2f}/{ms(od):<7.2f} "
                  f"{ms(pa):7.2f}/{ms(pd):<7.2f} "
                  f"{rows[size]['bridge'] / rows[size]['node']:14.2f}x "
                  f"{rows[size]['cold_add']:11.2f}x, {rows[size]['cold_del']:.2f}x "
                  f"{rows[size]['dem_add']:8.2f}x, {rows[size]['dem_del']:.2f}x")
        r.remove_network("rlbs", force=True)   # its containers are still attached
        r.close()
        kmod.Rtnl.exchange = plain

        lo, hi = min(rows), max(rows)
        summary += [
            (f"in-process attach at {hi} / at {lo} (goal <= 1.2)",
             rows[hi]["attach"] / rows[lo]["attach"]),
            (f"  Relay's own part of it at {hi} / at {lo}", rows[hi]["own"] / rows[lo]["own"]),
            (f"node ADD at {hi} / at {lo} (goal <= 1.2)",
             rows[hi]["node_add"] / rows[lo]["node_add"]),
            (f"bridge plugin ADD+DEL at {hi} / at {lo} (the kernel's growth, for comparison)",
             rows[hi]["bridge"] / rows[lo]["bridge"]),
            (f"bridge plugin ADD at {hi} / at {lo} (beside node ADD's)",
             rows[hi]["bridge_add"] / rows[lo]["bridge_add"]),
            ("node vs reference, slowest size (goal >= 4.0)",
             min(v["bridge"] / v["node"] for v in rows.values())),
            ("no node (default path) ADD vs reference, worst size (goal <= 1.0)",
             max(v["dem_add"] for v in rows.values())),
            ("no node (default path) DEL vs reference, worst size (goal <= 1.0)",
             max(v["dem_del"] for v in rows.values())),
            ("  opted out (cold) ADD vs reference, worst size",
             max(v["cold_add"] for v in rows.values())),
            ("  opted out (cold) DEL vs reference, worst size",
             max(v["cold_del"] for v in rows.values()))]
        print("\nratios (one run; the machine is shared, so they are noisy)")
        for what, v in summary:
            print(f"  {what:78} {v:6.2f}")
    finally:
        subprocess.run([em, "node", "stop", *node], stdout=subprocess.DEVNULL,
                       env=dict(os.environ, EMERGENCE_PLANNER_SOCKET="off"))
        drop_netns(made)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
