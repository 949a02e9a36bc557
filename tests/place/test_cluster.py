"""Command and worker nodes against a real etcd, in threads of this process:
placement, first result wins, re-dispatch after a silent host, leader
failover between two command nodes, and malformed specs refused."""

import threading
import time

import pytest

from emergence.errors import EmergenceError
from emergence.place import tasks
from emergence.place.commander import Commander
from emergence.place.worker import Worker

from .conftest import nodes_up, wait_for


class Logs(list):
    def __call__(self, msg):
        self.append(msg)



def _start(node):
    t = threading.Thread(target=node.run, daemon=True)
    t.start()
    return t


def _done(cluster, n):
    return len(cluster.items("results")) >= n


@pytest.fixture
def nodes():
    started = []
    yield started
    for n in started:
        n.stop()
    for n in started:
        if isinstance(n, Commander):
            n.resign()


def test_tasks_are_placed_run_once_and_recorded(cluster, nodes):
    log = Logs()
    cmd = Commander(cluster, "c1", {"lease_ttl": 2, "ack_timeout": 2}, log)
    workers = [Worker(cluster, f"w{i}", {"lease_ttl": 2, "cpu": 2}, log) for i in range(2)]
    nodes += [cmd] + workers
    for n in nodes:
        _start(n)
    ids = [tasks.submit(cluster, {"kind": "sleep", "seconds": 0.05, "id": f"t{i}",
                                  "demand": {"cpu": 0.5}}) for i in range(10)]
    assert wait_for(lambda: _done(cluster, 10)), log
    results = cluster.items("results")
    assert sorted(results) == sorted(ids)
    assert {r["host"] for r in results.values()} == {"w0", "w1"}  # spread, not piled
    assert all(r["exit"] == 0 for r in results.values())
    assert wait_for(lambda: all(s["state"] == "done" for s in cluster.items("status").values())
                 and len(cluster.items("status")) == 10)
    rows = tasks.listing(cluster.snapshot())
    assert [r["state"] for r in rows] == ["done"] * 10
    assert sum(w.counts["won"] for w in workers) == 10
    assert cluster.items("assign") == {}


def test_silent_host_is_skipped_and_reranked_when_it_answers(cluster, nodes):
    log = Logs()
    cmd = Commander(cluster, "c1", {"lease_ttl": 2, "ack_timeout": 1.0}, log)
    good = Worker(cluster, "good", {"lease_ttl": 2, "cpu": 4}, log)
    # a registered host whose task loop is stuck: it heartbeats, never acks
    stuck = Worker(cluster, "stuck", {"lease_ttl": 2, "cpu": 4}, log)
    stuck._poll = lambda: None
    nodes += [cmd, good, stuck]
    for n in nodes:
        _start(n)
    assert wait_for(lambda: nodes_up(cluster) == 3)
    for i in range(4):
        tasks.submit(cluster, {"kind": "sleep", "seconds": 0.01, "id": f"s{i}",
                               "demand": {"cpu": 1}})
    assert wait_for(lambda: _done(cluster, 4)), log
    assert all(r["host"] == "good" for r in cluster.items("results").values())
    assert any(m.startswith("re-dispatch") and "stuck -> good" in m
               and "no acknowledgement" in m for m in log), log
    assert any(m.startswith("unresponsive: stuck") for m in log)
    # it heartbeats, so it is probed, answers, and is ranked again
    assert wait_for(lambda: any(m.startswith("re-rank: stuck answered") for m in log)), log
    assert cluster.items("unresponsive") == {}


def test_first_result_wins_and_a_late_duplicate_is_discarded(cluster):
    assert cluster.first_result("x", {"host": "a"})
    assert not cluster.first_result("x", {"host": "b"})
    assert cluster.get("results", "x") == {"host": "a"}
    log = Logs()
    w = Worker(cluster, "late", {"lease_ttl": 2}, log)
    w.register()
    w._run_one("x", 2, {"kind": "sleep", "seconds": 0})
    assert w.counts == {"ran": 1, "won": 0, "discarded": 1, "skipped": 0, "refused": 0}
    assert any("duplicate: x attempt 2 on late" in m for m in log)
    assert cluster.get("results", "x") == {"host": "a"}
    w.lease.revoke()


def test_a_follower_takes_over_within_the_lease(cluster, nodes):
    log = Logs()
    a = Commander(cluster, "ca", {"lease_ttl": 2}, log)
    nodes.append(a)
    _start(a)
    assert wait_for(lambda: cluster.get("leader") == "ca")
    b = Commander(cluster, "cb", {"lease_ttl": 2}, log)
    nodes.append(b)
    _start(b)
    time.sleep(0.5)
    assert cluster.get("leader") == "ca" and not b.leading
    a.stop()  # it stops renewing, as a dead one would; its lease runs out
    t0 = time.monotonic()
    assert wait_for(lambda: cluster.get("leader") == "cb", timeout=6)
    assert time.monotonic() - t0 <= 2 + 1.0  # lease ttl + one pass and some slack
    # a deposed leader's guarded write changes nothing
    assert not cluster.guarded("ca", [({"x": 1}, "status", "zz")])
    assert cluster.get("status", "zz") is None


@pytest.mark.parametrize("spec,msg", [
    ({"kind": "image"}, "needs 'image'"),
    ({"kind": "warp"}, "is not one of"),
    ({"kind": "sleep", "demand": {"cpu": -1}}, "demand.cpu"),
    ({"kind": "sleep", "demand": {"gpu": 1}}, "unknown resource 'gpu'"),
    ({"kind": "sleep", "timeout": "soon"}, "'timeout' must be a number"),
    ({"kind": "sleep", "id": "../x"}, "task id"),
    ({"kind": "sleep", "near": [{"max_rtt": 1}]}, "needs 'to'"),
    ([1, 2], "JSON object"),
])
def test_malformed_specs_are_refused_in_one_line(spec, msg):
    with pytest.raises(EmergenceError, match=msg) as e:
        tasks.validate(spec)
    assert "\n" not in str(e.value)


def test_duplicate_task_id_is_refused(cluster):
    tasks.submit(cluster, {"kind": "sleep", "id": "same"})
    with pytest.raises(EmergenceError, match="already submitted"):
        tasks.submit(cluster, {"kind": "sleep", "id": "same"})
