"""A three-member etcd made by `cluster init --members 3` (three processes on
this host, each its own data dir and ports, TLS with the cluster CA): nodes
given every member keep placing tasks when the member they used is killed."""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from emergence.cluster.files import Material
from emergence.errors import EmergenceError
from emergence.place import tasks
from emergence.place.commander import Commander
from emergence.place.state import Cluster
from emergence.place.worker import Worker

from .conftest import emergence_command, wait_for

EM = emergence_command()


def _free_run(n):
    """A base port with N consecutive free loopback ports after it."""
    import random
    for _ in range(200):
        base = random.randrange(20000, 60000, 2)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.skip("no run of free ports")


def _gone(pid):
    for _ in range(100):  # detached: init's child, reaped by init(1), not us
        if not os.path.exists(f"/proc/{pid}") or \
                open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z":
            return True
        time.sleep(0.1)
    return False


def _put(cluster):
    try:
        cluster.put(1, "probe-write")
        return True
    except EmergenceError:
        return False


@pytest.fixture
def three(tmp_path):
    base = _free_run(6)
    url = f"https://127.0.0.1:{base}"
    certs, data = tmp_path / "cluster", tmp_path / "etcd"
    p = subprocess.run(EM + ["cluster", "init", "--members", "3", "--etcd", url,
                             "--data-dir", str(data), "--cluster-dir", str(certs),
                             "--name", "pl-three", "--prefix", "/pl3/"],
                       capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr
    pids = [int(x) for x in re.search(r"\(pid ([\d,]+),", p.stdout).group(1).split(",")]
    try:
        yield Material(str(certs)), pids, data
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            _gone(pid)


def test_members_flag_is_checked(tmp_path):
    for bad in ("2", "0", "x", "11"):
        p = subprocess.run(EM + ["cluster", "init", "--members", bad, "--data-dir",
                                 str(tmp_path / "d"), "--cluster-dir", str(tmp_path / "c")],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and "--members" in p.stderr and \
            p.stderr.count("\n") == 1, p.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "c").exists()
    p = subprocess.run(EM + ["cluster", "init", "--endpoints",
                             "https://127.0.0.1:9,https://127.0.0.1:11",
                             "--cluster-dir", str(tmp_path / "c")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "no member answers" in p.stderr, p.stderr


def test_three_members_lose_one_and_keep_placing(three):
    material, pids, data = three
    urls = material.info["endpoints"]
    assert len(urls) == 3 and len(set(urls)) == 3 and len(pids) == 3
    assert all((data / f"member-{i}" / "member").is_dir() for i in (1, 2, 3))
    cluster = Cluster(urls, prefix="/pl3/", material=material)
    log = []
    cmd = Commander(cluster, "c1", {"lease_ttl": 3, "ack_timeout": 3}, log.append)
    workers = [Worker(Cluster(urls, prefix="/pl3/", material=material), f"w{i}",
                      {"lease_ttl": 3, "cpu": 2}, log.append) for i in range(2)]
    nodes = [cmd] + workers
    for n in nodes:
        threading.Thread(target=n.run, daemon=True).start()
    try:
        for i in range(5):
            tasks.submit(cluster, {"kind": "sleep", "seconds": 0.05, "id": f"a{i}",
                                   "demand": {"cpu": 0.5}})
        assert wait_for(lambda: len(cluster.items("results")) == 5, 60), log
        # every client speaks to the first member: kill it
        os.kill(pids[0], signal.SIGKILL)
        assert _gone(pids[0])
        # a write waits for the survivors to elect a raft leader (it may time out
        # meanwhile: the test submits again, as the nodes retry)
        assert wait_for(lambda: _put(cluster), 30)
        for i in range(5):
            tasks.submit(cluster, {"kind": "sleep", "seconds": 0.05, "id": f"b{i}",
                                   "demand": {"cpu": 0.5}})
        assert wait_for(lambda: len(cluster.items("results")) == 10, 60), log
        assert wait_for(lambda: all(s["state"] == "done"
                                    for s in cluster.items("status").values()), 30)
        assert cluster.client.session.base != urls[0]
        # the CLI, from cluster.json, fails over too
        m = subprocess.run(EM + ["cluster", "members", "--json", "--cluster-dir",
                                 material.dir], capture_output=True, text=True, timeout=60)
        assert m.returncode == 0, m.stderr
        assert {r["name"] for r in json.loads(m.stdout)} == {"c1", "w0", "w1"}
        # init --endpoints: use the members that run (this node's clients then
        # speak to those only)
        p = subprocess.run(EM + ["cluster", "init", "--endpoints", ",".join(urls[1:]),
                                 "--cluster-dir", material.dir],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "already answers" in p.stdout, p.stderr
        assert Material(material.dir).info["endpoints"] == urls[1:]
    finally:
        for n in nodes:
            n.stop()
        cmd.resign()


def test_a_node_joining_does_not_break_the_others_requests(secure_etcd):
    """Adding a node's etcd user bumps etcd's auth revision, and etcd refuses
    a request checked before the change and applied after it (400 "revision
    of auth store is old"): the client logs in again and sends it again
    instead of failing (a worker died of it when the next node joined)."""
    from emergence.cluster import bootstrap
    creds = secure_etcd.issue("pl-early", ["worker"])
    early = Cluster(secure_etcd.url, prefix=secure_etcd.prefix, material=creds)
    errors, done = [], threading.Event()

    def busy():
        n = 0
        while not done.is_set():
            try:
                early.put({"n": n}, "members", "pl-early")
                early.get("members", "pl-early")
            except Exception as e:
                errors.append(f"{e!r} {getattr(e, 'detail_text', '')}")
            n += 1
    threads = [threading.Thread(target=busy) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(15):
            bootstrap.issue(secure_etcd.material.dir, f"pl-late{i}", ["worker"])
    finally:
        done.set()
        for t in threads:
            t.join()
    assert errors == [], errors[:3]
