"""A worker behind a network partition: it runs in its own network namespace,
joined to the host by a veth pair; the test sets the host end down while the
worker holds tasks.  Its lease runs out, its tasks go elsewhere, and when the
link comes back it re-registers, is probed and re-ranked, and the results it
finished meanwhile arrive second and are discarded: each task has one result."""

import os
import random
import shutil
import subprocess
import tempfile
import time

import pytest

from emergence.place import tasks
from emergence.place.state import Cluster

from .conftest import SecureEtcd, emergence_command, nodes_up, stop_all

EM = emergence_command()
TTL = 2


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def netns():
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2")
    tag = f"{os.getpid() % 100000}"
    ns, host_if, ns_if = f"pl-ns-{tag}", f"pl-h{tag}", f"pl-n{tag}"
    used = _ip("-4", "addr").stdout
    for _ in range(50):
        net = f"10.214.{random.randrange(1, 255)}"
        if f"{net}." not in used:
            break
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{net}.1/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "addr", "add", f"{net}.2/30", "dev", ns_if)
        _ip("-n", ns, "link", "set", ns_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield ns, host_if, f"{net}.1"
    finally:
        _ip("link", "del", host_if, check=False)
        _ip("netns", "del", ns, check=False)


@pytest.mark.slow
def test_partitioned_worker_loses_its_tasks_and_is_reranked(netns, tmp_path):
    ns, host_if, host_ip = netns
    sec = SecureEtcd(tempfile.mkdtemp(prefix="pl-etcd-"), "/pl-part/", also_listen=[host_ip])
    url = sec.url
    port = url.rsplit(":", 1)[1]
    cluster = Cluster(url, prefix="/pl-part/", material=sec.material)
    procs, logs = {}, {}

    def join(name, role, etcd_url, prefix_cmd=(), cpu="2"):
        logs[name] = tmp_path / f"{name}.log"
        creds = sec.issue(name, [role])  # each node its own certificate and etcd user
        procs[name] = subprocess.Popen(
            list(prefix_cmd) + EM + ["cluster", "join", "--etcd", etcd_url, "--prefix",
                                     "/pl-part/", "--role", role, "--name", name,
                                     "--cluster-dir", creds.dir,
                                     "--lease-ttl", str(TTL), "--cpu", cpu],
            stderr=open(logs[name], "w"), stdout=subprocess.DEVNULL)

    try:
        join("pl-pc", "command", url)
        join("pl-pw-host", "worker", url, cpu="6")
        join("pl-pw-ns", "worker", f"https://{host_ip}:{port}", ("ip", "netns", "exec", ns))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and nodes_up(cluster) < 3:
            time.sleep(0.1)
        assert nodes_up(cluster) == 3
        # room for all on the host worker, so what the partitioned one held can move
        for i in range(6):
            tasks.submit(cluster, {"kind": "sleep", "seconds": 2, "id": f"pl-p{i:02d}",
                                   "demand": {"cpu": 1}, "timeout": 20})
        # wait until the namespaced worker has started work (acknowledged), then cut it off
        def held_by_ns():
            return sorted(k.split("/")[0] for k, v in cluster.items("ack").items()
                          if v == "pl-pw-ns")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not held_by_ns():
            time.sleep(0.05)
        held = held_by_ns()
        assert held
        _ip("link", "set", host_if, "down")
        time.sleep(TTL + 4)  # its lease runs out; the moved tasks finish meanwhile
        _ip("link", "set", host_if, "up")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(cluster.items("results")) < 6:
            time.sleep(0.2)
        text = lambda: "".join(p.read_text() for p in logs.values())  # noqa: E731
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "re-rank: pl-pw-ns answered" not in text():
            time.sleep(0.2)
        log = text()
        results = cluster.items("results")
        assert sorted(results) == [f"pl-p{i:02d}" for i in range(6)], log
        status = cluster.items("status")
        for tid in held:
            hosts = [h["host"] for h in status[tid]["history"]]
            assert hosts[0] == "pl-pw-ns" and len(hosts) >= 2, (tid, status[tid])
        assert "re-dispatch" in log and "pl-pw-ns -> pl-pw-host" in log, log
        assert "unresponsive: pl-pw-ns" in log
        assert "re-rank: pl-pw-ns answered" in log, log
        assert "pl-pw-ns: lease expired, registering again" in log
        # what it finished behind the partition came second: discarded, not recorded
        assert any(results[tid]["host"] != "pl-pw-ns" for tid in held), results
        for tid in held:
            if results[tid]["host"] != "pl-pw-ns":
                assert f"duplicate: {tid} attempt 1 on pl-pw-ns" in log, log
    finally:
        stop_all(procs.values())
        sec.stop()
