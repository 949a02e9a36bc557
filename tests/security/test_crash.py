"""kill -9 at every step of create, start and delete (and of `run` while its
container runs): afterwards `state` answers truthfully without a traceback,
`delete --force` clears everything (cgroup, mounts, state dir, processes, and a
Relay network's veth and lease), and the same id is usable again.

The steps are reached through the runtime's test seam EMERGENCE_CRASHPOINT=VERB:STEP
(runtime/state.py: the process SIGKILLs itself right after that step), on the
cold path only: the planner socket is turned off for these commands.
"""

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import Runtime, alive, base_config, cold_env, emergence_command, leftovers

pytestmark = pytest.mark.slow

CREATE_STEPS = {  # step -> what `state` must say after the kill
    "create:hidden": None,  # not yet under its name: "does not exist", and it does not
    "create:claimed": {"stopped"},
    "create:config": {"stopped"},
    "create:cgroup": {"stopped"},
    "create:fifo": {"stopped"},
    "create:spawned": {"stopped"},
    "launch:pid": {"stopped"},  # the launcher said the init's pid, before it is ready
    "create:ready": {"stopped"},
    "create:created": {"created"},
}
START_STEPS = {
    "start:locked": {"created"},
    # the init was released; it wrote "0" and ran, or found nobody to read it and quit
    "start:released": {"running", "stopped"},
    "start:said": {"running"},
    "start:unlinked": {"running"},
}
DELETE_STEPS = ("delete:killed", "delete:cgroup", "delete:hooks", "delete:files")


def running_shim(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe").startswith("/memfd:emergence-shim")
    except OSError:
        return False


class Matrix:
    """One bundle (sleep 300), the checks every step shares."""

    def __init__(self, rt):
        self.rt = rt
        self.bundle = rt.bundle(["sleep", "300"])

    def em(self, *args, step=None, **kw):
        return self.rt(*args, env=cold_env(step), **kw)

    def crash(self, step, *args):
        p = self.em(*args, step=step)
        assert p.returncode == -signal.SIGKILL, (step, p.returncode, p.stderr)
        return p

    def state(self, cid):
        p = self.em("state", cid)
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
        return json.loads(p.stdout)

    def check_truth(self, step, cid, allowed):
        """STATE's answer is allowed for STEP, and what the kernel says agrees: a
        created init still runs the shim, a running one has exec'd the process."""
        s = self.state(cid)
        assert s["status"] in allowed, (step, s)
        if s["status"] in ("created", "running"):
            assert s["pid"] and alive(s["pid"]), (step, s)
            assert running_shim(s["pid"]) == (s["status"] == "created"), (step, s)
        return s

    def clear(self, step, cid, pids=()):
        p = self.em("delete", "--force", cid)
        assert p.returncode == 0, (step, p.stderr)
        assert not os.path.exists(os.path.join(self.rt.root, cid)), step
        assert not os.path.exists(os.path.join(self.rt.root, f".claim.{cid}")), step
        assert not leftovers(cid), (step, leftovers(cid))
        for pid in pids:
            assert not alive(pid), (step, pid)
        assert self.em("state", cid).returncode != 0

    def reuse(self, step, cid):
        """The id works again: create, start, delete."""
        self.em("create", "--bundle", self.bundle, cid, check=True)
        self.em("start", cid, check=True)
        s = self.state(cid)
        assert s["status"] == "running", (step, s)
        self.em("delete", "--force", cid, check=True)
        assert not leftovers(cid) and not os.path.exists(os.path.join(self.rt.root, cid))


@pytest.fixture
def matrix(rt):
    return Matrix(rt)


def test_kill_9_at_every_step_of_create(matrix):
    for step, allowed in CREATE_STEPS.items():
        cid = matrix.rt.new_id("cc")
        matrix.crash(step, "create", "--bundle", matrix.bundle, cid)
        if allowed is None:
            p = matrix.em("state", cid)
            assert p.returncode == 1 and p.stderr.strip().endswith("does not exist"), p.stderr
            assert matrix.em("list", "-q").stdout == ""
            matrix.clear(step, cid)
            assert os.listdir(matrix.rt.root) == [], step  # its hidden claim went too
            matrix.crash(step, "create", "--bundle", matrix.bundle, cid)
            matrix.reuse(step, cid)  # a create takes the id over from a dead claim
            continue
        s = matrix.check_truth(step, cid, allowed)
        # the id is taken until deleted, with one line that says so
        again = matrix.em("create", "--bundle", matrix.bundle, cid)
        assert again.returncode != 0 and "already exists" in again.stderr, step
        matrix.clear(step, cid, [s["pid"]] if s["pid"] else [])
        matrix.reuse(step, cid)


def test_kill_9_at_every_step_of_start(matrix):
    for step, allowed in START_STEPS.items():
        cid = matrix.rt.new_id("cs")
        matrix.em("create", "--bundle", matrix.bundle, cid, check=True)
        pid = matrix.state(cid)["pid"]
        matrix.crash(step, "start", cid)
        s = matrix.check_truth(step, cid, allowed)
        if s["status"] == "stopped":
            assert not alive(pid), step
        if s["status"] == "running":  # a start that died after the release: not startable
            again = matrix.em("start", cid)
            assert again.returncode != 0 and "is running" in again.stderr, step
        matrix.clear(step, cid, [pid])
        matrix.reuse(step, cid)


def test_kill_9_at_every_step_of_delete(matrix):
    for step in DELETE_STEPS:
        cid = matrix.rt.new_id("cd")
        matrix.em("run", "--detach", "--bundle", matrix.bundle, cid, check=True)
        pid = matrix.state(cid)["pid"]
        matrix.crash(step, "delete", "--force", cid)
        matrix.check_truth(step, cid, {"stopped"})
        assert not alive(pid), step
        matrix.clear(step, cid, [pid])
        matrix.reuse(step, cid)


def test_kill_9_of_run_while_the_container_runs(matrix):
    cid = matrix.rt.new_id("cr")
    cmd = emergence_command() + ["--root", matrix.rt.root, "run", "--bundle", matrix.bundle, cid]
    p = subprocess.Popen(cmd, env=cold_env(), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        s = wait_for(lambda: _status(matrix, cid) == "running", "the container runs")
        p.kill()
        p.wait(10)
        s = matrix.check_truth("run", cid, {"running"})
        matrix.clear("run", cid, [s["pid"]])
        matrix.reuse("run", cid)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _status(matrix, cid):
    p = matrix.em("state", cid)
    return json.loads(p.stdout)["status"] if p.returncode == 0 else None


def wait_for(cond, what, timeout=20):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)
    return True


# -- with a Relay network: the createRuntime hook attached it, poststop detaches it --

@pytest.fixture
def net_host(tmp_path):
    """A netns playing the host, with a Relay network in it (all removed after)."""
    name = f"rl-crash-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name, str(tmp_path / "relay")
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_kill_9_with_a_network_leaves_no_veth_or_lease(rt, net_host):
    from emergence.relay.ipam import IPAM
    host, relay_state = net_host
    ns = ["nsenter", f"--net=/var/run/netns/{host}"]
    extra = {"EMERGENCE_RELAY_STATE": relay_state}

    in_host = Runtime(rt.root, rt.tmp, rt.rootfs)
    in_host.cmd = ns + in_host.cmd  # output to files: a created init keeps create's stdio

    def em(*args, step=None):
        return in_host(*args, env=cold_env(step, extra))

    def clean(what, cid):
        p = em("delete", "--force", cid)
        assert p.returncode == 0, (what, p.stderr)
        assert IPAM(relay_state).holders("rlcrash") == {}, what
        g = json.loads(em("net", "show").stdout)
        assert g["attachments"] == [] and g["port_forwards"] == [], what
        veths = subprocess.run(["ip", "-n", host, "-o", "link", "show", "type", "veth"],
                               capture_output=True, text=True).stdout
        assert veths == "", (what, veths)
        assert not leftovers(cid) and not os.path.exists(os.path.join(rt.root, cid)), what

    assert em("net", "create", "rlcrash", "--subnet", "10.94.0.0/24", "--bridge", "rlcrash0",
              "--veth-prefix", "rc").returncode == 0
    b = rt.tmp / "netbundle"
    b.mkdir()
    (b / "config.json").write_text(json.dumps(base_config(["sleep", "300"], rt.rootfs)))
    try:
        for step in ("create:hooks", "create:ready", "create:created"):
            cid = rt.new_id("cn")
            p = em("create", "--bundle", str(b), "--net", "rlcrash", "-p", "8086:80", cid,
                   step=step)
            assert p.returncode == -signal.SIGKILL, (step, p.stderr)
            assert IPAM(relay_state).holders("rlcrash") != {}, step  # the hook attached it
            s = json.loads(em("state", cid).stdout)
            assert s["status"] == ("created" if step == "create:created" else "stopped"), s
            clean(step, cid)
        # kill -9 of delete after the cgroup went, before the poststop hook detached it
        cid = rt.new_id("cn")
        p = em("run", "--detach", "--bundle", str(b), "--net", "rlcrash", cid)
        assert p.returncode == 0, p.stderr
        p = em("delete", "--force", cid, step="delete:cgroup")
        assert p.returncode == -signal.SIGKILL, p.stderr
        assert json.loads(em("state", cid).stdout)["status"] == "stopped"
        clean("delete:cgroup", cid)
        # kill -9 of `run --net` while the container runs
        cid = rt.new_id("cn")
        run = subprocess.Popen(ns + emergence_command() + ["--root", rt.root, "run", "--bundle",
                                                           str(b), "--net", "rlcrash", cid],
                               env=cold_env(None, extra), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: em("state", cid).stdout.count('"running"') == 1, "it runs")
            run.kill()
            run.wait(10)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        assert IPAM(relay_state).holders("rlcrash") != {}
        clean("run --net", cid)
        # and the id works again, network and all
        p = em("run", "--detach", "--bundle", str(b), "--net", "rlcrash", cid)
        assert p.returncode == 0, p.stderr
        assert IPAM(relay_state).holders("rlcrash") != {}
        clean("reuse", cid)
    finally:
        em("net", "rm", "rlcrash")


def test_a_directory_with_only_config_json_is_cleared_and_others_are_left(matrix):
    """What a killed create of an older version left (the id's directory holding
    only config.json) is a stopped container that delete removes; a directory
    that is not a container's (the node's run dir sits in the default root) is
    not listed and not removed."""
    rt = matrix.rt
    cid = rt.new_id("co")
    rt("create", "--bundle", matrix.bundle, rt.new_id("co"), check=True)  # makes the root
    os.mkdir(os.path.join(rt.root, cid), 0o700)
    with open(os.path.join(rt.bundle(["true"]), "config.json")) as src, \
            open(os.path.join(rt.root, cid, "config.json"), "w") as dst:
        dst.write(src.read())
    assert matrix.state(cid)["status"] == "stopped"
    matrix.clear("config.json only", cid)
    matrix.reuse("config.json only", cid)
    node = os.path.join(rt.root, "node")
    os.mkdir(node)
    open(os.path.join(node, "planner.sock"), "w").close()
    assert "node" not in matrix.em("list", "-q").stdout.split()
    assert matrix.em("state", "node").returncode == 1
    assert matrix.em("delete", "--force", "node").returncode == 0
    assert os.listdir(node) == ["planner.sock"]


def test_a_create_at_work_is_creating_not_stopped(matrix, tmp_path):
    """`stopped` is for a create that died: one still at work (here, held in a
    createRuntime hook) holds its claim and is `creating` (other commands wait
    for it)."""
    rt = matrix.rt
    go = tmp_path / "go"

    def hold(c):
        c["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": [
            "sh", "-c", f"while [ ! -e {go} ]; do sleep 0.02; done"]}]}
    b = rt.bundle(["sleep", "300"], edit=hold)
    cid = rt.new_id("cw")
    p = subprocess.Popen(emergence_command() + ["--root", rt.root, "create", "--bundle", b, cid],
                         env=cold_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _status(matrix, cid) is not None, "the claim exists")
        assert _status(matrix, cid) == "creating"
        listed = json.loads(matrix.em("list", "--format", "json").stdout)
        assert [(c["id"], c["status"]) for c in listed] == [(cid, "creating")]
        go.touch()
        assert p.wait(30) == 0
    finally:
        go.touch()
        if p.poll() is None:
            p.kill()
            p.wait()
    assert _status(matrix, cid) == "created"
    matrix.clear("create at work", cid)
