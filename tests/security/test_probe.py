"""The Overwatch probe route, attacked: POST /overwatch/v1/probe on a real node
over real containers. The route takes ids of containers the node runs (or
their att:NETWORK/ID/IFNAME keys) and nothing else: a netns path, a pid, a
created container's exec.fifo or a FIFO nobody writes is refused (400) without
being opened; an unknown id is a 404; the probe series stay bounded; one
probe runs at a time. The legitimate probe between two containers works in
the same file."""

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import emergence_command
from prometheus_client.parser import text_string_to_metric_families

TAG = f"{os.getpid() % 100000}"
NS = (f"owpa{TAG}", f"owpb{TAG}")
NET = "10.214.7"  # owpa has .1, owpb has .2


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def two_netns():
    """Two netns made for the test, joined by a veth pair (NET.1 and NET.2)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for ns in NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
    try:
        ip("link", "add", f"pa{TAG}", "netns", NS[0], "type", "veth",
           "peer", "name", f"pb{TAG}", "netns", NS[1])
        ip("-n", NS[0], "addr", "add", f"{NET}.1/24", "dev", f"pa{TAG}")
        ip("-n", NS[1], "addr", "add", f"{NET}.2/24", "dev", f"pb{TAG}")
        ip("-n", NS[0], "link", "set", f"pa{TAG}", "up")
        ip("-n", NS[1], "link", "set", f"pb{TAG}", "up")
        yield NS
    finally:
        for ns in NS:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def in_ns(ns):
    """A config edit: the container joins netns NS (made by the test)."""
    def edit(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                    if n["type"] != "network"]
        c["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{ns}"})
    return edit


class ProbeNode:
    """`emergence node` serving overwatch over the test's state root, on loopback."""

    def __init__(self, tmp_path, root, *extra):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.state_dir = str(tmp_path / "node-state")
        self.flags = ["--node-run-dir", str(tmp_path / "node-run"),
                      "--node-state-dir", self.state_dir]
        self.extra = ["--node-services", "overwatch", "--node-listen",
                      f"127.0.0.1:{self.port}", "--overwatch-root", root,
                      "--overwatch-probe-annotation", "", *extra]

    def start(self):
        p = subprocess.run(emergence_command() + ["node", "start", *self.flags, *self.extra],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr

    def stop(self):
        subprocess.run(emergence_command() + ["node", "stop", *self.flags],
                       capture_output=True, timeout=60)

    def headers(self):
        """The node token as a Bearer credential, once the node has one."""
        token = os.path.join(self.state_dir, "node.token")
        if os.path.exists(token):
            with open(token) as f:
                return {"Authorization": f"Bearer {f.read().strip()}"}
        return {}

    def post(self, body, headers=None, timeout=60):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/overwatch/v1/probe", data=data, method="POST",
            headers={"Content-Type": "application/json",
                     **(self.headers() if headers is None else headers)})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def rtt_pairs(self):
        """{(src, dst): count} of emergence_network_rtt_seconds in /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                    timeout=30) as r:
            text = r.read().decode()
        return {(s.labels["src"], s.labels["dst"]): s.value
                for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "emergence_network_rtt_seconds_count"}


@pytest.fixture
def probe_node(rt, tmp_path):
    nodes = []

    def make(*extra):
        n = ProbeNode(tmp_path, rt.root, *extra)
        n.start()
        nodes.append(n)
        return n
    yield make
    for n in nodes:
        n.stop()


def one_line_error(status, body, code):
    assert status == code, (status, body)
    assert set(body) == {"error"} and "\n" not in body["error"], body
    return body["error"]


def test_probe_by_container_id_works(two_netns, rt, running, probe_node):
    """The legitimate use: two running containers, by id; by attachment key; the
    figures are in the answer and in /metrics under the ids."""
    a = running(edit=in_ns(NS[0]))
    b = running(edit=in_ns(NS[1]))
    node = probe_node()
    status, got = node.post({"src": a, "dst": b, "count": 5})
    assert status == 200, got
    assert got["src"] == a and got["dst"] == b and got["received"] == 5, got
    status, got = node.post({"src": b, "dst": a, "addr": f"{NET}.1", "count": 3})
    assert status == 200 and got["received"] == 3, got
    status, got = node.post({"src": f"att:probe/{a}/pa{TAG}", "dst": f"att:probe/{b}/pb{TAG}",
                             "count": 2})
    assert status == 200 and got["received"] == 2, got
    pairs = node.rtt_pairs()
    assert pairs[(a, b)] == 5 and pairs[(b, a)] == 3, pairs
    assert pairs[(f"att:probe/{a}/pa{TAG}", f"att:probe/{b}/pb{TAG}")] == 2, pairs
    # an address that is not the destination's is no way to aim the probe elsewhere
    status, got = node.post({"src": a, "dst": b, "addr": "127.0.0.1", "count": 1})
    assert "not an address of" in one_line_error(status, got, 400)
    status, got = node.post({"src": a, "dst": b, "addr": "/etc/passwd", "count": 1})
    assert "not an IPv4 address" in one_line_error(status, got, 400)


def test_netns_paths_and_pids_are_refused(two_netns, rt, running, probe_node):
    """A netns path, /proc paths, a pid (string or number), a relative path: 400
    naming container ids; an unknown id: 404. Nothing is probed for any of them."""
    a = running(edit=in_ns(NS[0]))
    b = running(edit=in_ns(NS[1]))
    pid = rt.state(a)["pid"]
    node = probe_node()
    attacks = [f"/run/netns/{NS[0]}", f"/proc/{pid}/ns/net", "/proc/1/ns/net",
               str(pid), "1", pid, f"../{a}", f"{a}/../{b}", NS[0] + "/", "",
               "att:net/../../x/eth0", f"att:net/{pid}/eth0/x"]
    for bad in attacks:
        # with the address the old route wanted, so the attack is a whole request
        for body in ({"src": bad, "dst": b}, {"src": a, "dst": bad}):
            status, got = node.post({**body, "addr": f"{NET}.2", "count": 1})
            message = one_line_error(status, got, 400)
            assert "container id" in message, (bad, message)
    status, got = node.post({"src": "nosuchcontainer", "dst": b, "count": 1})
    assert "does not exist" in one_line_error(status, got, 404)
    status, got = node.post({"src": a, "dst": f"att:net/nosuch{TAG}/eth0", "count": 1})
    assert "does not exist" in one_line_error(status, got, 404)
    for body in (b"[" * 100000 + b"]" * 100000, b"\xff", json.dumps({"src": "x" * 100000,
                                                                   "dst": b}).encode()):
        status, got = node.post(body)
        assert len(one_line_error(status, got, 400)) < 400, got  # no echo of it whole
    # a netns name the host has (made by this test) is not a container either
    status, got = node.post({"src": NS[0], "dst": b, "count": 1})
    one_line_error(status, got, 404)
    assert node.rtt_pairs() == {}  # none of them was probed
    status, got = node.post({"src": a, "dst": b, "count": 2})
    assert status == 200 and got["received"] == 2, got


def barrier_held(rt, cid):
    """The init still waits at the start barrier: it has not exec'd the
    container's process (`state` alone says `created` while exec.fifo exists,
    even if an opener of the FIFO let the init through and it runs `sleep`)."""
    pid = rt.state(cid)["pid"]
    with open(f"/proc/{pid}/comm") as f:
        comm = f.read().strip()
    if comm == "sleep":
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_exec_fifo_and_writerless_fifo_are_never_opened(two_netns, rt, running, probe_node,
                                                         tmp_path):
    """A created container's exec.fifo given as the netns: refused, and the
    container is still `created` (opening the FIFO would have started or killed
    it). A FIFO nobody writes: refused at once; the node is not hung."""
    b = running(edit=in_ns(NS[1]))
    cid = rt.new_id("fifo")
    rt("create", "--bundle", rt.bundle(["sleep", "300"], edit=in_ns(NS[0])), cid, check=True)
    fifo = os.path.join(rt.root, cid, "exec.fifo")
    assert os.path.exists(fifo)
    lonely = str(tmp_path / "lonely.fifo")
    os.mkfifo(lonely)
    node = probe_node()
    answers = [node.post({**body, "addr": f"{NET}.2", "count": 1}, timeout=30)
               for body in ({"src": fifo, "dst": b}, {"src": b, "dst": fifo})]
    time.sleep(0.5)  # an init released by the FIFO would be past the barrier by now
    assert rt.state(cid)["status"] == "created"
    assert barrier_held(rt, cid)
    for status, got in answers:
        assert "container id" in one_line_error(status, got, 400)
    for body in ({"src": lonely, "dst": b}, {"src": b, "dst": lonely}):
        status, got = node.post({**body, "addr": f"{NET}.2", "count": 1}, timeout=30)
        assert "container id" in one_line_error(status, got, 400)
    # the created container itself may be probed by id: its netns, never its FIFO
    status, got = node.post({"src": cid, "dst": b, "count": 2})
    assert status == 200 and got["received"] == 2, got
    assert rt.state(cid)["status"] == "created" and barrier_held(rt, cid)
    rt("start", cid, check=True)
    assert rt.state(cid)["status"] == "running"  # the barrier was left for `start`
    assert not barrier_held(rt, cid)


def test_probes_run_one_at_a_time(two_netns, rt, running, probe_node):
    """While a probe runs, another is refused (429) rather than queued: a client
    cannot pile up work on the node. The first one's figures still come back."""
    a = running(edit=in_ns(NS[0]))
    b = running(edit=in_ns(NS[1]))
    node = probe_node()
    first = {}

    def long_probe():
        while True:  # a short probe of the loop below may hold the slot at first
            first["got"] = node.post({"src": a, "dst": b, "kind": "throughput",
                                      "seconds": 3})
            if first["got"][0] != 429:
                return
    t = threading.Thread(target=long_probe)
    t.start()
    refused = []
    while t.is_alive() and not refused:
        status, got = node.post({"src": b, "dst": a, "count": 1})
        if status == 429:
            refused.append(got)
        time.sleep(0.05)
    t.join()
    assert first["got"][0] == 200 and first["got"][1]["bytes_per_second"] > 0, first
    assert refused and "already running" in refused[0]["error"], refused
    status, got = node.post({"src": b, "dst": a, "count": 1})
    assert status == 200, got  # and the next one runs


@pytest.mark.slow
def test_series_stay_bounded(two_netns, rt, running, probe_node):
    """1,000 distinct (src, dst) probes leave at most `probe_series` pairs in
    /metrics: the least recently probed pairs are evicted, the newest kept."""
    ids = [running(edit=in_ns(NS[i % 2])) for i in range(33)]
    bound = 64
    node = probe_node("--overwatch-probe-series", str(bound))
    pairs = [(s, d) for s in ids for d in ids if s != d][:1000]
    assert len(pairs) == 1000
    for src, dst in pairs:
        status, got = node.post({"src": src, "dst": dst, "count": 1})
        assert status == 200, got
    found = node.rtt_pairs()
    assert len(found) == bound, len(found)
    assert set(found) == set(pairs[-bound:])  # the newest kept, the oldest gone


def test_no_token_is_refused(two_netns, rt, running, probe_node):
    """With the node token in place (the node's `http` access slice), a probe
    without it is refused and with it works."""
    a = running(edit=in_ns(NS[0]))
    b = running(edit=in_ns(NS[1]))
    node = probe_node()
    if not node.headers():
        pytest.skip("this node has no node.token yet (route access classes not merged)")
    status, got = node.post({"src": a, "dst": b, "count": 1}, headers={})
    assert status in (401, 403), (status, got)
    status, got = node.post({"src": a, "dst": b, "count": 1},
                            headers={"Authorization": "Bearer not-the-token"})
    assert status in (401, 403), (status, got)
    status, got = node.post({"src": a, "dst": b, "count": 1})
    assert status == 200, got


def test_a_reused_pid_is_never_joined(two_netns, rt, running, probe_node):
    """The state names the init by pid and start time: a state whose pid is now
    another process (here a `sleep` in the host's netns, standing for a pid the
    kernel gave again) is refused, its netns never entered; the container's own
    init is, through the pidfd or (before Linux 5.8) /proc checked by it."""
    from emergence.overwatch import targets
    from emergence.overwatch.qos import in_netns
    a = running(edit=in_ns(NS[0]))
    b = running(edit=in_ns(NS[1]))
    path = os.path.join(rt.root, a, "state.json")
    with open(path) as f:
        saved = f.read()
    impostor = subprocess.Popen(["sleep", "60"])
    node = probe_node()
    try:
        data = json.loads(saved)
        data["pid"] = impostor.pid  # its start time is not the one recorded
        with open(path, "w") as f:
            f.write(json.dumps(data))
        with pytest.raises(ConnectionError, match="not running"):
            in_netns(targets.Container(rt.root, a), lambda: None)
        status, got = node.post({"src": a, "dst": b, "count": 1})
        assert status == 502 and "not running" in got["error"], got
        status, got = node.post({"src": b, "dst": a, "count": 1})
        assert status == 409 and "not running" in got["error"], got
    finally:
        with open(path, "w") as f:
            f.write(saved)
        impostor.kill()
        impostor.wait()
    mine = os.stat(f"/proc/{rt.state(a)['pid']}/ns/net").st_ino

    def inode():
        return os.stat("/proc/thread-self/ns/net").st_ino
    assert in_netns(targets.Container(rt.root, a), inode) == mine
    saved_flag, targets.PIDFD_SETNS = targets.PIDFD_SETNS, False
    try:
        assert in_netns(targets.Container(rt.root, a), inode) == mine
    finally:
        targets.PIDFD_SETNS = saved_flag
    status, got = node.post({"src": a, "dst": b, "count": 1})
    assert status == 200, got
