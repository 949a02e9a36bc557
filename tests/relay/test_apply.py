"""Apply against real netlink and nft, in namespaces the test creates."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from emergence.errors import EmergenceError
from emergence.relay.engine import Relay
from emergence.relay.graph import Graph

from .conftest import in_ns, net_doc, ping, sh


def graph(networks, attachments=(), forwards=(), routes=()):
    return Graph.from_dict({"networks": dict(networks), "attachments": list(attachments),
                            "port_forwards": list(forwards), "routes": list(routes)})


def att(netns, name, net="red", **kw):
    d = {"network": net, "container": name, "netns": netns.path(name)}
    d.update(kw)
    return d


def wait_ping(ns, addr, tries=20):
    for _ in range(tries):
        if ping(ns, addr):
            return True
        time.sleep(0.1)
    return False


def addr_of(relay, key):
    return str(relay.desired().attachments[key].addresses[0])


def test_same_network_pings_isolated_networks_do_not(relay, netns, host):
    a, b, c = netns.new("a"), netns.new("b"), netns.new("c")
    g = graph([net_doc("red"), net_doc("blue", subnet="10.89.0.0/24")],
              [att(netns, a), att(netns, b), att(netns, c, net="blue")])
    relay.apply(g)
    ip_b = addr_of(relay, f"att:red/{b}/eth0")
    ip_c = addr_of(relay, f"att:blue/{c}/eth0")
    assert wait_ping(a, ip_b)
    assert wait_ping(a, "10.88.0.1")          # its gateway, the bridge
    assert wait_ping(c, "10.89.0.1")
    assert not ping(a, ip_c)                  # isolated: forward drops red -> blue
    assert not ping(c, ip_b)
    # the host ends of the pairs are bridge ports: no IPv6 address of their own
    # (each would be a route and a multicast group per port); nor do the
    # containers' ends on an IPv4 network (DAD, MLD and router solicitations,
    # flooded to every port)
    host_ends = relay.applied()["attachments"][f"att:red/{a}/eth0"]["host"]
    assert sh("ip", "-n", host, "-6", "-o", "addr", "show", "dev", host_ends).stdout == ""
    assert sh("ip", "netns", "exec", host, "cat",
              f"/proc/sys/net/ipv6/conf/{host_ends}/disable_ipv6").stdout.strip() == "1"
    assert sh("ip", "-n", a, "-6", "-o", "addr", "show", "dev", "eth0").stdout == ""
    # and the bridge does no multicast snooping (each port's change re-armed
    # every port's multicast timers)
    assert "mcast_snooping 0" in sh("ip", "-d", "-n", host, "link", "show", "rlred").stdout


def test_a_dual_stack_network_keeps_ipv6_link_local_and_pings_over_ipv6(relay, netns, host):
    a, b = netns.new("a"), netns.new("b")
    relay.apply(graph([net_doc("red", subnets=["10.88.0.0/24", "fd00:88::/64"])],
                      [att(netns, a), att(netns, b)]))
    shown = sh("ip", "-n", a, "-6", "-o", "addr", "show", "dev", "eth0").stdout
    assert "fe80::" in shown and "fd00:88::" in shown
    ip6_b = [str(x) for x in relay.desired().attachments[f"att:red/{b}/eth0"].addresses
             if x.version == 6][0]
    for _ in range(50):   # the address is usable once its DAD is done (~1-2 s)
        if subprocess.run(["ip", "netns", "exec", a, "ping", "-6", "-c1", "-W1", ip6_b],
                          capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"{a} cannot ping {ip6_b} over IPv6")


def uplink(netns, host):
    """"Outside": a netns linked to the host's, with no route back to 10.88/24."""
    out = netns.new("out")
    sh("ip", "-n", host, "link", "add", "rlup0", "type", "veth", "peer", "name", "rlup1",
       "netns", out)
    sh("ip", "-n", host, "addr", "add", "192.168.77.1/24", "dev", "rlup0")
    sh("ip", "-n", host, "link", "set", "rlup0", "up")
    sh("ip", "-n", out, "addr", "add", "192.168.77.2/24", "dev", "rlup1")
    sh("ip", "-n", out, "link", "set", "rlup1", "up")
    return out


def test_egress_nat_reaches_outside(relay, netns, host):
    a = netns.new("a")
    uplink(netns, host)
    relay.apply(graph([net_doc("red", nat=False)], [att(netns, a)]))
    assert not ping(a, "192.168.77.2")        # no NAT: the reply has no way back
    relay.apply(graph([net_doc("red", nat=True)], [att(netns, a)]))
    assert wait_ping(a, "192.168.77.2")


HTTP = ("import http.server,socketserver\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(b'relay-ok')\n"
        "    def log_message(self, *a): pass\n"
        "socketserver.TCPServer.allow_reuse_address = True\n"
        "http.server.HTTPServer(('0.0.0.0', 80), H).serve_forever()\n")


def fetch(ns, url):
    r = in_ns(ns, sys.executable, "-c",
              f"import urllib.request;print(urllib.request.urlopen({url!r},timeout=3).read()"
              ".decode())")
    return r.stdout.strip()


def test_port_forward_serves_loopback_and_host_address(relay, netns, host):
    a = netns.new("a")
    out = uplink(netns, host)
    relay.apply(graph([net_doc("red")], [att(netns, a)],
                      [{"network": "red", "container": a, "host_port": 8080,
                        "container_port": 80}]))
    server = subprocess.Popen(["ip", "netns", "exec", a, sys.executable, "-c", HTTP])
    try:
        for _ in range(50):
            if fetch(a, "http://127.0.0.1:80/") == "relay-ok":
                break
            time.sleep(0.1)
        assert fetch(host, "http://127.0.0.1:8080/") == "relay-ok"
        assert fetch(host, "http://192.168.77.1:8080/") == "relay-ok"
        assert fetch(out, "http://192.168.77.1:8080/") == "relay-ok"
    finally:
        server.kill()
        server.wait()


def test_noop_apply_issues_nothing_and_sequence_equals_fresh(relay, netns, host, tmp_path):
    names = [netns.new(f"s{i}") for i in range(4)]
    nets = [net_doc("red"), net_doc("blue", subnet="10.89.0.0/24")]
    steps = [
        graph(nets[:1], [att(netns, names[0]), att(netns, names[1])]),
        graph(nets, [att(netns, names[0]), att(netns, names[2], net="blue")],
              [{"network": "blue", "container": names[2], "host_port": 9000,
                "container_port": 90}], [{"destination": "10.99.0.0/24", "via": "10.88.0.200"}]),
        graph([net_doc("red", mtu=1400), nets[1]],
              [att(netns, names[0]), att(netns, names[3]), att(netns, names[2], net="blue")]),
    ]
    for g in steps:
        relay.apply(g)
    relay.kernel.ops.clear()
    assert relay.apply() == [] and relay.kernel.ops == []
    assert relay.apply(full=True) == [] and relay.kernel.ops == []
    final = relay.desired()
    seq = dump(host, names)
    # the same final graph applied fresh, from nothing, in a new state dir
    relay.apply(Graph())
    assert sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout == ""
    # the same instance name: the same kernel names (a veth's hash, the table)
    fresh = Relay(str(tmp_path / "fresh"), host_netns=host, instance=relay.instance)
    try:
        fresh.apply(final)
        assert dump(host, names) == seq
        fresh.apply(Graph())
    finally:
        fresh.close()


def dump(host, names):
    """The network, normalised: names, kinds, masters, MTUs, addresses, routes, nft."""
    def links(ns):
        ls = json.loads(sh("ip", "-n", ns, "-j", "-d", "addr").stdout)
        by_index = {x["ifindex"]: x["ifname"] for x in ls}
        return sorted((x["ifname"], x.get("linkinfo", {}).get("info_kind"),
                       by_index.get(x.get("master")), x["mtu"], "UP" in x["flags"],
                       sorted(a["local"] + "/" + str(a["prefixlen"]) for a in x["addr_info"]
                              if a.get("scope") != "link"))
                      for x in ls)

    def routes(ns):
        return sorted((r.get("dst"), r.get("gateway"), r.get("dev"))
                      for r in json.loads(sh("ip", "-n", ns, "-j", "route").stdout))
    nft = sh("ip", "netns", "exec", host, "nft", "list", "ruleset").stdout
    return {"host": (links(host), routes(host), nft),
            **{n: (links(n), routes(n)) for n in names}}


def _written(relay):
    """Bytes appended to Relay's journals (graph, applied, IPAM) so far."""
    return relay._gj.appended + relay._aj.appended + sum(
        j.appended for j in relay.ipam._journals.values())


@pytest.mark.slow
def test_one_node_change_costs_the_same_at_10_100_and_1000(relay, netns, host):
    """Real veths: 1,000 attachments spread over 10 netns (eth-like names
    e0..e999), then one more container attached (with a port forward) and
    detached.  The netlink/nft operations, the lookups and the bytes written
    to the state are the same at every size."""
    spread = [netns.new(f"n{i}") for i in range(10)]
    extra = netns.new("x")
    counts = {}
    attached = []
    for size in (10, 100, 1000):
        attached = [{"network": "red", "container": f"c{i}", "netns": netns.path(spread[i % 10]),
                     "ifname": f"e{i}"} for i in range(size)]
        relay.apply(graph([net_doc("red", subnet="10.88.0.0/20")], attached))
        name = f"x{size:04d}"           # the same length at every size: same bytes
        relay.kernel.ops.clear()
        relay.kernel.lookups = 0
        w0 = _written(relay)
        relay.attach("red", name, netns.path(extra), forwards=[_pf(name, 9000)])
        add = ([o[0] for o in relay.kernel.ops], relay.kernel.lookups)
        relay.kernel.ops.clear()
        relay.kernel.lookups = 0
        relay.detach("red", name)
        counts[size] = (add, [o[0] for o in relay.kernel.ops], relay.kernel.lookups,
                        _written(relay) - w0)
        assert len(relay.desired().attachments) == size
    assert counts[10][:3] == counts[100][:3] == counts[1000][:3]
    assert counts[10][0][0] == ["veth.add", "sysctl", "link.set", "addr.add", "link.set",
                                "route.add", "brport.hairpin", "nft.transaction"]
    assert counts[10][1] == ["link.del", "nft.transaction"]
    # bytes written for the change: a few lines, whatever the size (the
    # addresses differ in length by a few characters between sizes)
    written = [counts[n][3] for n in (10, 100, 1000)]
    assert max(written) - min(written) <= 16 and max(written) < 2048, written
    veths = sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout.splitlines()
    assert len(veths) == 1000


def test_bad_input_changes_nothing(relay, netns, host):
    a = netns.new("a")
    sh("ip", "-n", host, "link", "add", "rlforeign", "type", "bridge")
    before = dump(host, [a])
    with pytest.raises(EmergenceError, match="rlforeign exists and is not Emergence's"):
        relay.apply(graph([net_doc("red", bridge="rlforeign")], [att(netns, a)]))
    with pytest.raises(EmergenceError, match="does not exist"):
        relay.apply(graph([net_doc("red")], [{"network": "red", "container": "gone",
                                              "netns": "/var/run/netns/rl-missing-ns"}]))
    assert dump(host, [a]) == before
    relay.apply(graph([net_doc("red")], [att(netns, a)]))
    with pytest.raises(EmergenceError, match="already forwarded"):
        relay.attach("red", "c9", netns.path(a), ifname="eth1",
                     forwards=[_pf(a, 80), _pf(a, 80)])


def _pf(container, port):
    from emergence.relay.graph import PortForward
    return PortForward("red", container, port, 80)


def test_handmade_drift_is_repaired_with_only_its_operations(relay, netns, host):
    a, b = netns.new("a"), netns.new("b")
    relay.apply(graph([net_doc("red")], [att(netns, a), att(netns, b)]))
    host_veth = relay.applied()["attachments"][f"att:red/{a}/eth0"]["host"]
    sh("ip", "-n", host, "link", "del", host_veth)
    ip_a = addr_of(relay, f"att:red/{a}/eth0")
    sh("ip", "-n", b, "addr", "flush", "dev", "eth0")
    relay.kernel.ops.clear()
    changes = relay.apply(full=True)
    assert sorted(c.key for c in changes) == [f"att:red/{a}/eth0", f"att:red/{b}/eth0"]
    kinds = [o[0] for o in relay.kernel.ops]
    assert kinds.count("veth.add") == 2 and "bridge.add" not in kinds
    assert "nft.transaction" not in kinds
    assert wait_ping(b, ip_a)


KILLER = """
import sys, time
from emergence.relay.engine import Relay
from emergence.relay.graph import Graph
import emergence.relay.kernel as k
orig = k.Kernel.veth_add
n = [0]
def slow(self, *a, **kw):
    n[0] += 1
    if n[0] == 3:
        print("midway", flush=True); time.sleep(60)
    return orig(self, *a, **kw)
k.Kernel.veth_add = slow
import json
Relay(sys.argv[1], host_netns=sys.argv[2]).apply(Graph.from_dict(json.loads(sys.argv[3])))
"""


def test_killed_mid_apply_converges_with_nothing_leaked(relay, netns, host):
    names = [netns.new(f"k{i}") for i in range(5)]
    g = graph([net_doc("red")], [att(netns, n) for n in names])
    p = subprocess.Popen([sys.executable, "-c", KILLER, relay.state_dir, host,
                          json.dumps(g.to_dict())], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "midway"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    relay.apply(g)
    veths = sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout.splitlines()
    assert len(veths) == 5
    ips = [addr_of(relay, f"att:red/{n}/eth0") for n in names]
    assert len(set(ips)) == 5
    assert wait_ping(names[0], ips[4])
    assert len(relay.ipam.holders("red")) == 5
    relay.apply(Graph())
    assert sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout == ""
    assert relay.ipam.holders("red") == {}
