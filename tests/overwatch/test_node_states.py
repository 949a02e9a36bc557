"""emergence_containers{state} after kill -9 of the runtime: node_metrics.States
counts each container as the runtime's `state` says, including a create that
died (a `creating` record whose claim nobody holds: stopped) and a `start` that
died after it released the init (the fifo is left, the init runs the process:
running), whether the scraper saw the container before the kill or not.

The kills come from the runtime's test seam EMERGENCE_CRASHPOINT=VERB:STEP (see
tests/security/test_crash.py), on the cold path."""

import collections
import json
import os
import signal
import subprocess
import time

from conftest import alive, cold_env, emergence_command

from emergence.overwatch.node_metrics import States


def test_killed_creates_and_starts_are_counted_as_state_says(rt, tmp_path):
    states = States(rt.root)  # a scraper that sees everything from the start
    b = rt.bundle(["sleep", "300"])
    ids = []

    def crash(step, *args):
        p = rt(*args, env=cold_env(step))
        assert p.returncode == -signal.SIGKILL, (step, p.returncode, p.stderr)

    def said():
        return collections.Counter(
            json.loads(rt("state", cid, check=True, env=cold_env()).stdout)["status"]
            for cid in ids)

    def counted(s=states):
        return {k: v for k, v in s.counts().items() if v}

    for step in ("create:claimed", "create:ready"):  # creates that died: stopped
        ids.append(rt.new_id("ow"))
        crash(step, "create", "--bundle", b, ids[-1])
    for step in ("start:said", "start:locked"):  # running (fifo left), created
        ids.append(rt.new_id("ow"))
        rt("create", "--bundle", b, ids[-1], check=True, env=cold_env())
        assert counted()["created"] >= 1  # seen before its start, so cached
        crash(step, "start", ids[-1])
    assert said() == {"stopped": 2, "running": 1, "created": 1}
    assert counted() == said()

    # a create at work (held in its createRuntime hook) is creating; killed, stopped
    marker = tmp_path / "hook.pid"
    held = rt.bundle(["sleep", "300"], edit=lambda c: c.update(hooks={"createRuntime": [{
        "path": "/bin/sh",
        "args": ["sh", "-c", f"echo $$ > {marker}.tmp && mv {marker}.tmp {marker} && "
                             "exec sleep 300"]}]}))
    ids.append(rt.new_id("ow"))
    p = subprocess.Popen(emergence_command() + ["--root", rt.root, "create", "--bundle", held,
                                                ids[-1]],
                         env=cold_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    hook = None
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert p.poll() is None and time.monotonic() < deadline, "the hook never ran"
            time.sleep(0.02)
        hook = int(marker.read_text())
        assert said()["creating"] == 1
        assert counted() == said()
        p.kill()
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if hook and alive(hook):
            os.kill(hook, signal.SIGKILL)
    assert said() == {"stopped": 3, "running": 1, "created": 1}
    assert counted() == said()
    fresh = States(rt.root)  # and one that reads them all for the first time
    assert counted(fresh) == said()
    fresh.close()
    for cid in ids:
        rt("delete", "--force", cid, check=True)
    assert counted() == {} and states.known == {}
    states.close()
