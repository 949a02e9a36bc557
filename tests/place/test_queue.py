"""The leader's queue is fair: a task that lost its host goes before tasks
submitted after it, even while new ones keep coming and the cluster is full.
Before, results were marked done in the middle of the pass, so the room a
finished task freed went to the next newer task in submit order, and a
re-queued task (older than the one that finished) waited for ever."""

import threading

from emergence.place import tasks
from emergence.place.commander import Commander, queue_order
from emergence.place.worker import Worker

from .conftest import wait_for


def test_queue_order_puts_requeued_first_then_age():
    new_old = ("a", {"submitted": 1}, {"state": "pending"}, None)
    new_young = ("b", {"submitted": 5}, {"state": "pending"}, None)
    moving = ("c", {"submitted": 9}, {"state": "assigned"}, "its lease expired (node gone)")
    waiting = ("d", {"submitted": 7}, {"state": "pending", "requeued": "no ack"}, None)
    got = sorted([new_young, moving, new_old, waiting], key=queue_order)
    assert [e[0] for e in got] == ["d", "c", "a", "b"]


def test_a_requeued_task_is_not_starved_by_new_submissions(cluster):
    log = []
    cmd = Commander(cluster, "q-c", {"lease_ttl": 2, "ack_timeout": 2, "interval": 0.1},
                    log.append)
    w1 = Worker(cluster, "q-w1", {"lease_ttl": 2, "cpu": 1}, log.append)
    w2 = Worker(cluster, "q-w2", {"lease_ttl": 2, "cpu": 1}, log.append)
    for n in (cmd, w1, w2):
        threading.Thread(target=n.run, daemon=True).start()
    stop_stream = threading.Event()
    try:
        assert wait_for(lambda: len(cluster.items("members")) == 2)
        tasks.submit(cluster, {"kind": "sleep", "seconds": 60, "id": "q-a",
                               "demand": {"cpu": 1}, "timeout": 120})
        assert wait_for(lambda: (cluster.get("status", "q-a") or {}).get("state") == "assigned")
        first = cluster.get("status", "q-a")["host"]
        dead, alive = (w1, w2) if first == "q-w1" else (w2, w1)
        tasks.submit(cluster, {"kind": "sleep", "seconds": 0.6, "id": "q-b",
                               "demand": {"cpu": 1}, "timeout": 120})
        assert wait_for(lambda: (cluster.get("status", "q-b") or {}).get("host") == alive.name)
        # the host of q-a dies: q-a must move, but the only other host is busy
        dead.stop()
        dead.lease.revoke()
        assert wait_for(lambda: (cluster.get("status", "q-a") or {}).get("requeued")
                     or (cluster.get("status", "q-a") or {}).get("attempt", 1) > 1), log

        submitted = []

        def stream():  # a new one-slot task every 0.2 s: always one waiting
            i = 0
            while not stop_stream.is_set():
                tid = f"q-n{i:02d}"
                tasks.submit(cluster, {"kind": "sleep", "seconds": 0.6, "id": tid,
                                       "demand": {"cpu": 1}, "timeout": 120})
                submitted.append(tid)
                i += 1
                stop_stream.wait(0.2)
        threading.Thread(target=stream, daemon=True).start()
        moved = wait_for(lambda: (cluster.get("status", "q-a") or {}).get("host") == alive.name,
                      timeout=8)
        stop_stream.set()
        status = cluster.items("status")
        ran_before = [t for t in submitted if status.get(t, {}).get("attempt", 0) >= 1]
        assert moved, f"q-a starved: {status.get('q-a')}; new tasks placed meanwhile: " \
                      f"{ran_before}"
        # it went to the first room that came free: no new task got there before it
        a_at = status["q-a"]["history"][-1]["at"]
        early = [t for t in ran_before if status[t]["history"][0]["at"] < a_at]
        assert early == [], (early, status["q-a"])
    finally:
        stop_stream.set()
        for n in (cmd, w1, w2):
            n.stop()
        cmd.resign()
