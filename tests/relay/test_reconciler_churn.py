"""The node's reconciler under churn: `net apply` of a graph file rewritten in turn,
CNI ADD/DEL, and links deleted under it, all at once for a bounded time, in
network namespaces the test makes.  Afterwards the kernel equals the graph
and no record was lost: every attachment the graph holds is applied, on its
bridge, addressed inside its netns and leased once; nothing applied or in
the kernel is unknown to the graph."""

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest
from conftest import emergence_command

from .conftest import sh

pytestmark = pytest.mark.slow

EM = emergence_command()
CNI = os.path.join(os.path.dirname(sys.executable), "emergence-cni")
CHURN_SECONDS = 12


def graph_file(path, netns, files, with_blue):
    doc = {"networks": {"red": {"bridge": "rlred", "subnets": ["10.88.0.0/24"],
                                "veth_prefix": "rl"}},
           "attachments": [{"network": "red", "container": f"f{i}",
                            "netns": netns.path(files[i])} for i in range(len(files) - 1)
                           if with_blue or i % 2 == 0]}
    if with_blue:
        doc["networks"]["blue"] = {"bridge": "rlblue", "subnets": ["10.89.0.0/24"],
                                   "veth_prefix": "rl"}
        # in a netns of its own: two networks' default routes would replace each other
        doc["attachments"].append({"network": "blue", "container": "fb",
                                   "netns": netns.path(files[-1])})
    path.write_text(json.dumps(doc))
    return str(path)


class Node:
    """The relay Service on an event loop of its own thread, as the node hosts it."""

    def __init__(self, state, host):
        from emergence.relay.service import Service
        self.logs = []
        self.svc = Service({"host_netns": host, "resync_interval": 2.0}, state,
                           self.logs.append)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.svc.start())
        self.ready.set()
        self.loop.run_forever()

    def full_pass(self):
        """Ask for a full pass; wait for it; its number of changes."""
        before = self.svc.stats["resyncs"], self.svc.stats["changes"]
        self.loop.call_soon_threadsafe(self.svc._mark_full)
        end = time.monotonic() + 30
        while self.svc.stats["resyncs"] == before[0] and time.monotonic() < end:
            time.sleep(0.05)
        while self.svc._busy is not None and time.monotonic() < end:
            time.sleep(0.05)
        return self.svc.stats["changes"] - before[1]

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.svc.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_apply_cni_and_kernel_events_at_once_lose_nothing(tmp_path, netns, host):
    from emergence.relay.engine import Relay
    from emergence.relay.graph import Graph
    state = str(tmp_path / "state")
    files = [netns.new(f"f{i}") for i in range(4)] + [netns.new("fb")]
    pods = [netns.new(f"k{i}") for i in range(4)]
    # one graph file (its nodes are its own: ownership), rewritten in turn with
    # and without the blue network
    path = tmp_path / "net.json"
    with_blue = graph_file(path, netns, files, True)

    def net(*args):
        return subprocess.run(["ip", "netns", "exec", host] + EM + ["net", "--state", state]
                              + list(args), capture_output=True, text=True, timeout=60)
    assert net("apply", with_blue).returncode == 0
    conf = json.dumps({"cniVersion": "1.1.0", "name": "red", "type": "emergence-cni",
                       "network": "red", "stateDir": state})

    def cni(command, i):
        env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": f"k{i}",
               "CNI_NETNS": netns.path(pods[i]), "CNI_IFNAME": "eth0",
               "CNI_PATH": os.path.dirname(CNI), "EMERGENCE_PLANNER_SOCKET": "off"}
        return subprocess.run(["ip", "netns", "exec", host, CNI], input=conf,
                              capture_output=True, text=True, env=env, timeout=60)

    node = Node(state, host)
    stop = threading.Event()
    failures = []
    counts = {"apply": 0, "cni": 0, "deleted": 0}

    def applier():
        k = 0
        while not stop.is_set():
            graph_file(path, netns, files, not k % 2)
            p = net("apply", with_blue)
            if p.returncode != 0 and "exists" not in p.stderr:
                failures.append(("apply", p.stderr))
            k += 1
            counts["apply"] += 1

    added = set()

    def cnier():
        rnd = random.Random(1)
        while not stop.is_set():
            i = rnd.randrange(len(pods))
            command = "DEL" if i in added else "ADD"
            p = cni(command, i)
            if p.returncode != 0:
                failures.append(("cni " + command, p.stdout + p.stderr))
            elif command == "ADD":
                added.add(i)
            else:
                added.discard(i)
            counts["cni"] += 1

    def vandal():
        rnd = random.Random(2)
        while not stop.is_set():
            links = sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout
            names = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
            if names:
                sh("ip", "-n", host, "link", "del", rnd.choice(names), check=False)
                counts["deleted"] += 1
            if rnd.random() < 0.2:
                sh("ip", "-n", host, "addr", "flush", "dev", "rlred", check=False)
            time.sleep(rnd.uniform(0.05, 0.3))

    workers = [threading.Thread(target=f) for f in (applier, cnier, vandal)]
    try:
        for w in workers:
            w.start()
        time.sleep(CHURN_SECONDS)
        stop.set()
        for w in workers:
            w.join(120)
        assert not failures, failures[:3]
        assert min(counts.values()) >= 3, counts
        # the last word: the file with both networks, and the CNI's own attachments
        graph_file(path, netns, files, True)
        assert net("apply", with_blue).returncode == 0
        for _ in range(5):        # converged: a full pass finds nothing to do
            if node.full_pass() == 0:
                break
        assert node.full_pass() == 0, node.logs[-3:]
        assert node.svc.status()["failing"] == {}
    finally:
        stop.set()
        node.stop()

    r = Relay(state, host_netns=host)
    try:
        g, a = r.desired(), r.applied()
        want = {f"att:red/f{i}/eth0" for i in range(4)} | {"att:blue/fb/eth0"} \
            | {f"att:red/k{i}/eth0" for i in added}
        assert set(g.attachments) == want                       # no graph record lost
        assert set(a["attachments"]) == want                    # each one applied
        assert set(a["networks"]) == set(g.networks) == {"red", "blue"}
        for name in ("red", "blue"):                            # each leased once
            leases = {h["key"] for h in r.ipam.holders(name).values()}
            assert leases == {k for k in want if k.startswith(f"att:{name}/")}
        # the kernel: exactly the applied veths, each up on its bridge, addressed inside
        hosts = {rec["host"] for rec in a["attachments"].values()}
        veths = sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout
        have = {line.split(":")[1].strip().split("@")[0] for line in veths.splitlines()}
        assert have == hosts
        for key, att in g.attachments.items():
            rec = a["attachments"][key]
            link = sh("ip", "-n", host, "-o", "link", "show", rec["host"]).stdout
            assert f"master rl{att.network}" in link and "UP" in link, link
            inner = subprocess.run(["ip", "-n", os.path.basename(att.netns), "-o", "addr",
                                    "show", att.ifname], capture_output=True,
                                   text=True).stdout
            assert f"{att.addresses[0]}/24" in inner, (key, inner)
        for name, sub in (("red", "10.88.0.1/24"), ("blue", "10.89.0.1/24")):
            assert sub in sh("ip", "-n", host, "addr", "show", f"rl{name}").stdout
        r.apply(Graph())
    finally:
        r.close()


def test_a_failing_object_is_retried_with_backoff_and_holds_up_no_other(tmp_path, netns, host):
    """Two veths deleted at once; one cannot come back (its container's
    interface name is taken by a stranger): the other is repaired in the same
    pass, the failing one keeps its error and is retried at growing
    intervals, and comes back once the stranger is gone."""
    from emergence.relay.engine import Relay
    from emergence.relay.graph import Graph
    state = str(tmp_path / "state")
    a, b = netns.new("a"), netns.new("b")
    r = Relay(state, host_netns=host)
    r.apply(Graph.from_dict({"networks": {"red": {"bridge": "rlred", "subnets": ["10.88.0.0/24"],
                                                  "veth_prefix": "rl"}},
                             "attachments": [{"network": "red", "container": c,
                                              "netns": netns.path(c)} for c in (a, b)]}))
    hosts = {c: r.applied()["attachments"][f"att:red/{c}/eth0"]["host"] for c in (a, b)}
    r.close()
    node = Node(state, host)
    key = f"att:red/{a}/eth0"
    try:
        assert node.full_pass() == 0
        # a stranger takes a's interface name inside its netns, then both veths go
        sh("ip", "-n", a, "link", "set", "eth0", "down")
        sh("ip", "-n", a, "link", "set", "eth0", "name", "eth9")
        sh("ip", "-n", a, "link", "add", "eth0", "type", "bridge")
        subprocess.run(["ip", "-n", host, "-batch", "-"], text=True, check=True,
                       input=f"link del {hosts[a]}\nlink del {hosts[b]}\n")

        def until(pred, timeout=20):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if pred():
                    return True
                time.sleep(0.05)
            return False
        assert until(lambda: key in node.svc.status()["failing"])
        assert until(lambda: sh("ip", "-n", host, "link", "show", hosts[b],
                                check=False).returncode == 0)      # b is back
        assert "already exists" in node.svc.status()["failing"][key]["error"]
        time.sleep(4)   # retries at 0.5, 1, 2, 4 s: a few, not a hot loop
        attempts = node.svc.status()["failing"][key]["attempts"]
        assert 2 <= attempts <= 5, attempts
        sh("ip", "-n", a, "link", "del", "eth0")                   # the stranger leaves
        assert until(lambda: key not in node.svc.status()["failing"])
        assert "10.88.0." in sh("ip", "-n", a, "-4", "addr", "show", "eth0").stdout
        assert node.full_pass() == 0
    finally:
        node.stop()
    r = Relay(state, host_netns=host)
    r.apply(Graph())
    r.close()
