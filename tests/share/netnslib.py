"""Nodes in network namespaces of their own, on one bridge (in a hub netns),
for the membership and store-miss tests.  Names carry the test process's
pid; everything is removed at the end, even on failure."""

import json
import os
import subprocess
import sys
import time

import pytest

SUBNET = "10.231.{}.{}"
_meshes = [0]  # each mesh its own subnet: Nix caches narinfo lookups by cache URL


def ip(*args):
    subprocess.run(["ip"] + list(args), check=True, capture_output=True)


def in_ns(ns, *cmd, **kw):
    return subprocess.run(["ip", "netns", "exec", ns] + list(cmd), capture_output=True,
                          text=True, timeout=kw.pop("timeout", 60), **kw)


class NsNode:
    """The share service alone (python -m emergence.share.service) in netns NS."""

    def __init__(self, ns, addr, store, state, config):
        self.ns, self.addr = ns, addr
        self.url = f"http://{addr}:7480"
        self.store, self.state = str(store), str(state)
        cfg = {"store": self.store, **config}
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "emergence.share.service",
             "--listen", f"{addr}:7480", "--state", self.state, "--config", json.dumps(cfg)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        for _ in range(200):
            if self.get("/share/v1/info") is not None:
                return
            if self.proc.poll() is not None:
                raise AssertionError(self.proc.stdout.read().decode())
            time.sleep(0.1)
        raise AssertionError(f"node in {ns} did not start")

    def get(self, path, ns=None):
        """JSON of GET PATH, asked from netns NS (default: the node's own); None if down."""
        p = in_ns(ns or self.ns, "curl", "-sf", "-m", "3", self.url + path)
        if p.returncode != 0:
            return None
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def node_key(state, name):
    """Make STATE's node key ahead of the start, so every node can trust the others'."""
    from emergence.share.signing import SecretKey
    os.makedirs(state, mode=0o700, exist_ok=True)
    key = SecretKey.generate(name)
    with open(os.path.join(state, "cache-key.sec"), "w") as f:
        f.write(key.text())
    os.chmod(os.path.join(state, "cache-key.sec"), 0o600)
    return key.public()


@pytest.fixture
def mesh(tmp_path):
    """mesh(n) -> [(netns, address)] of N namespaces on one bridge; removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    tag = f"shm{os.getpid() % 100000}"
    made, nodes = [], []

    def make(n):
        _meshes[0] += 1
        hub = f"{tag}-hub"
        made.append(hub)
        ip("netns", "add", hub)
        ip("-n", hub, "link", "add", "br0", "type", "bridge")
        ip("-n", hub, "link", "set", "br0", "up")
        out = []
        for i in range(n):
            ns = f"{tag}-{i}"
            made.append(ns)
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("link", "add", f"{tag}h{i}", "netns", hub, "type", "veth", "peer", "name",
               "eth0", "netns", ns)
            ip("-n", hub, "link", "set", f"{tag}h{i}", "master", "br0", "up")
            addr = SUBNET.format((os.getpid() + _meshes[0]) % 250, i + 1)
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            out.append((ns, addr))
        return out

    def start(ns, addr, i, config):
        n = NsNode(ns, addr, tmp_path / f"shm-store{i}", tmp_path / f"shm-state{i}", config)
        nodes.append(n)
        return n
    make.start = start
    try:
        yield make
    finally:
        for n in nodes:
            n.kill()
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
