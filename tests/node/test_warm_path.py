"""The C front-end with the node's warm planner up, down, killed mid-call and of
another build: every hot verb gives the cold path's result and leaves nothing.

Which path a call took is observed, not assumed: the front-end is copied
into a directory whose `emergence-py` (the cold path it executes) first
appends a line to a marker file.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import REPO, marked_front_end

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs real containers: needs root")


def _listening(path):
    """True once a planner accepts on PATH (a stale socket file refuses)."""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


@pytest.fixture
def front(tmp_path):
    return marked_front_end(tmp_path)


@pytest.fixture
def calls(rt, front):
    """Run a verb through the copied front-end: calls(env_socket, *args)."""
    exe, marks = front

    def call(sock, *args, wait=True, env=None, **kw):
        """SOCK: the planner's socket, "off", or None: the default path."""
        env = dict(os.environ, **(env or {}))
        env.pop("EMERGENCE_PLANNER_SOCKET", None)
        if sock is not None:
            env["EMERGENCE_PLANNER_SOCKET"] = sock
        cmd = [exe, "--root", rt.root, *args]
        if not wait:
            return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, **kw)
        # files, not pipes: a created container keeps create's stdio open
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            p = subprocess.run(cmd, env=env, stdout=out, stderr=err, text=True, timeout=60,
                               stdin=subprocess.DEVNULL, **kw)
            out.seek(0)
            err.seek(0)
            p.stdout, p.stderr = out.read(), err.read()
        return p

    def cold_count():
        return len(marks.read_text().splitlines())

    call.cold_count = cold_count
    return call


def _lifecycle(rt, call, sock):
    """create, state, start, state, kill, state, delete, and a run, an exec and an
    error, with what each printed and returned, ids and pids masked."""
    seen = []
    b = rt.bundle(["sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.05; done"])
    cid = rt.new_id("w")

    def step(*args):
        p = call(sock, *args)
        out = p.stdout.replace(cid, "ID")
        try:
            doc = json.loads(out)
            doc.pop("pid", None)
            doc.pop("created", None)
            doc["bundle"] = "B" if doc.get("bundle") else None
            out = json.dumps(doc, sort_keys=True)
        except ValueError:
            pass
        seen.append((args[0], p.returncode, out, p.stderr.replace(cid, "ID")))
        return p

    step("create", "--bundle", b, cid)
    step("state", cid)
    step("start", cid)
    time.sleep(0.2)
    step("state", cid)
    step("kill", cid, "TERM")
    for _ in range(100):
        if json.loads(call(sock, "state", cid).stdout)["status"] == "stopped":
            break
        time.sleep(0.05)
    step("state", cid)
    step("delete", cid)
    step("state", cid)  # an error: does not exist
    rb = rt.bundle(["sh", "-c", "echo out; echo err >&2; exit 3"])
    step("run", "--bundle", rb, rt.new_id("w"))
    xb = rt.bundle(["sleep", "30"])
    xid = rt.new_id("w")
    call(sock, "run", "--detach", "--bundle", xb, xid)
    p = call(sock, "exec", xid, "sh", "-c", "echo in $(hostname); exit 5")
    seen.append(("exec", p.returncode, p.stdout, p.stderr))
    call(sock, "delete", "--force", xid)
    return seen


def test_warm_and_cold_give_the_same_results(rt, node, calls):
    cold = _lifecycle(rt, calls, "off")
    n_cold = calls.cold_count()
    warm = _lifecycle(rt, calls, node.socket)
    assert calls.cold_count() == n_cold, "a call with the planner up took the cold path"
    assert n_cold >= len(cold)
    assert warm == cold
    codes = {verb: code for verb, code, _, _ in cold}
    assert codes["run"] == 3 and codes["exec"] == 5
    assert any(verb == "state" and code == 1 and "does not exist" in err
               for verb, code, _, err in cold)


def test_planner_down_means_cold(rt, calls, tmp_path):
    b = rt.bundle(["echo", "hi"])
    p = calls(str(tmp_path / "no-such.sock"), "run", "--bundle", b, rt.new_id("w"))
    assert (p.returncode, p.stdout) == (0, "hi\n")
    assert calls.cold_count() == 1


def test_a_planner_of_another_build_is_refused(rt, calls, tmp_path):
    """The source tree's planner is build "dev"; the installed front-end is not."""
    sock = str(tmp_path / "dev" / "planner.sock")
    env = dict(os.environ, PYTHONPATH=REPO)
    planner = subprocess.Popen([sys.executable, "-m", "emergence.node.planner", sock],
                               cwd=REPO, env=env)
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        b = rt.bundle(["echo", "hi"])
        p = calls(sock, "run", "--bundle", b, rt.new_id("w"))
        assert (p.returncode, p.stdout, p.stderr) == (0, "hi\n", "")
        assert calls.cold_count() == 1
    finally:
        planner.terminate()
        planner.wait()


def test_planner_killed_mid_call_loses_nothing(rt, node, calls):
    """Each call runs in its own worker: killing the planner does not end it,
    and the node starts a new planner for the next call."""
    b = rt.bundle(["sh", "-c", "sleep 1; echo done"])
    p = calls(node.socket, "run", "--bundle", b, rt.new_id("w"), wait=False)
    time.sleep(0.5)
    planner = node.status()["planner"]["pid"]
    os.kill(planner, signal.SIGKILL)
    out, err = p.communicate(timeout=30)
    assert (p.returncode, out, err) == (0, "done\n", "")
    for _ in range(100):
        st = node.status()["planner"]
        if st["running"] and st["pid"] != planner and _listening(node.socket):
            break
        time.sleep(0.1)
    before = calls.cold_count()
    b2 = rt.bundle(["echo", "again"])
    p = calls(node.socket, "run", "--bundle", b2, rt.new_id("w"))
    assert (p.returncode, p.stdout) == (0, "again\n")
    assert calls.cold_count() == before


def test_worker_killed_mid_call_takes_its_container_with_it(rt, node, calls):
    """A worker killed during `run`: the front-end says so in one line, ends
    what it spawned, and `delete` then removes the rest (the rt fixture checks
    that no state, cgroup or mount is left)."""
    b = rt.bundle(["sleep", "60"])
    cid = rt.new_id("w")
    p = calls(node.socket, "run", "--bundle", b, cid, wait=False)
    planner = node.status()["planner"]["pid"]
    workers = []
    for _ in range(100):
        state = calls("off", "state", cid)
        if state.returncode == 0 and json.loads(state.stdout)["status"] == "running":
            workers = [int(x) for x in subprocess.run(
                ["pgrep", "-P", str(planner)], capture_output=True, text=True).stdout.split()]
            if workers:
                break
        time.sleep(0.05)
    assert workers  # the call's worker, and the spare waiting for the next call
    init = json.loads(calls("off", "state", cid).stdout)["pid"]
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 1
    assert "died mid-call" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(f"/proc/{init}") or \
        open(f"/proc/{init}/stat").read().split()[2] == "Z"
    assert json.loads(calls("off", "state", cid).stdout)["status"] == "stopped"


def test_a_front_end_killed_mid_call_ends_its_worker(rt, node, calls, tmp_path):
    """kill -9 of a cold call's process ends the call; so it must on the warm
    path, or a long verb (here `events`, which never asks the front-end for
    anything) would run on in its worker for ever."""
    cid = rt.new_id("w")
    assert calls("off", "create", "--bundle", rt.bundle(["sleep", "60"]), cid).returncode == 0
    where = tmp_path / "caller"  # the worker takes the caller's cwd: how we find it
    where.mkdir()
    p = calls(node.socket, "events", "--interval", "1", cid, wait=False, cwd=str(where))

    def worker():
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and int(pid) != p.pid and \
                        os.readlink(f"/proc/{pid}/cwd") == str(where):
                    return int(pid)
            except OSError:
                continue
    assert _until(worker, 20)
    w = worker()
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert _until(lambda: not os.path.exists(f"/proc/{w}") or
                  open(f"/proc/{w}/stat").read().split()[2] == "Z", 10), \
        f"worker {w} outlived its front-end"
    assert calls("off", "delete", "--force", cid).returncode == 0


def test_parallel_warm_runs_do_not_fail_or_leak(rt, node, calls):
    b = rt.bundle(["true"])
    ids = [rt.new_id("p") for _ in range(20)]
    procs = [calls(node.socket, "run", "--bundle", b, cid, wait=False) for cid in ids]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [r for r in results if r != (0, "")] == []
    assert calls.cold_count() == 0
    assert os.listdir(rt.root) == []


def test_a_caller_in_its_own_mount_namespace_is_served_there(rt, node, calls, front, tmp_path):
    """An engine may run in a mount namespace of its own: the worker enters the
    caller's namespaces, so a bundle only the caller can see still runs warm."""
    exe, _ = front
    priv = tmp_path / "private"
    priv.mkdir()
    b = rt.bundle(["cat", "/etc/hostname-check"],
                  edit=lambda c: c["mounts"].append(
                      {"destination": "/etc/hostname-check", "type": "bind",
                       "source": str(priv / "b" / "marker"), "options": ["bind", "ro"]}))
    cid = rt.new_id("w")
    script = (f"mount -t tmpfs t {priv} && mkdir {priv}/b && echo only-here > {priv}/b/marker"
              f" && cp {b}/config.json {priv}/b/ && "
              f"exec {exe} --root {rt.root} run --bundle {priv}/b {cid}")
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       env=dict(os.environ, EMERGENCE_PLANNER_SOCKET=node.socket),
                       capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (0, "only-here\n", "")
    assert calls.cold_count() == 0
    assert not os.path.exists(priv / "b")  # and the host never saw it


def test_signal_resets_make_a_fresh_processs_dispositions():
    """A worker sets back what the planner (or its warm-up) changed: an ignored
    SIGUSR1 and a SIGTERM handler go to their defaults, SIGINT to Python's
    KeyboardInterrupt (changed here, as the planner changes it); SIGPIPE and
    SIGXFSZ stay ignored, as in any Python process (the cold path); glibc's
    own signals and the rest are left alone."""
    import subprocess
    import sys
    code = (
        "import signal\n"
        "from emergence.node.worker import _signal_resets\n"
        "signal.signal(signal.SIGUSR1, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGTERM, lambda *a: None)\n"
        "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
        "print(sorted((int(s), h if callable(h) else int(h)) for s, h in _signal_resets()))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[(2, <built-in function default_int_handler>), (10, 0), (15, 0)]"


# -- a planner started on demand -----------------------------------------------

IDLE = {"EMERGENCE_PLANNER_IDLE": "3"}


@pytest.fixture
def demand(rt, calls):
    """The default path with no node on this host: the state root's own planner
    (ROOT/.planner/BUILD), started on demand; killed at the end if still up."""
    if os.path.exists("/run/emergence/node/planner.sock"):
        pytest.skip("a node's planner is up on this host: the default path uses it")
    b = rt.bundle(["true"])
    calls("off", "run", "--bundle", b, rt.new_id("mk"))  # the state root exists now
    from emergence.node import BUILD_ID  # the installed build's: one dir per build
    d = os.path.join(rt.root, ".planner", BUILD_ID)
    yield d
    for pid in _planners(os.path.join(d, "planner.sock")):
        os.kill(pid, signal.SIGKILL)


def _planners(sock):
    """Pids of the planners (not their workers) serving SOCK."""
    mine = {}
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if b"--on-demand" in argv and sock.encode() in argv:
            mine[int(pid)] = ppid
    return sorted(pid for pid, ppid in mine.items() if ppid not in mine)


def _until(what, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    return what()


def test_a_planner_starts_on_demand_and_exits_when_idle(rt, calls, demand):
    """Verbs that need no planner start none; the first hot verb starts one (and
    runs cold), the next ones run warm; it exits after the idle time, and a
    container created through it lives on."""
    sock = os.path.join(demand, "planner.sock")
    for args in (["list"], ["features"], ["--version"], ["ps", "--help"]):
        assert calls(None, *args, env=IDLE).returncode == 0
    assert not os.path.exists(demand) and _planners(sock) == []
    before = calls.cold_count()
    p = calls(None, "state", "no-such-id", env=IDLE)
    assert p.returncode == 1 and "does not exist" in p.stderr
    assert calls.cold_count() == before + 1  # the call that started it ran cold
    assert _until(lambda: _listening(sock)), "no planner came up"
    assert len(_planners(sock)) == 1
    assert stat.S_IMODE(os.stat(demand).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    cold = calls.cold_count()
    b = rt.bundle(["echo", "warm"])
    p = calls(None, "run", "--bundle", b, rt.new_id("d"), env=IDLE)
    assert (p.returncode, p.stdout, p.stderr) == (0, "warm\n", "")
    cid = rt.new_id("d")
    calls(None, "create", "--bundle", rt.bundle(["sleep", "60"]), cid, env=IDLE)
    assert calls.cold_count() == cold, "a call with the planner up ran cold"
    planner = _planners(sock)[0]
    assert _until(lambda: not os.path.exists(f"/proc/{planner}"), 60), "it did not exit idle"
    assert not os.path.exists(sock) and not os.path.exists(os.path.join(demand, "planner.pid"))
    st = json.loads(calls("off", "state", cid).stdout)
    assert st["status"] == "created" and os.path.exists(f"/proc/{st['pid']}")
    assert calls("off", "start", cid).returncode == 0
    assert json.loads(calls("off", "state", cid).stdout)["status"] == "running"
    assert calls("off", "delete", "--force", cid).returncode == 0


def _spares(planner):
    with open(f"/proc/{planner}/task/{planner}/children") as f:
        return len(f.read().split())


def test_after_a_burst_the_planner_keeps_a_spare_for_each_call_of_it(rt, calls, demand):
    """A burst of calls leaves the pool one spare bigger per call (forked once
    the burst is over), so the next burst like it waits for no fork."""
    idle = {"EMERGENCE_PLANNER_IDLE": "30"}
    sock = os.path.join(demand, "planner.sock")
    calls(None, "state", "no-such-id", env=idle)
    assert _until(lambda: _listening(sock)), "no planner came up"
    planner = _planners(sock)[0]
    assert _until(lambda: _spares(planner) == 3)
    time.sleep(0.5)   # the probe of _listening was a call: its burst is over
    burst = [calls(None, "state", "no-such-id", env=idle, wait=False) for _ in range(6)]
    assert [p.wait(timeout=60) for p in burst] == [1] * 6
    # one burst of 6 (two, were the machine slow to start them: the larger sizes it)
    assert _until(lambda: _spares(planner) >= 3 + 3)
    time.sleep(1)
    assert 3 + 3 <= _spares(planner) <= 3 + 6
    for p in burst:
        p.stdout.close()
        p.stderr.close()
    os.kill(planner, signal.SIGTERM)


def test_after_a_long_quiet_the_spares_a_burst_added_go(rt, calls, demand):
    """Half the idle time after the last call (30 s of a node's planner's) the
    spares above planner_spares are asked to go -- by a connection from the
    planner, which a spare in accept knows by its pid and leaves on, so no
    call is lost to it -- and the next call still runs warm."""
    idle = {"EMERGENCE_PLANNER_IDLE": "8"}   # a trim after 4 s
    sock = os.path.join(demand, "planner.sock")
    calls(None, "state", "no-such-id", env=idle)
    assert _until(lambda: _listening(sock)), "no planner came up"
    planner = _planners(sock)[0]
    time.sleep(0.5)
    burst = [calls(None, "state", "no-such-id", env=idle, wait=False) for _ in range(6)]
    assert [p.wait(timeout=60) for p in burst] == [1] * 6
    for p in burst:
        p.stdout.close()
        p.stderr.close()
    assert _until(lambda: _spares(planner) >= 3 + 3, timeout=3)
    assert _until(lambda: _spares(planner) == 3, timeout=3.8 + 2), _spares(planner)
    assert _planners(sock) == [planner]      # the planner itself stays until idle
    cold = calls.cold_count()
    p = calls(None, "state", "no-such-id", env=idle)
    assert p.returncode == 1 and "does not exist" in p.stderr, p.stderr
    assert calls.cold_count() == cold        # warm: a spare took it
    os.kill(planner, signal.SIGTERM)


def test_a_planner_on_demand_sweeps_what_older_builds_left(rt, calls, demand):
    """Each upgrade's planner has its own ROOT/.planner/BUILD: the new one removes
    the dirs of builds whose planner is gone (their lock free), never one whose
    lock is held (a planner of another install, up or starting)."""
    import fcntl
    top = os.path.dirname(demand)
    os.makedirs(top, mode=0o700, exist_ok=True)
    gone, alive = os.path.join(top, "0" * 16), os.path.join(top, "1" * 16)
    for d in (gone, alive):
        os.mkdir(d, 0o700)
        for f in ("lock", "planner.log"):
            open(os.path.join(d, f), "w").close()
    held = os.open(os.path.join(alive, "lock"), os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        calls(None, "state", "no-such-id", env=IDLE)  # starts ours
        assert _until(lambda: _listening(os.path.join(demand, "planner.sock")))
        assert _until(lambda: not os.path.exists(gone))
        assert os.path.exists(os.path.join(alive, "lock")) and os.path.exists(demand)
    finally:
        os.close(held)


def test_opting_out_starts_no_planner(rt, calls, demand):
    sock = os.path.join(demand, "planner.sock")
    assert calls("off", "state", "no-such-id", env=IDLE).returncode == 1
    assert calls(None, "--no-planner", "state", "no-such-id", env=IDLE).returncode == 1
    time.sleep(1)
    assert _planners(sock) == [] and not os.path.exists(demand)


def test_calls_at_once_start_one_planner_and_a_killed_one_is_replaced(rt, calls, demand):
    """Ten calls at once start one planner (its lock); one killed with SIGKILL
    leaves its socket behind, and a later call starts the next one there."""
    sock = os.path.join(demand, "planner.sock")
    procs = [calls(None, "state", "no-such-id", wait=False, env=IDLE) for _ in range(10)]
    assert all(p.wait(60) == 1 for p in procs)
    assert _until(lambda: _listening(sock))
    time.sleep(1)
    first = _planners(sock)
    assert len(first) == 1
    os.kill(first[0], signal.SIGKILL)
    assert _until(lambda: not os.path.exists(f"/proc/{first[0]}"))
    assert os.path.exists(sock) and not _listening(sock)  # stale

    def replaced():
        calls(None, "state", "no-such-id", env=IDLE)
        return _listening(sock) and [p for p in _planners(sock) if p != first[0]]
    second = _until(replaced)
    assert second and len(_planners(sock)) == 1
    cold = calls.cold_count()
    p = calls(None, "run", "--bundle", rt.bundle(["echo", "again"]), rt.new_id("d"), env=IDLE)
    assert (p.returncode, p.stdout) == (0, "again\n")
    assert calls.cold_count() == cold


def test_no_planner_is_started_below_a_subreaper(rt, calls, front, demand):
    """An engine's conmon or containerd shim is a subreaper: a planner started
    below it would be its child until idle, keeping it alive after its
    container.  So a call made there runs cold and starts none."""
    exe, _ = front
    sock = os.path.join(demand, "planner.sock")
    env = dict(os.environ, **IDLE)
    env.pop("EMERGENCE_PLANNER_SOCKET", None)
    engine = ("import ctypes, subprocess, sys\n"
              "ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER\n"
              "r = subprocess.run(sys.argv[1:])\n"
              "import time; time.sleep(1.5)  # a planner would be ours by now\n"
              "sys.exit(r.returncode)\n")
    p = subprocess.run([sys.executable, "-c", engine, exe, "--root", rt.root, "state", "nope"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "does not exist" in p.stderr
    time.sleep(1)
    assert _planners(sock) == [] and not _listening(sock)
    # the engine's next call from outside a subreaper (podman's `start`, after
    # conmon's `create`) starts one at once, not DEMAND_RETRY (5 s) later
    t0 = time.monotonic()
    assert calls(None, "state", "nope", env=IDLE).returncode == 1
    assert _until(lambda: _listening(sock), 10)
    assert time.monotonic() - t0 < 4.5, "the subreaper's try kept the next one waiting"


PRELOAD_CHECK = r"""
import os, sys, time
root, bundle_true, bundle_sleep, cid = sys.argv[1:5]
sys.argv[0] = "emergence"
from emergence.node import planner
scratch = os.path.join(root + "-scratch")
os.makedirs(scratch, exist_ok=True)
planner._hot = planner.RUNTIME_MODULES  # the runtime's modules alone
planner.preload(scratch)
planner._warm_up(root + "-no-such-root", scratch)
from emergence import cli

def call(*args):
    # as a worker does: a fork of the warmed-up planner runs the verb
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        before = set(sys.modules)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        try:
            cli.main(["--root", root, *args])
        except SystemExit:
            pass
        new = sorted(m for m in set(sys.modules) - before if m.startswith("emergence"))
        os.write(w, " ".join(new).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.waitpid(pid, 0)
    return data.decode().split()

out = {}
out["run"] = call("run", "--bundle", bundle_true, cid + "r")
out["create"] = call("create", "--bundle", bundle_sleep, cid)
for args in (["state", cid], ["start", cid], ["exec", cid, "true"], ["kill", cid, "KILL"]):
    out[args[0]] = call(*args)
import contextlib, io, json
for _ in range(500):  # the init's SIGKILL is delivered asynchronously
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        cli.main(["--root", root, "state", cid])
    if json.loads(buf.getvalue())["status"] == "stopped":
        break
    time.sleep(0.01)
out["delete"] = call("delete", cid)
print(repr(out))
"""


def test_a_warm_worker_imports_nothing_for_a_hot_verb(rt):
    """The planner preloads every module a hot verb imports, lazy imports
    included: each one missed costs every call its import (~0.5 ms)."""
    cid = rt.new_id("pre")
    r = subprocess.run([sys.executable, "-c", PRELOAD_CHECK, rt.root, rt.bundle(["true"]),
                        rt.bundle(["sleep", "300"]), cid], cwd="/", capture_output=True,
                       text=True, timeout=120)  # (cwd: the installed package, not the tree's)
    assert r.returncode == 0, r.stderr
    out = eval(r.stdout.strip().splitlines()[-1])  # noqa: S307 (our own repr)
    assert out == {v: [] for v in out}, out


def test_the_cold_path_executes_python_without_a_shell(rt, tmp_path):
    """emergence-py is a sh/Python polyglot whose sh part only executes Python
    -sS on itself: the front-end does that itself (a shell's start spared on
    every cold call); a script in any other form (the marked front-end's) is
    still executed as it is, by the tests above."""
    import shutil
    if not shutil.which("strace"):
        pytest.skip("needs strace")
    from conftest import emergence_command
    exe = os.path.join(os.path.dirname(emergence_command()[0]), "emergence")
    log = tmp_path / "execs"
    p = subprocess.run(["strace", "-f", "-s", "512", "-e", "trace=execve", "-o", str(log), exe,
                        "--no-planner", "--root", rt.root, "state", "no-such-id"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "does not exist" in p.stderr, p.stderr
    execs = [line for line in log.read_text().splitlines() if "execve(" in line
             and "= 0" in line]
    assert len(execs) == 2, execs  # the front-end, then Python on emergence-py
    assert '"-sS"' in execs[1] and "emergence-py" in execs[1], execs


def _primers(logs):
    """Of strace -ff's logs (one per pid: openat, write, close_range), the pids
    that wrote "0" (themselves) to a cgroup.procs file, each with its calls."""
    import re
    out = {}
    for log in logs:
        seq = [line.split("(", 1) for line in log.read_text().splitlines() if "(" in line]
        opened = {m.group(2) for name, rest in seq if name == "openat"
                  for m in [re.search(r'"([^"]*/cgroup\.procs)".* = (\d+)$', rest)] if m}
        if any(name == "write" and rest.startswith(tuple(f"{fd}, \"0\", 1)" for fd in opened))
               for name, rest in seq):
            out[int(log.name.rsplit(".", 1)[1])] = [name for name, _ in seq]
    return out


@pytest.mark.parametrize("path", ["cold", "warm"])
def test_an_attaching_verb_primes_the_cgroup_lock_beside_its_call(rt, tmp_path, request, path):
    """run, create and exec move a process into cgroups: the kernel's first such
    move after a pause waits a whole RCU grace period, so the front-end starts
    that wait at once, in a grandchild that moves itself to where it is (the
    front-end's stdio closed first), on both paths; other verbs do not."""
    import shutil
    if not shutil.which("strace"):
        pytest.skip("needs strace")
    from conftest import emergence_command
    exe = os.path.join(os.path.dirname(emergence_command()[0]), "emergence")
    sock = request.getfixturevalue("node").socket if path == "warm" else "off"
    env = dict(os.environ, EMERGENCE_PLANNER_SOCKET=sock)
    b = rt.bundle(["true"])

    def traced(*args):
        log = tmp_path / args[0] / "pid"
        log.parent.mkdir()
        p = subprocess.run(["strace", "-ff", "-qq", "-e", "trace=openat,write,close_range",
                            "-e", "signal=none", "-o", str(log), exe, "--root", rt.root, *args],
                           env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return list(log.parent.iterdir())

    cid = rt.new_id()
    logs = traced("run", "--bundle", b, cid)
    primers = _primers(logs)
    assert len(primers) == 1, primers
    seq = next(iter(primers.values()))  # a process of its own, stdio closed first
    assert seq[0] == "close_range" and len(seq) <= 5, seq
    rt("delete", cid)
    assert _primers(traced("list")) == {}  # a verb that moves nothing


WARM_UP_CHECK = r"""
import socket, sys
from emergence import cli
from emergence.node import planner
top = sys.argv[1]
ran = []
cli.main = lambda argv: ran.append(argv[2])
lsock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
lsock.bind(top + "/s")
lsock.listen(4)
waiting = lambda: planner._call_waiting(lsock)
planner._warm_up(top + "/none", top, waiting)
print(ran)
ran.clear()
caller = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
caller.connect(top + "/s")  # a call in the backlog
planner._warm_up(top + "/none", top, waiting)
print(ran)
"""


def test_a_spare_leaves_its_warm_up_when_a_call_waits(tmp_path):
    """A spare warms up (the verbs run once, the modules' prefault) only while
    no call waits in the backlog; it checks before each step, so a call that
    found no spare in accept waits for one step at most, never the whole
    warm-up.  With none waiting it does every step."""
    out = subprocess.run([sys.executable, "-c", WARM_UP_CHECK, str(tmp_path)], cwd="/",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["['state', 'kill', 'start', 'delete', 'list']", "[]"]


def test_the_create_prefault_plans_without_making_anything(tmp_path):
    """A worker's prefault plans a create of the planner's scratch bundle: it
    must succeed (a failure would be skipped silently, and the first create of
    each worker would pay its faults again) and make no state, cgroup or
    process."""
    from emergence.runtime import create

    def children():
        me = os.getpid()
        with open(f"/proc/{me}/task/{me}/children") as f:
            return set(f.read().split())
    before = children()
    create.warm_up(str(tmp_path))
    create.prefault(str(tmp_path))    # raises on any failure
    assert sorted(os.listdir(tmp_path / "create")) == ["config.json", "rootfs"]
    assert os.listdir(tmp_path / "create" / "rootfs") == []
    from emergence.runtime.cgroups.hierarchy import discover
    assert not [h.mountpoint for h in discover()
                if os.path.exists(os.path.join(h.mountpoint, "emergence", "prefault"))]
    assert children() == before     # no shim, no launcher

