"""A worker behind a network partition: it runs in its own network namespace,
joined to the host by a veth pair; the test sets the host end down while the
worker holds tasks.  Its lease runs out, its tasks go elsewhere, and when the
link comes back it re-registers, is probed and re-ranked, and the results it
finished meanwhile arrive second and are discarded: each task has one result."""

import tempfile
import time

import pytest

from emergence.place import tasks
from emergence.place.state import Cluster

from .conftest import SecureEtcd, ip, join_node, nodes_up, stop_all

TTL = 2


@pytest.mark.slow
def test_partitioned_worker_loses_its_tasks_and_is_reranked(netns, tmp_path):
    ns, host_if, host_ip = netns
    sec = SecureEtcd(tempfile.mkdtemp(prefix="pl-etcd-"), "/pl-part/", also_listen=[host_ip])
    url = sec.url
    port = url.rsplit(":", 1)[1]
    cluster = Cluster(url, prefix="/pl-part/", material=sec.material)
    procs, logs = {}, {}

    def join(name, role, etcd_url, before=(), cpu="2"):
        procs[name], logs[name] = join_node(sec, tmp_path, name, role, etcd_url, TTL,
                                            ["--cpu", cpu], before)

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
        ip("link", "set", host_if, "down")
        time.sleep(TTL + 4)  # its lease runs out; the moved tasks finish meanwhile
        ip("link", "set", host_if, "up")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(cluster.items("results")) < 6:
            time.sleep(0.2)
        text = lambda: "".join(open(p).read() for p in logs.values())  # noqa: E731
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
