"""The fault test of the issue: 3 command nodes and 6 workers, each its own
`emergence cluster join` process on loopback, one etcd; 200 tasks while the
test kill -9s the leader and two busy workers and freezes a third (SIGSTOP
for longer than its lease, then SIGCONT: a silent host that comes back).
Every task must end with exactly one recorded result, a follower must take
the lead within the lease time, and the logs must show the re-dispatches,
the unresponsive mark and the re-rank of the host that came back.

Tasks are of kind `sleep` (0.5 s, no container): 200 containers on this
2-core machine would measure the runtime, not dispatch; test_containers.py
runs real ones through the same worker path."""

import os
import signal
import subprocess
import time

import pytest

from emergence.place import tasks

from .conftest import emergence_command, nodes_up, stop_all, wait_for

EM = emergence_command()
TTL = 2



@pytest.mark.slow
def test_leader_and_two_workers_die_all_200_finish_once(cluster, tmp_path):
    url, prefix = cluster.endpoint, cluster.prefix
    procs, logs = {}, {}

    def join(role, name, *extra):
        logs[name] = tmp_path / f"{name}.log"
        procs[name] = subprocess.Popen(
            EM + ["cluster", "join", "--etcd", url, "--prefix", prefix, "--role", role,
                  "--name", name, "--lease-ttl", str(TTL), *extra],
            stderr=open(logs[name], "w"), stdout=subprocess.DEVNULL)

    stopped = None
    try:
        for i in range(3):
            join("command", f"pl-c{i}", "--ack-timeout", "2")
        for i in range(6):
            join("worker", f"pl-w{i}", "--cpu", "2")
        assert wait_for(lambda: nodes_up(cluster) == 9, 30)
        for i in range(200):
            tasks.submit(cluster, {"kind": "sleep", "seconds": 0.5, "id": f"pl-t{i:03d}",
                                   "demand": {"cpu": 1}, "timeout": 8})
        assert wait_for(lambda: len(cluster.items("results")) >= 40, 60)

        # the faults, all at once, mid-run
        leader = cluster.get("leader")

        def busy_workers():  # hosts running a task whose result is not in
            snap = cluster.snapshot()
            res = snap.get("results", {})
            return sorted({s["host"] for tid, s in snap.get("status", {}).items()
                           if s["state"] == "assigned" and tid not in res})
        seen = []
        # The frozen worker must be frozen while it holds a task without a result
        # (else nothing marks it unresponsive, and there is no re-rank to see):
        # freeze first, then check once its last writes have landed, and thaw and
        # choose again if its task just ended.
        for _ in range(50):
            assert wait_for(lambda: len(seen.append(busy_workers()) or seen[-1]) >= 3, 20)
            busy = seen[-1]
            victims = busy[:3]
            procs[victims[2]].send_signal(signal.SIGSTOP)
            stopped = victims[2]
            # a result it sent just before the stop may still be on its way to
            # etcd (seen once on a loaded machine: the check passed, the result
            # landed after it, and the frozen worker held nothing to be marked for)
            time.sleep(0.5)  # (under its 2 s lease: a thawed one stays up)
            if stopped in busy_workers():
                break
            procs[stopped].send_signal(signal.SIGCONT)
            stopped = None
        text = lambda: "".join(p.read_text() for p in logs.values())  # noqa: E731
        from collections import Counter
        assert leader in procs and len(victims) == 3, (
            leader, busy, len(cluster.items("results")),
            Counter(x["state"] for x in cluster.items("status").values()),
            [x for x in cluster.items("status").values() if x["state"] != "done"][:3],
            text()[-3000:])
        # the two to kill: hosts holding a task without a result now (its 0.5 s
        # may have ended while the frozen one was chosen); after the kill, those
        # still holding one are orphaned: nothing but a re-dispatch finishes it
        for _ in range(200):
            now_busy = [w for w in busy_workers() if w != stopped]
            if len(now_busy) >= 2:
                break
            time.sleep(0.01)
        victims = now_busy[:2] + [stopped]
        t_kill = time.monotonic()
        procs[leader].send_signal(signal.SIGKILL)
        for w in victims[:2]:
            procs[w].send_signal(signal.SIGKILL)
        orphaned = [w for w in busy_workers() if w in victims[:2]]
        assert orphaned, "both victims' tasks ended before the kill"
        # within a few lease times (etcd expires leases late under load)
        assert wait_for(lambda: cluster.get("leader") not in (None, leader), TTL + 8)
        took = time.monotonic() - t_kill
        new_leader = cluster.get("leader")
        # frozen until the leader marks it unresponsive (its lease expired: etcd
        # expires leases late under load, so no fixed wait is long enough)
        assert wait_for(lambda: f"unresponsive: {stopped}" in text(), TTL + 20), text()
        procs[stopped].send_signal(signal.SIGCONT)
        stopped = None

        assert wait_for(lambda: len(cluster.items("results")) == 200, 90), \
            f"{len(cluster.items('results'))} of 200 finished"
        assert wait_for(lambda: sum(s["state"] == "done"
                                 for s in cluster.items("status").values()) == 200, 20)
        # re-rank of the host that came back (it heartbeats again, is probed, answers)
        assert wait_for(lambda: f"re-rank: {victims[2]} answered" in text(), 20), text()
    finally:
        if stopped:
            procs[stopped].send_signal(signal.SIGCONT)
        stop_all(procs.values())

    results = cluster.items("results")
    status = cluster.items("status")
    assert sorted(results) == [f"pl-t{i:03d}" for i in range(200)]
    assert all(r["exit"] == 0 for r in results.values())
    # the dead never report; every result's host/attempt is one the leader sent
    for tid, r in results.items():
        sent = {(h["host"], h["attempt"]) for h in status[tid]["history"]}
        assert (r["host"], r["attempt"]) in sent, (tid, r, status[tid])
        assert r["host"] not in victims[:2] or r["finished"] <= time.time()
    log = text()
    print(log)
    assert took <= TTL + 1.5, f"takeover took {took:.1f}s"
    assert f"leader: {new_leader} leads now" in logs[new_leader].read_text()
    redispatch = [ln for ln in log.splitlines() if "re-dispatch" in ln]
    for w in orphaned:
        assert any(f"{w} -> " in ln for ln in redispatch), (w, log)
    assert any(f"{w} -> " in ln and "lease expired" in ln
               for ln in redispatch for w in orphaned), log
    # the frozen one's tasks either moved or, when no other host had room before
    # it came back, were finished by it: one result either way (checked above)
    assert f"unresponsive: {victims[2]}" in log
    # no task was recorded twice: one result each, later finishers discarded
    tasks_rows = tasks.listing(cluster.snapshot())
    assert [r["state"] for r in tasks_rows] == ["done"] * 200
    assert sum(r["attempts"] > 1 for r in tasks_rows) >= 1
    assert cluster.items("assign") == {}
    assert all(p.returncode is not None for p in procs.values())
    assert not [n for n, p in procs.items() if p.poll() is None]
    os.sync()
