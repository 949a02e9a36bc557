"""Relay across hosts: cluster networks in the cluster's etcd (leases.py) and
the VXLAN overlay (overlay.py, agent.py).

Three hosts are network namespaces joined by a bridge in a fourth (the
underlay), all made and removed here; the test's own namespace reaches the
underlay through one veth the test makes (etcd listens there too).  Each host
runs its own `emergence net agent` with its own state dir and node
certificate against one secure etcd; "containers" are namespaces attached
to the host's Relay network with `emergence net attach`."""

import contextlib
import json
import os
import random
import signal
import subprocess
import tempfile
import time
import uuid

import pytest
from place.conftest import SecureEtcd, emergence_command, wait_for

NET = "ovl"
UNDERLAY_MTU = 1400


def sh(*cmd, check=True, timeout=60):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode:
        raise AssertionError(f"{cmd}: {r.returncode} {r.stderr.strip()}")
    return r


def nsx(ns, *cmd, **kw):
    return sh("ip", "netns", "exec", ns, *cmd, **kw)


class Lab:
    """The underlay, the hosts, their agents and containers; remove() undoes all."""

    def __init__(self, tmp):
        self.tmp, self.tag = tmp, uuid.uuid4().hex[:5]
        self.ns, self.links, self.agents, self.hosts = [], [], {}, {}
        used = sh("ip", "-4", "addr").stdout
        for _ in range(50):
            self.net = f"10.217.{random.randrange(1, 255)}"
            if f"{self.net}." not in used:
                break
        self.under = self._ns("u")
        nsx(self.under, "ip", "link", "add", "br0", "type", "bridge")
        nsx(self.under, "ip", "link", "set", "br0", "up")
        # the test's side: one veth it made, so etcd is reachable from the hosts
        self.host_if = f"rlo{self.tag}"
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "tst",
           "netns", self.under)
        self.links.append(self.host_if)
        sh("ip", "addr", "add", f"{self.net}.254/24", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        nsx(self.under, "ip", "link", "set", "tst", "master", "br0", "up")
        self.etcd_ip = f"{self.net}.254"

    def _ns(self, role):
        name = f"rl-{role}-{self.tag}"
        sh("ip", "netns", "add", name)
        self.ns.append(name)
        nsx(name, "ip", "link", "set", "lo", "up")
        return name

    def add_host(self, i):
        ns = self._ns(f"h{i}")
        sh("ip", "-n", self.under, "link", "add", f"p{i}", "mtu", str(UNDERLAY_MTU), "type",
           "veth", "peer", "name", "eth0", "netns", ns)
        nsx(self.under, "ip", "link", "set", f"p{i}", "master", "br0", "up")
        nsx(ns, "ip", "link", "set", "eth0", "mtu", str(UNDERLAY_MTU), "up")
        nsx(ns, "ip", "addr", "add", f"{self.net}.{i}/24", "dev", "eth0")
        self.hosts[i] = {"ns": ns, "vtep": f"{self.net}.{i}",
                         "state": os.path.join(self.tmp, f"state-h{i}")}
        return ns

    def container(self, i, cname):
        h = self.hosts[i]
        ns = self._ns(f"c{cname}")
        r = nsx(h["ns"], *emergence_command(), "net", "attach", NET, cname,
                f"/var/run/netns/{ns}", "--state", h["state"])
        return ns, r.stdout.split()[0].split("/")[0]

    def remove(self):
        for p in self.agents.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for name in self.ns:
            sh("ip", "netns", "del", name, check=False)
        for link in self.links:
            sh("ip", "link", "del", link, check=False)


@pytest.fixture
def lab(tmp_path):
    with lab_context(tmp_path) as lab:
        yield lab


@contextlib.contextmanager
def lab_context(tmp_path):
    """The Lab and its etcd (also for test_overlay_nodes.py); all removed after."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    lab = Lab(str(tmp_path))
    sec = SecureEtcd(tempfile.mkdtemp(prefix="pl-etcd-"), f"/ov-{lab.tag}/",
                     also_listen=[lab.etcd_ip])
    lab.sec = sec
    lab.url = sec.url.replace("127.0.0.1", lab.etcd_ip)
    try:
        yield lab
    finally:
        lab.remove()
        sec.stop()


def cli(lab, *args, creds=None, ns=None, check=True):
    cmd = emergence_command() + ["net", *args, "--etcd", lab.url, "--prefix", lab.sec.prefix,
                                 "--cluster-dir", creds or lab.sec.material.dir]
    if ns:
        cmd = ["ip", "netns", "exec", ns] + cmd
    return sh(*cmd, check=check)


def start_agent(lab, i):
    h = lab.hosts[i]
    if "creds" not in h:
        h["creds"] = lab.sec.issue(f"h{i}", ["worker"]).dir
    log = open(os.path.join(lab.tmp, f"agent-h{i}.log"), "a")
    p = subprocess.Popen(
        ["ip", "netns", "exec", h["ns"]] + emergence_command() + [
            "net", "agent", NET, "--cluster", "--etcd", lab.url, "--prefix", lab.sec.prefix,
            "--cluster-dir", h["creds"], "--vtep", h["vtep"], "--state", h["state"],
            "--lease-ttl", "2"], stdout=log, stderr=log)
    lab.agents[i] = p
    assert wait_for(lambda: status(lab, i) and status(lab, i)["pid"] != h.get("pid"), 30), \
        open(log.name).read()
    h["pid"] = status(lab, i)["pid"]
    return status(lab, i)


def status(lab, i):
    try:
        with open(os.path.join(lab.hosts[i]["state"], f"overlay-{NET}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def peer_entries(lab, i):
    """What host I's kernel holds for its peers: FDB, neighbours, routes."""
    ns, dev = lab.hosts[i]["ns"], status(lab, i)["device"] if status(lab, i) else None
    if dev is None:
        return "", "", ""
    fdb = nsx(ns, "bridge", "fdb", "show", "dev", dev, check=False).stdout
    neigh = nsx(ns, "ip", "neigh", "show", "dev", dev, check=False).stdout
    routes = nsx(ns, "ip", "route", "show", "dev", dev, check=False).stdout
    return fdb, neigh, routes


def frag_creates(ns):
    """IP fragments NS's kernel made (the outer packets of a too-big MTU)."""
    head, values = [line.split() for line in nsx(ns, "cat", "/proc/net/snmp").stdout
                    .splitlines() if line.startswith("Ip:")][:2]
    return int(values[head.index("FragCreates")])


def reaches(src_ns, addr):
    return nsx(src_ns, "ping", "-c", "1", "-W", "1", addr, check=False).returncode == 0


SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(4); print("ready", flush=True)
while True:
    c, peer = s.accept(); n = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        n += len(b)
    c.sendall(f"{n} {peer[0]}".encode()); c.close()
"""

CLIENT = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: DF set
s.settimeout(20); s.connect((sys.argv[1], 7000))
s.sendall(b"x" * (1 << 20)); s.shutdown(socket.SHUT_WR)
print(s.recv(64).decode())
"""


def transfer(lab, src_ns, dst_ns, addr):
    """1 MiB over TCP with DF set, from SRC_NS to a server in DST_NS: (bytes
    received, the client's address as the server saw it)."""
    srv = subprocess.Popen(["ip", "netns", "exec", dst_ns, "python3", "-c", SERVER],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        r = nsx(src_ns, "python3", "-c", CLIENT, addr, check=False)
        assert r.returncode == 0, r.stderr
        n, peer = r.stdout.split()
        return int(n), peer
    finally:
        srv.kill()
        srv.wait()


@pytest.mark.slow
def test_three_hosts_reach_each_other_and_keep_subnets(lab):
    cli(lab, "create", NET, "--cluster", "--subnet", "10.218.0.0/16", "--node-prefix", "24",
        "--grace", "4")
    for i in (1, 2, 3):
        lab.add_host(i)
    subnets = {i: start_agent(lab, i)["subnet"] for i in (1, 2, 3)}
    assert len(set(subnets.values())) == 3
    # every host holds the other two: 2 FDB entries, 2 neighbours, 2 routes
    for i in (1, 2, 3):
        assert wait_for(lambda i=i: len(status(lab, i)["peers"]) == 2, 20), \
            [status(lab, j) for j in (1, 2, 3)]
    ca, a_ip = lab.container(1, "ca")
    cb, b_ip = lab.container(2, "cb")
    cc, c_ip = lab.container(3, "cc")

    # MTU: the underlay's minus 50, derived by itself and shown by inspect
    st = status(lab, 1)
    assert st["mtu"] == UNDERLAY_MTU - 50 and "eth0" in st["mtu_derived"]
    assert f"mtu {UNDERLAY_MTU - 50} " in nsx(ca, "ip", "link", "show", "eth0").stdout
    doc = json.loads(cli(lab, "inspect", NET, "--cluster", "--state", lab.hosts[1]["state"],
                         creds=lab.hosts[1]["creds"]).stdout)
    assert {n["node"] for n in doc["nodes"]} == {"h1", "h2", "h3"}
    assert doc["this_node"]["mtu"] == UNDERLAY_MTU - 50
    assert "underlay eth0 MTU 1400 - 50" in doc["this_node"]["mtu_derived"]

    # A reaches B and C by IP: ping, and TCP with DF set (1 MiB, no black hole);
    # no outer packet is fragmented on the way (the MTU leaves room for VXLAN)
    frags = frag_creates(lab.hosts[1]["ns"])
    assert wait_for(lambda: reaches(ca, b_ip), 10) and reaches(ca, c_ip)
    assert reaches(cb, c_ip)
    # (and B sees A's own address: traffic to the cluster network is not NAT'd)
    assert transfer(lab, ca, cb, b_ip) == (1 << 20, a_ip)
    assert transfer(lab, ca, cc, c_ip) == (1 << 20, a_ip)
    # a packet of the container's full MTU crosses unfragmented (DF): no black hole,
    # and no reliance on the tunnel's ICMP "fragmentation needed" either
    link = nsx(ca, "ip", "-o", "link", "show", "eth0").stdout.split()
    big = str(int(link[link.index("mtu") + 1]) - 28)
    for dst in (b_ip, c_ip):
        assert nsx(ca, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", big, dst,
                   check=False).returncode == 0
    assert frag_creates(lab.hosts[1]["ns"]) == frags

    # someone removes A's route to C: the agent puts it back
    nsx(lab.hosts[1]["ns"], "ip", "route", "del", subnets[3], "dev", st["device"])
    assert wait_for(lambda: subnets[3] in peer_entries(lab, 1)[2], 10)
    assert reaches(ca, c_ip)

    # B killed and restarted: same subnet, and A's kernel entries never changed
    before = peer_entries(lab, 1)
    lab.agents[2].send_signal(signal.SIGKILL)
    lab.agents[2].wait()
    assert peer_entries(lab, 1) == before
    assert start_agent(lab, 2)["subnet"] == subnets[2]
    assert wait_for(lambda: reaches(ca, b_ip), 10)
    assert peer_entries(lab, 1) == before

    # C dies for good: after the grace its entries are gone from A and B
    lab.agents[3].send_signal(signal.SIGKILL)
    lab.agents[3].wait()
    gone = subnets[3].split("/")[0]
    assert gone in peer_entries(lab, 1)[2]
    assert wait_for(lambda: all(gone not in "".join(peer_entries(lab, i)) and
                                status(lab, 3)["mac"] not in peer_entries(lab, i)[0]
                                for i in (1, 2)), 30)
    assert reaches(ca, b_ip)

    # B leaves cleanly (SIGTERM releases): gone from A at once, its device too
    lab.agents[2].send_signal(signal.SIGTERM)
    assert lab.agents[2].wait(timeout=20) == 0
    assert wait_for(lambda: subnets[2].split("/")[0] not in peer_entries(lab, 1)[2], 10)
    assert nsx(lab.hosts[2]["ns"], "ip", "link", "show", status(lab, 1)["device"],
               check=False).returncode != 0
    rows = json.loads(cli(lab, "nodes", NET, "--cluster", "--json").stdout)
    assert [r["node"] for r in rows] == ["h1"]


# -- leases and their attacks, etcd only (no kernel) ----------------------------

@pytest.fixture
def etcd(tmp_path):
    sec = SecureEtcd(tempfile.mkdtemp(prefix="pl-etcd-"), f"/ovl-{uuid.uuid4().hex[:6]}/")
    try:
        yield sec
    finally:
        sec.stop()


def as_node(sec, name, roles=("worker",)):
    from emergence.place.state import Cluster
    creds = sec.issue(name, list(roles))
    return Cluster(sec.url, prefix=sec.prefix, material=creds)


def admin(sec):
    from emergence.place.state import Cluster
    return Cluster(sec.url, prefix=sec.prefix, material=sec.material)


def test_leases_keep_subnets_release_and_reclaim_after_grace(etcd):
    from emergence.relay import leases
    leases.create_network(admin(etcd), NET, "10.219.0.0/16", 24, grace=2)
    c1, c2 = as_node(etcd, "n1"), as_node(etcd, "n2")
    l1 = leases.NodeLease(c1, NET, "n1", "192.0.2.1", mac="02:00:00:00:00:01", ttl=1)
    l2 = leases.NodeLease(c2, NET, "n2", "192.0.2.2", mac="02:00:00:00:00:02", ttl=1)
    s1, s2 = l1.acquire(), l2.acquire()
    assert s1 != s2 and set(leases.holders(c1, NET)) == {"n1", "n2"}
    # n1 restarts (a new process, same identity): the same subnet, the record untouched
    rev = leases._records(c1)[f"n1/{NET}"][1]
    again = leases.NodeLease(c1, NET, "n1", "192.0.2.1", mac="02:00:00:00:00:01", ttl=1)
    assert again.acquire() == s1 and leases._records(c1)[f"n1/{NET}"][1] == rev
    # n2 dies (its etcd lease ends, nothing released): kept within the grace
    l2.etcd_lease.revoke()
    assert "n2" in leases.holders(c1, NET) and leases.reclaim(c1, NET) == []
    # ... and dropped after it; its claim is freed by whoever reclaims
    later = time.time() + 3
    assert "n2" not in leases.holders(c1, NET, now=later)
    assert leases.reclaim(c1, NET, now=later) == [str(s2)]
    # a clean leave releases at once
    again.release()
    assert "n1" not in leases.holders(c2, NET)
    assert leases.subnet_key(s1) not in c2.items("netclaim", NET)


def test_full_network_and_bad_input_are_one_line(etcd):
    from emergence.errors import EmergenceError
    from emergence.relay import leases
    a = admin(etcd)
    leases.create_network(a, "tiny", "10.219.0.0/29", 30)
    for bad, msg in ((("10.219.0.1/24", 26), "host bits"), (("10.219.0.0/24", 24), "between"),
                     (("fd00::/64", 80), "IPv4")):
        with pytest.raises(EmergenceError, match=msg):
            leases.create_network(a, "other", *bad)
    with pytest.raises(EmergenceError, match="exists"):
        leases.create_network(a, "tiny", "10.219.0.0/29", 30)
    for i in (1, 2):
        leases.NodeLease(a, "tiny", f"t{i}", "192.0.2.1", mac="02:00:00:00:00:01").acquire()
    with pytest.raises(EmergenceError, match="no free node subnet"):
        leases.NodeLease(a, "tiny", "t3", "192.0.2.1", mac="02:00:00:00:00:01").acquire()


def test_a_worker_cannot_take_another_nodes_subnet(etcd):
    """Attacks by a worker of the cluster (its own certificate and etcd user):
    writing another node's record is refused by etcd's RBAC; a forged claim
    plus its own record naming the victim's subnet does not move the
    victim's traffic (the older record wins); a reader cannot make networks.
    The legitimate leases still work in the same test."""
    from emergence.place.state import Refused
    from emergence.relay import leases
    leases.create_network(admin(etcd), NET, "10.219.0.0/16", 24)
    victim, evil = as_node(etcd, "victim"), as_node(etcd, "evil")
    lv = leases.NodeLease(victim, NET, "victim", "192.0.2.1", mac="02:00:00:00:00:01")
    subnet = str(lv.acquire())
    le = leases.NodeLease(evil, NET, "evil", "192.0.2.66", mac="02:00:00:00:00:66")
    own = str(le.acquire())
    # 1. overwrite the victim's record (its VTEP) or liveness: refused
    for key in ((NET,), (NET, "seen"), (NET, "alive")):
        with pytest.raises(Refused):
            evil.put({"node": "victim", "subnet": subnet, "vtep": "192.0.2.66",
                      "mac": "02:00:00:00:00:66"}, "netlease", "victim", *key)
        with pytest.raises(Refused):
            evil.delete("netlease", "victim", *key)
    # 2. forge the claim and name the victim's subnet in its own record
    skey = leases.subnet_key(subnet)
    evil.delete("netclaim", NET, skey)
    evil.put("evil", "netclaim", NET, skey)
    evil.put({"node": "evil", "subnet": subnet, "vtep": "192.0.2.66",
              "mac": "02:00:00:00:00:66"}, "netlease", "evil", NET)
    held = leases.holders(victim, NET)
    assert held["victim"]["subnet"] == subnet and held["victim"]["vtep"] == "192.0.2.1"
    assert "evil" not in held or held["evil"]["subnet"] != subnet
    # 3. its own record naming a route wider than a node subnet, or a bad VTEP or MAC
    for bad in ({"subnet": "0.0.0.0/0"}, {"subnet": "10.219.0.0/16"},
                {"subnet": "10.220.0.0/24"}, {"vtep": "not-an-address"},
                {"mac": "01:00:5e:00:00:01"}):
        evil.put(dict({"node": "evil", "subnet": own, "vtep": "192.0.2.66",
                       "mac": "02:00:00:00:00:66"}, **bad), "netlease", "evil", NET)
        assert "evil" not in leases.holders(victim, NET), bad
    # the forged claim is freed again by a reclaim; the victim keeps its subnet on restart
    assert subnet in leases.reclaim(victim, NET)
    assert str(leases.NodeLease(victim, NET, "victim", "192.0.2.1",
                                mac="02:00:00:00:00:01").acquire()) == subnet
    # 4. a reader (no worker role) cannot make a network nor lease
    reader = as_node(etcd, "ro", roles=("reader",))
    with pytest.raises(Refused):
        leases.create_network(reader, "mine", "10.220.0.0/16", 24)
    with pytest.raises(Refused):
        leases.NodeLease(reader, NET, "ro", "192.0.2.9", mac="02:00:00:00:00:09").acquire()
    assert own != subnet


def test_cli_errors_are_one_line(etcd, tmp_path):
    def net(*args, creds=None):
        r = subprocess.run(emergence_command() + ["net", *args, "--etcd", etcd.url, "--prefix",
                                                  etcd.prefix, "--cluster-dir",
                                                  creds or etcd.material.dir],
                           capture_output=True, text=True)
        return r.returncode, r.stdout, r.stderr
    code, out, _ = net("create", NET, "--cluster", "--subnet", "10.219.0.0/16",
                       "--node-prefix", "24", "--grace", "60")
    assert code == 0 and out.startswith(f"{NET} 10.219.0.0/16 /24 vni ")
    code, _, err = net("create", NET, "--cluster", "--subnet", "10.219.0.0/16",
                       "--node-prefix", "24")
    assert code != 0 and "exists" in err and len(err.strip().splitlines()) == 1
    creds = etcd.issue("w1", ["worker"]).dir
    state = str(tmp_path / "state")
    for args, msg in (
            (("create", NET, "--cluster", "--subnet", "10.219.0.0/16"), "--node-prefix"),
            (("create", "x", "--cluster", "--subnet", "10.0.0.0/8", "--node-prefix", "40"),
             "between"),
            (("create", "x", "--cluster", "--subnet", "10.0.0.0/8", "--node-prefix", "16",
              "--grace", "soon"), "--grace"),
            (("create", "x", "--cluster", "--subnet", "10.0.0.0/8", "--node-prefix", "16",
              "--port", "70000"), "--port"),
            (("create", "x", "--cluster", "--subnet", "10.0.0.0/8", "--node-prefix", "16",
              "--encrypt", "ipsec"), "wireguard"),
            (("agent", "nope", "--cluster", "--vtep", "192.0.2.1", "--state", state),
             "no cluster network 'nope'"),
            (("agent", NET, "--cluster", "--vtep", "bogus", "--state", state), "--vtep"),
            (("agent", NET, "--cluster", "--vtep", "192.0.2.77", "--state", state),
             "no interface on this host has the VTEP address"),
            (("leave", NET, "--cluster"), "holds no subnet"),
            (("inspect", "no-such", "--cluster"), "no cluster network")):
        code, out, err = net(*args, creds=creds)
        assert code != 0 and msg in err and len(err.strip().splitlines()) == 1, (args, err)
        assert "Traceback" not in err and "internal error" not in err
    # a worker cannot make cluster networks (the command role can, above)
    code, _, err = net("create", "mine", "--cluster", "--subnet", "10.221.0.0/16",
                       "--node-prefix", "24", creds=creds)
    assert code != 0 and "refused" in err
    code, out, _ = net("nodes", NET, "--cluster", "--json", creds=creds)
    assert code == 0 and json.loads(out) == []
    # rm: refused while a node holds a subnet, then done
    from emergence.relay import leases
    lease = leases.NodeLease(admin(etcd), NET, "w9", "192.0.2.9", mac="02:00:00:00:00:09")
    lease.acquire()
    code, _, err = net("rm", NET, "--cluster")
    assert code != 0 and "held by w9" in err and len(err.strip().splitlines()) == 1
    lease.release()
    assert net("rm", NET, "--cluster")[0] == 0
    assert net("inspect", NET, "--cluster")[0] != 0
    assert not admin(etcd).items("netclaim", NET) and not admin(etcd).items("netlease")


def links(ns):
    return sorted(line.split(":")[1].strip().split("@")[0] for line in
                  nsx(ns, "ip", "-o", "link", "show").stdout.splitlines())


def wireguard_refused(lab, h):
    """This kernel has no WireGuard: one line from `net create` (nothing
    stored) and from the agent of a network a command node with WireGuard
    stored (no lease, no device, no bridge, no key file)."""
    from emergence.relay import leases
    ns = h["ns"]
    r = cli(lab, "create", NET, "--cluster", "--subnet", "10.218.0.0/16", "--node-prefix",
            "24", "--encrypt", "wireguard", ns=ns, check=False)
    assert r.returncode != 0 and "this kernel has no WireGuard" in r.stderr, r.stderr
    assert "modprobe wireguard" in r.stderr and "VXLAN" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert admin(lab.sec).get("net", NET) is None
    leases.create_network(admin(lab.sec), NET, "10.218.0.0/16", 24, encrypt="wireguard")
    before = links(ns)
    r = nsx(ns, *emergence_command(), "net", "agent", NET, "--cluster", "--etcd", lab.url,
            "--prefix", lab.sec.prefix, "--cluster-dir", h["creds"], "--vtep", h["vtep"],
            "--state", h["state"], check=False)
    assert r.returncode != 0 and "this kernel has no WireGuard" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert links(ns) == before
    assert admin(lab.sec).items("netlease") == {} and admin(lab.sec).items("netclaim") == {}
    assert not os.path.exists(os.path.join(h["state"], f"overlay-{NET}.wg.key"))
    assert not os.path.exists(os.path.join(h["state"], f"overlay-{NET}.json"))


def wireguard_in_kernel(ns):
    r = nsx(ns, "ip", "link", "add", "wgprobe", "type", "wireguard", check=False)
    nsx(ns, "ip", "link", "del", "wgprobe", check=False)
    return r.returncode == 0


@pytest.mark.slow
def test_wireguard_network(lab):
    """`--encrypt wireguard`: where the kernel has WireGuard, containers on two
    hosts reach each other over it with MTU underlay - 80, the private key
    stays in a 0600 file and only the public key reaches etcd; where it has
    not (this machine's kernel), `net create` and the agent say so in one line
    and leave nothing behind: no etcd entry, no device, no key."""
    for i in (1, 2):
        lab.add_host(i)
    h = lab.hosts[1]
    h["creds"] = lab.sec.issue("h1", ["worker"]).dir
    if not wireguard_in_kernel(h["ns"]):
        wireguard_refused(lab, h)
        return
    cli(lab, "create", NET, "--cluster", "--subnet", "10.218.0.0/16", "--node-prefix", "24",
        "--encrypt", "wireguard")
    subnets = {i: start_agent(lab, i)["subnet"] for i in (1, 2)}
    assert subnets[1] != subnets[2]
    assert wait_for(lambda: len(status(lab, 1)["peers"]) == 1, 20)
    ca, a_ip = lab.container(1, "ca")
    cb, b_ip = lab.container(2, "cb")
    assert status(lab, 1)["mtu"] == UNDERLAY_MTU - 80
    assert wait_for(lambda: reaches(ca, b_ip), 10)
    assert transfer(lab, ca, cb, b_ip) == (1 << 20, a_ip)
    key = os.path.join(h["state"], f"overlay-{NET}.wg.key")
    assert os.stat(key).st_mode & 0o777 == 0o600
    private = open(key).read().strip()
    dump = json.dumps(admin(lab.sec).snapshot())
    assert private not in dump and "wg_public" in dump


def test_wireguard_keys_stay_on_the_node(tmp_path):
    """The private key is made once, 0600, and refused once others can read it;
    the public key is what a record carries, and records need a valid one."""
    from emergence.errors import EmergenceError
    from emergence.relay import wg
    state = str(tmp_path / "state")
    private, public = wg.keypair(state, NET)
    assert wg.keypair(state, NET) == (private, public) and wg.valid_public(public)
    path = wg.key_path(state, NET)
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(state).st_mode & 0o777 == 0o700
    os.chmod(path, 0o644)
    with pytest.raises(EmergenceError, match="readable by others"):
        wg.keypair(state, NET)
    assert not wg.valid_public("not a key") and not wg.valid_public(private[:-4])


def test_wireguard_records_carry_only_the_public_key(etcd, tmp_path):
    """What reaches etcd of a node's WireGuard keys is the public key, in the
    node's own record; a record without a valid one is no peer."""
    from emergence.relay import leases, wg
    leases.create_network(admin(etcd), "wgn", "10.219.0.0/16", 24, encrypt="wireguard")
    private, public = wg.keypair(str(tmp_path / "state"), "wgn")
    n1 = leases.NodeLease(as_node(etcd, "n1"), "wgn", "n1", "192.0.2.1",
                          mac="02:00:00:00:00:01", wg_public=public)
    n1.acquire()
    n2 = leases.NodeLease(as_node(etcd, "n2"), "wgn", "n2", "192.0.2.2",
                          mac="02:00:00:00:00:02", wg_public="not a key")
    n2.acquire()
    dump = json.dumps(admin(etcd).snapshot())
    assert public in dump and private not in dump
    held = leases.holders(admin(etcd), "wgn")
    assert held["n1"]["wg_public"] == public and "n2" not in held
