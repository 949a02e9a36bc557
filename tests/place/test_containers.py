"""Tasks that are real containers: a worker runs a busybox bundle with the
installed `emergence run`, the result carries its output, and a late
duplicate's result is discarded and its container removed."""

import os
import threading
import time

from emergence.place import tasks
from emergence.place.commander import Commander
from emergence.place.worker import Worker


def test_bundle_tasks_run_in_containers(cluster, rt):
    logs = []
    cmd = Commander(cluster, "pl-c", {"lease_ttl": 2}, logs.append)
    # the worker's policy lets bundles come from the test's dirs (by default: none)
    w = Worker(cluster, "pl-w", {"lease_ttl": 2, "cpu": 2, "root": rt.root,
                                 "policy": {"bundles": [str(rt.tmp), rt.rootfs]}}, logs.append)
    for n in (cmd, w):
        threading.Thread(target=n.run, daemon=True).start()
    try:
        ok = rt.bundle(("sh", "-c", "echo hello-pl; echo err >&2"))
        bad = rt.bundle(("sh", "-c", "exit 3"))
        tasks.submit(cluster, {"kind": "bundle", "bundle": ok, "id": "ok"})
        tasks.submit(cluster, {"kind": "bundle", "bundle": bad, "id": "bad"})
        rt.ids.update({"pl-ok-1", "pl-bad-1"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(cluster.items("results")) < 2:
            time.sleep(0.1)
        res = cluster.items("results")
        assert res["ok"]["exit"] == 0 and "hello-pl" in res["ok"]["output"], res
        assert "err" in res["ok"]["output"]
        assert res["bad"]["exit"] == 3
        # the runtime removed each container after it ran
        assert not os.path.exists(os.path.join(rt.root, "pl-ok-1"))

        # demand learned from runs: measured CPU (rusage of the run) into the EWMA
        spin = rt.bundle(("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"))
        idle = rt.bundle(("sleep", "1"))
        tasks.submit(cluster, {"kind": "bundle", "bundle": idle, "id": "idle"})
        rt.ids.add("pl-idle-1")
        for k in range(2):
            tasks.submit(cluster, {"kind": "bundle", "bundle": spin, "id": f"spin{k}"})
            rt.ids.add(f"pl-spin{k}-1")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
                (cluster.get("estimates", f"bundle:{spin}") or {}).get("runs", 0) < 2
                or cluster.get("results", "idle") is None):
            time.sleep(0.1)
        est = cluster.get("estimates", f"bundle:{spin}")
        assert est["runs"] == 2, est
        assert 0 < est["usage"]["cpu"] <= 2.5 and est["usage"]["memory"] > 0, est
        # CPU seconds, unlike a rate, do not depend on the machine's load
        res = cluster.items("results")
        assert res["spin0"]["cpu_seconds"] > res["idle"]["cpu_seconds"] + 0.2, res
        from emergence.place.commander import task_demand
        v = task_demand({"kind": "bundle", "bundle": spin}, cluster.snapshot())
        assert v["cpu"] == est["usage"]["cpu"]

        # a late duplicate: another host's result is already there
        assert cluster.first_result("dup", {"host": "elsewhere", "attempt": 1})
        slow = rt.bundle(("sh", "-c", "echo late"))
        rt.ids.add("pl-dup-2")
        w._run_one("dup", 2, {"kind": "bundle", "bundle": slow})
        assert cluster.get("results", "dup") == {"host": "elsewhere", "attempt": 1}
        assert w.counts["discarded"] == 1
        assert any("duplicate: dup attempt 2 on pl-w" in m for m in logs)
        assert not os.path.exists(os.path.join(rt.root, "pl-dup-2"))

        # a duplicate still running when the first result lands is removed at once
        long = rt.bundle(("sleep", "60"))
        rt.ids.add("pl-dup2-2")
        t = threading.Thread(target=w._run_one, args=("dup2", 2, {"kind": "bundle",
                                                                  "bundle": long}))
        t0 = time.monotonic()
        t.start()
        state = os.path.join(rt.root, "pl-dup2-2")
        while not os.path.exists(state) and time.monotonic() - t0 < 20:
            time.sleep(0.05)
        assert os.path.exists(state)
        assert cluster.first_result("dup2", {"host": "elsewhere", "attempt": 1})
        t.join(timeout=20)
        assert not t.is_alive() and time.monotonic() - t0 < 20
        assert not os.path.exists(state)
        assert w.counts["discarded"] == 2
        assert any("duplicate: dup2 attempt 2 on pl-w: elsewhere already has the result; "
                   "container pl-dup2-2 removed" in m for m in logs), logs
        assert cluster.get("results", "dup2") == {"host": "elsewhere", "attempt": 1}
    finally:
        cmd.stop()
        w.stop()
        cmd.resign()
