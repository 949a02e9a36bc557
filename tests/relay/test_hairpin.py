"""Hairpin: from inside a container, its own published port answers through
the host's addresses (the bridge's gateway and another address of the host
netns the test makes), its bridge port is in hairpin mode, and the NAT rule
that brings the reply back through the host is in the table."""

import subprocess
import sys
import time

from emergence.relay.engine import Relay
from emergence.relay.graph import PortForward

from .conftest import in_ns, nft_table, sh

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(8); print("ready", flush=True)
while True:
    c, a = s.accept(); c.sendall(b"hello " + a[0].encode()); c.close()
"""

CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
print(s.recv(100).decode())
"""


def fetch(ns, addr, port):
    p = in_ns(ns, sys.executable, "-c", CLIENT, addr, str(port))
    return p.stdout.strip() if p.returncode == 0 else "failed: " + p.stderr.strip()[-200:]


def hairpin(host, veth):
    return "hairpin on" in sh("ip", "netns", "exec", host, "bridge", "-d", "link", "show",
                              "dev", veth).stdout


def test_a_container_reaches_its_own_published_port(tmp_path, netns, host):
    a, b = netns.new("a"), netns.new("b")
    sh("ip", "-n", host, "link", "add", "rlhost0", "type", "veth", "peer", "name", "rlhost1")
    sh("ip", "-n", host, "addr", "add", "192.0.2.1/32", "dev", "rlhost0")
    sh("ip", "-n", host, "link", "set", "rlhost0", "up")
    r = Relay(str(tmp_path / "s"), host_netns=host)
    server = None
    try:
        from emergence.relay.graph import Network
        r.create_network(Network("red", "rlred", ["10.88.0.0/24"], veth_prefix="rl"))
        att = r.attach("red", "ca", netns.path(a), forwards=[PortForward("red", "ca", 8080, 80)])
        r.attach("red", "cb", netns.path(b))
        host_a = r.applied()["attachments"]["att:red/ca/eth0"]["host"]
        host_b = r.applied()["attachments"]["att:red/cb/eth0"]["host"]
        server = subprocess.Popen(["ip", "netns", "exec", a, sys.executable, "-c", SERVER],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        ip_a = str(att.addresses[0])
        # the kernel: hairpin on the publishing container's port only, and the NAT rule
        assert hairpin(host, host_a) and not hairpin(host, host_b)
        rules = sh("ip", "netns", "exec", host, "nft", "list", "table", "inet",
                   nft_table(str(tmp_path / "s"))).stdout
        assert 'ip saddr 10.88.0.0/24 oifname "rlred" ct status dnat masquerade' in rules
        # from inside the container, through the host's addresses, to itself
        for addr in ("10.88.0.1", "192.0.2.1"):
            got = fetch(a, addr, 8080)
            assert got == "hello 10.88.0.1", (addr, got)   # masqueraded to the gateway
        # another container reaches it the same way; directly, with its own address
        assert fetch(b, "10.88.0.1", 8080) == "hello 10.88.0.1"
        ip_b = r.desired().attachments["att:red/cb/eth0"].addresses[0]
        assert fetch(b, ip_a, 80) == f"hello {ip_b}"
        # a forward added later (apply of the graph) turns hairpin on for its container
        g = r.desired()
        g.forwards["pf:tcp/*/8090"] = PortForward("red", "cb", 8090, 80)
        r.apply(g)
        time.sleep(0.1)
        assert hairpin(host, host_b)
        assert r.applied()["attachments"]["att:red/cb/eth0"].get("hairpin") is True
    finally:
        if server is not None:
            server.kill()
            server.wait()
        r.close()
