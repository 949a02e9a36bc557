"""A real etcd on loopback (free ports, data in a pl- temp dir) per test that
asks for one, killed and removed at teardown; a fresh key prefix each time.
It is a secure cluster as `cluster init` makes one (a CA, TLS both ways,
etcd users and roles); the test's own client is a command node whose
credentials are also in $EMERGENCE_CLUSTER_DIR for the nodes it spawns."""

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from emergence.cluster import bootstrap
from emergence.lifetime import dies_with_us


def emergence_command():
    """The installed launcher next to this interpreter (as tests/conftest.py;
    this directory's conftest shadows that one's name for `from conftest`)."""
    here = os.path.join(os.path.dirname(sys.executable), "emergence")
    return [here] if os.path.exists(here) else [sys.executable, "-m", "emergence"]


def join_node(sec, logdir, name, role, etcd_url, ttl, extra=(), before=(), globals_=()):
    """`emergence cluster join` as a process, with its own certificate and
    etcd user from SEC; BEFORE wraps it (e.g. `ip netns exec NS`), GLOBALS_
    go before the verb (--root, --store).  Returns (process, its log path)."""
    log = os.path.join(str(logdir), f"{name}.log")
    creds = sec.issue(name, [role])
    p = subprocess.Popen(
        list(before) + emergence_command() + list(globals_) + [
            "cluster", "join", "--etcd", etcd_url, "--prefix", sec.prefix, "--role", role,
            "--name", name, "--cluster-dir", creds.dir, "--lease-ttl", str(ttl), *extra],
        stderr=open(log, "w"), stdout=subprocess.DEVNULL,
        preexec_fn=dies_with_us())  # a killed test run leaves no node behind
    return p, log


def wait_for(pred, timeout=20.0, step=0.05):
    """True once PRED() is true, False if TIMEOUT seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def nodes_up(cluster):
    """Registered nodes: workers (members/) and command nodes (commanders/)."""
    return len(cluster.items("members")) + len(cluster.items("commanders"))


class SecureEtcd:
    """A TLS etcd with RBAC made by `cluster init`'s code, in DIR."""

    def __init__(self, d, prefix, also_listen=()):
        self.dir, self.prefix = d, prefix
        self.proc, self.url, self.material = bootstrap.init(
            os.path.join(d, "cluster"), os.path.join(d, "data"), name="pl-admin",
            prefix=prefix, log=os.path.join(d, "log"), also_listen=also_listen)

    def issue(self, name, roles):
        """Credentials of another node (as `cluster issue` + `join --bundle`)."""
        b = bootstrap.issue(self.material.dir, name, roles)
        return bootstrap.install(os.path.join(self.dir, f"node-{name}"), b)

    def stop(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def secure_etcd(monkeypatch):
    s = SecureEtcd(tempfile.mkdtemp(prefix="pl-etcd-"), f"/pl-{uuid.uuid4().hex[:8]}/")
    monkeypatch.setenv("EMERGENCE_CLUSTER_DIR", s.material.dir)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def etcd_url(secure_etcd):
    return secure_etcd.url


@pytest.fixture
def cluster(secure_etcd):
    from emergence.place.state import Cluster
    return Cluster(secure_etcd.url, prefix=secure_etcd.prefix, material=secure_etcd.material)


def stop_all(procs):
    """SIGTERM every node process still running, then reap each (SIGKILL after 20 s)."""
    import signal
    import subprocess
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def netns():
    """A network namespace joined to the host by a veth pair (HOST_IF on the
    host side, a /30 of 10.214/16 no host interface uses): the test cuts a
    node off by setting HOST_IF down.  Yields (netns, HOST_IF, host address)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2")
    tag = f"{os.getpid() % 100000}"
    ns, host_if, ns_if = f"pl-ns-{tag}", f"pl-h{tag}", f"pl-n{tag}"
    used = ip("-4", "addr").stdout
    for _ in range(50):
        net = f"10.214.{random.randrange(1, 255)}"
        if f"{net}." not in used:
            break
    ip("netns", "add", ns)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", f"{net}.1/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "addr", "add", f"{net}.2/30", "dev", ns_if)
        ip("-n", ns, "link", "set", ns_if, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        yield ns, host_if, f"{net}.1"
    finally:
        ip("link", "del", host_if, check=False)
        ip("netns", "del", ns, check=False)
