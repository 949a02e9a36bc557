"""A real etcd on loopback (free ports, data in a pl- temp dir) per test that
asks for one, killed and removed at teardown; a fresh key prefix each time."""

import os
import shutil
import signal
import sys
import tempfile
import uuid

import pytest

from emergence.place import etcd


def emergence_command():
    """The installed launcher next to this interpreter (as tests/conftest.py;
    this directory's conftest shadows that one's name for `from conftest`)."""
    here = os.path.join(os.path.dirname(sys.executable), "emergence")
    return [here] if os.path.exists(here) else [sys.executable, "-m", "emergence"]


def nodes_up(cluster):
    """Registered nodes: workers (members/) and command nodes (commanders/)."""
    return len(cluster.items("members")) + len(cluster.items("commanders"))


@pytest.fixture
def etcd_url():
    d = tempfile.mkdtemp(prefix="pl-etcd-")
    proc, url = etcd.start(os.path.join(d, "data"), name="pl", log=os.path.join(d, "log"))
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cluster(etcd_url):
    from emergence.place.state import Cluster
    return Cluster(etcd_url, prefix=f"/pl-{uuid.uuid4().hex[:8]}/")


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
