"""Relay fixtures: every netns, link and nft table lives in namespaces the
test creates (names start with `rl`), including the "host" side."""

import os
import subprocess
import uuid

import pytest


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


class Namespaces:
    def __init__(self):
        self.tag = uuid.uuid4().hex[:5]
        self.made = []

    def new(self, role):
        name = f"rl-{role}-{self.tag}"
        sh("ip", "netns", "add", name)
        self.made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def path(self, name):
        return f"/var/run/netns/{name}"

    def remove(self, name):
        if name in self.made:
            self.made.remove(name)
        sh("ip", "netns", "del", name, check=False)

    def cleanup(self):
        for name in list(self.made):
            self.remove(name)


@pytest.fixture
def netns():
    ns = Namespaces()
    yield ns
    ns.cleanup()


@pytest.fixture
def host(netns):
    """A netns playing the host: Relay's bridges, veths and nft table go here."""
    return netns.new("h")


@pytest.fixture
def relay(tmp_path, host):
    from emergence.relay.engine import Relay
    r = Relay(str(tmp_path / "state"), host_netns=host)
    yield r
    r.close()


def in_ns(ns, *cmd, timeout=10, check=False):
    return subprocess.run(("ip", "netns", "exec", ns) + cmd, capture_output=True, text=True,
                          timeout=timeout, check=check)


def ping(ns, addr):
    return in_ns(ns, "ping", "-c1", "-W1", str(addr)).returncode == 0


def nft_table(state):
    """The nft table of the Relay instance whose state directory is STATE."""
    from emergence.relay.instance import resolve, table
    return table(resolve(state))


def net_doc(name="red", bridge=None, subnet="10.88.0.0/24", **kw):
    d = {"bridge": bridge or f"rl{name}", "subnets": [subnet], "veth_prefix": "rl"}
    d.update(kw)
    return name, d


assert os.geteuid() == 0, "relay tests need root"


def kernel(host, *others):
    """What the kernel holds in HOST (links, addresses, routes, nft ruleset)
    and in OTHERS (links, addresses, routes): compared before and after a
    refused input, which must change none of it."""
    def of(ns, nft=False):
        out = {"links": sorted(line.split(":")[1].strip().split("@")[0] for line in
                               sh("ip", "-n", ns, "-o", "link", "show").stdout.splitlines()),
               "addrs": sorted(" ".join(line.split()[1:4]) for line in
                               sh("ip", "-n", ns, "-o", "addr", "show").stdout.splitlines()),
               "routes": sh("ip", "-n", ns, "route", "show", "table", "all").stdout}
        if nft:
            out["nft"] = sh("ip", "netns", "exec", ns, "nft", "list", "ruleset").stdout
        return out
    return {"host": of(host, nft=True), **{ns: of(ns) for ns in others}}


def leases(state):
    """Every address IPAM holds under STATE, by network."""
    from emergence.relay.ipam import IPAM
    d = os.path.join(state, "ipam")
    if not os.path.isdir(d):
        return {}
    nets = {n.split(".")[0] for n in os.listdir(d) if not n.endswith(".lock")}
    ipam = IPAM(state)
    return {n: h for n in sorted(nets) if (h := ipam.holders(n))}
