"""Nodes wake on etcd changes (a watch), not on a timer: with the fallback
intervals set to a minute, a task is still placed, run and recorded in
about a round trip, and stopping a node ends its watch at once."""

import threading
import time

from emergence.place import tasks
from emergence.place.commander import Commander
from emergence.place.worker import Worker


def test_a_task_is_placed_and_run_without_waiting_for_a_poll(cluster):
    log = []
    cmd = Commander(cluster, "wt-c", {"lease_ttl": 2, "interval": 60}, log.append)
    w = Worker(cluster, "wt-w", {"lease_ttl": 2, "interval": 60, "cpu": 2}, log.append)
    threads = [threading.Thread(target=n.run, daemon=True) for n in (cmd, w)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (cluster.items("members") and cmd.leading
                                                   and getattr(w, "watch", 1)
                                                   and getattr(cmd, "watch", 1)):
            time.sleep(0.05)
        time.sleep(0.5)  # both are now waiting on their watches, a minute from a poll
        for i in range(3):
            tasks.submit(cluster, {"kind": "sleep", "seconds": 0, "id": f"wt-{i}"})
            t0 = time.monotonic()
            while time.monotonic() - t0 < 15 and cluster.get("results", f"wt-{i}") is None:
                time.sleep(0.02)
            assert cluster.get("results", f"wt-{i}") is not None, log
        # the leader kept its lease although its interval is longer than the TTL
        assert cluster.get("leader") == "wt-c"
    finally:
        for n in (cmd, w):
            n.stop()
        t0 = time.monotonic()
        for t in threads:
            t.join(10)
        cmd.resign()
    assert not any(t.is_alive() for t in threads) and time.monotonic() - t0 < 5
    assert not cmd.watch.thread.is_alive() and not w.watch.thread.is_alive()
