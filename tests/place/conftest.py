"""A real etcd on loopback (free ports, data in a pl- temp dir) per test that
asks for one, killed and removed at teardown; a fresh key prefix each time.
It is a secure cluster as `cluster init` makes one (a CA, TLS both ways,
etcd users and roles); the test's own client is a command node whose
credentials are also in $EMERGENCE_CLUSTER_DIR for the nodes it spawns."""

import os
import shutil
import signal
import sys
import tempfile
import uuid

import pytest

from emergence.cluster import bootstrap


def emergence_command():
    """The installed launcher next to this interpreter (as tests/conftest.py;
    this directory's conftest shadows that one's name for `from conftest`)."""
    here = os.path.join(os.path.dirname(sys.executable), "emergence")
    return [here] if os.path.exists(here) else [sys.executable, "-m", "emergence"]


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
