"""The warm path's trust, attacked from an unprivileged account: a planner
socket that user planted (the front-end refuses it before sending anything,
runs cold, the container works), a root-owned socket that user serves
(SO_PEERCRED), a stopped planner (a deadline, then cold, and nothing runs
twice), the node's control and planner sockets from that user, and run dirs
that are not the node's own (`node start` refuses them).
"""

import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

import pytest
from conftest import REPO, Node, emergence_command, marked_front_end

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs real containers: needs root")

# What a planted "planner" does: take the call, answer OK and EXIT 0 (a real
# attacker would send SPAWN with a program of theirs), and report, one JSON
# line per connection, every record it got and how many descriptors came with it.
PLANTED = r"""
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind(sys.argv[1])
s.listen(8)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(10)
    got = []
    try:
        while True:
            data, fds, _, _ = socket.recv_fds(c, 1 << 18, 250)
            got.append({"record": data.split(b"\0")[0].decode(errors="replace"), "fds": len(fds)})
            for fd in fds:
                os.close(fd)
            if not data:
                break
            if data.startswith(b"HELLO"):
                c.send(b"OK\0%d\0" % os.getpid())
                c.send(b"EXIT\0" + b"0\0")
    except OSError as e:
        got.append({"error": str(e)})
    print(json.dumps(got), flush=True)
    c.close()
"""


@pytest.fixture
def shared(tmp_path):
    """A directory root owns that the other user can reach (tmp_path is 0700)."""
    d = tempfile.mkdtemp(prefix="emx-planner-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def reachable_node(shared):
    """A node whose run dir the other user can reach but for its own mode
    (the usual one's is under a 0700 tmp_path)."""
    import pathlib
    n = Node(pathlib.Path(shared))
    p = n("start")
    assert p.returncode == 0, p.stderr
    yield n
    n("stop")


@pytest.fixture
def front(tmp_path):
    return marked_front_end(tmp_path)


def _serve_planted(user, sock_path):
    """The planted server, as USER, listening at SOCK_PATH; (process, read_report)."""
    p = subprocess.Popen(user.argv(["/usr/bin/python3", "-c", PLANTED, sock_path]),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd="/")
    ready, _, _ = select.select([p.stdout], [], [], 20)
    line = p.stdout.readline() if ready else ""
    if line.strip() != "listening":
        p.kill()
        raise AssertionError(f"the planted server did not start: {line} {p.stderr.read()}")

    def report():
        """The connections it saw: a list of lists of records."""
        p.kill()
        out, _ = p.communicate(timeout=10)
        return [json.loads(x) for x in out.splitlines() if x.strip()]
    return p, report


def _call(exe, sock, *args, timeout=60, env=None):
    env = dict(os.environ, EMERGENCE_PLANNER_SOCKET=sock, **(env or {}))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.run([exe, *args], env=env, stdin=subprocess.DEVNULL, stdout=out,
                           stderr=err, text=True, timeout=timeout)
        out.seek(0)
        err.seek(0)
        p.stdout, p.stderr = out.read(), err.read()
    return p


def _got_hello(connections):
    return [r for conn in connections for r in conn if r.get("record") == "HELLO" or r.get("fds")]


@pytest.mark.parametrize("how", ["owned-by-user", "world-writable"])
def test_a_planner_socket_planted_by_another_user_is_refused(rt, front, shared, other_user, how):
    """The user's socket in a run dir the user owns, or in root's dir of mode
    0777: the front-end refuses it before it connects, runs the call cold, the
    container works; the planted server never sees a HELLO or a descriptor."""
    exe, marks = front
    run_dir = os.path.join(shared, "run")
    os.mkdir(run_dir)
    if how == "owned-by-user":
        os.chown(run_dir, other_user.uid, other_user.gid)
        os.chmod(run_dir, 0o755)
    else:
        os.chmod(run_dir, 0o777)
    sock = os.path.join(run_dir, "planner.sock")
    server, report = _serve_planted(other_user, sock)
    b = rt.bundle(["echo", "hi"])
    p = _call(exe, sock, "--root", rt.root, "run", "--bundle", b, rt.new_id("planted"))
    got = report()
    assert _got_hello(got) == [], f"the planted planner got the call: {got}"
    assert got == []  # not even a connection
    assert (p.returncode, p.stdout) == (0, "hi\n")
    assert len(marks.read_text().splitlines()) == 1  # cold
    why = ("is owned by uid %d, not root" % other_user.uid if how == "owned-by-user"
           else "is writable by group or others (mode 0777)")
    assert p.stderr == (f"emergence: the planner socket's directory {run_dir} {why}; "
                        "running without the node\n")


@pytest.mark.parametrize("socket_owner", ["root", "user"])
def test_a_root_owned_socket_served_by_another_user_is_refused(rt, front, shared, other_user,
                                                               socket_owner):
    """The user binds and listens, then the socket and its directory become
    root's (as a careless admin or a race could leave them): owner and mode
    pass, and the server's SO_PEERCRED uid is what refuses it.  With the
    socket still the user's, the owner check already does."""
    exe, marks = front
    run_dir = os.path.join(shared, "run")
    os.mkdir(run_dir)
    os.chown(run_dir, other_user.uid, other_user.gid)
    sock = os.path.join(run_dir, "planner.sock")
    server, report = _serve_planted(other_user, sock)
    os.chown(run_dir, 0, 0)
    os.chmod(run_dir, 0o700)
    if socket_owner == "root":
        os.chown(sock, 0, 0)
    os.chmod(sock, 0o600)
    b = rt.bundle(["echo", "hi"])
    p = _call(exe, sock, "--root", rt.root, "run", "--bundle", b, rt.new_id("peer"))
    got = report()
    assert _got_hello(got) == [], f"the planted planner got the call: {got}"
    assert (p.returncode, p.stdout) == (0, "hi\n")
    assert len(marks.read_text().splitlines()) == 1
    if socket_owner == "root":
        assert got == [[{"record": "", "fds": 0}]]  # connected, then closed unspoken to
        assert p.stderr == (f"emergence: the planner at {sock} is served by uid "
                            f"{other_user.uid}, not root; running without the node\n")
    else:
        assert got == []
        assert p.stderr == (f"emergence: the planner socket {sock} is owned by uid "
                            f"{other_user.uid}, not root; running without the node\n")


def _planner_processes(node):
    """The planner and its workers (spares and busy), by pid."""
    planner = node.status()["planner"]["pid"]
    out = subprocess.run(["pgrep", "-P", str(planner)], capture_output=True, text=True).stdout
    return [planner, *map(int, out.split())]


def _stop_all(node):
    stopped = set()
    while True:  # the planner may have been forking a spare: until none is new
        pids = set(_planner_processes(node)) - stopped
        if not pids:
            return stopped
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        stopped |= pids
        time.sleep(0.05)


@pytest.mark.slow
def test_a_stopped_planner_costs_the_deadline_not_a_hang(rt, node, front, tmp_path):
    """Planner and workers stopped: `create` waits the deadline, says so once,
    runs cold, and the container works; after SIGCONT the call the planner
    then finds queued is dropped, not run a second time."""
    exe, marks = front
    runs = tmp_path / "create-runs"
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"echo x >> {runs}"]}
    b = rt.bundle(["sleep", "60"], edit=lambda c: c.setdefault("hooks", {})
                  .setdefault("createRuntime", []).append(hook))
    # the legitimate use, first: warm, no word on stderr
    warm = rt.new_id("warm")
    p = _call(exe, node.socket, "--root", rt.root, "create", "--bundle", b, warm)
    assert (p.returncode, p.stderr, marks.read_text()) == (0, "", "")
    rt("delete", "--force", warm, check=True)
    t0 = time.monotonic()
    rt("create", "--bundle", b, rt.new_id("ref"), check=True, env=dict(
        os.environ, EMERGENCE_PLANNER_SOCKET="off"))
    cold = time.monotonic() - t0
    runs.write_text("")

    cid = rt.new_id("stopped")
    stopped = _stop_all(node)
    try:
        t0 = time.monotonic()
        p = _call(exe, node.socket, "--root", rt.root, "create", "--bundle", b, cid,
                  env={"EMERGENCE_PLANNER_TIMEOUT": "1"}, timeout=60)
        took = time.monotonic() - t0
        assert p.returncode == 0, p.stderr
        assert p.stderr == (f"emergence: the node's planner at {node.socket} did not answer "
                            "within 1 s; running without the node\n")
        assert len(marks.read_text().splitlines()) == 1
        assert took < 1 + 3 * cold + 5, (took, cold)  # generous: a busy 2-core box
        rt("start", cid, check=True, env=dict(os.environ, EMERGENCE_PLANNER_SOCKET="off"))
        assert rt.state(cid)["status"] == "running"
        rt("delete", "--force", cid, check=True)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    # the planner takes the queued call (FIFO) before this one, and drops it
    p = _call(exe, node.socket, "--root", rt.root, "state", "no-such-id")
    assert "does not exist" in p.stderr and len(marks.read_text().splitlines()) == 1
    time.sleep(1)
    assert runs.read_text() == "x\n"  # created once: by the cold path
    assert not os.path.exists(os.path.join(rt.root, cid))


def _fields(*items):
    return b"".join(str(i).encode() + b"\0" for i in items)


def test_a_call_the_front_end_did_not_confirm_is_never_run(rt, node, running):
    """The protocol itself: a worker's OK, then the front-end goes (as when its
    deadline passed): the worker must drop the call.  Here the call is a
    `kill` of a running container, which must live on."""
    from emergence.node import BUILD_ID
    cid = running(["sleep", "60"])
    argv = ["emergence", "--root", rt.root, "kill", cid, "KILL"]
    env = [f"{k}={v}" for k, v in os.environ.items()]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(30)
    s.connect(node.socket)
    s.send(_fields("HELLO", BUILD_ID, "/", "", len(argv), *argv, len(env), *env))
    assert s.recv(4096).startswith(b"OK\0")
    s.close()  # no GO
    time.sleep(1.5)
    assert rt.state(cid)["status"] == "running"


def _ask_as(user, path, request, kind="SOCK_STREAM"):
    """USER connects to PATH and sends REQUEST; what came back, or the error."""
    code = f"""
import socket
s = socket.socket(socket.AF_UNIX, socket.{kind})
s.settimeout(10)
try:
    s.connect({path!r})
    try:
        s.send({request!r})
    except (BrokenPipeError, ConnectionResetError):
        pass  # answered and closed before we spoke: read what it said
    print(repr(s.recv(65536)))
except OSError as e:
    print(type(e).__name__)
"""
    r = user.python(code)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_the_control_socket_answers_root_only(reachable_node, other_user):
    node = reachable_node
    control = os.path.join(node.run_dir, "control.sock")
    # out of the user's reach: a 0700 run dir, a 0600 socket
    assert _ask_as(other_user, control, b"status\n") == "PermissionError"
    # `node status` and `node stop` as that user: one clear line each
    code = f"""
import sys
sys.path.insert(0, {REPO!r})
from emergence.errors import EmergenceError
from emergence.node import commands
for verb in (lambda: commands._status({node.run_dir!r}, False),
             lambda: commands._stop({node.run_dir!r})):
    try:
        verb()
        print("answered")
    except EmergenceError as e:
        print("emergence:", e)
"""
    r = other_user.python(code)
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and r.stderr == "", (r.stdout, r.stderr)
    assert "permission denied" in lines[0] and "run this as root" in lines[0]
    assert "permission denied" in lines[1] and "run this as root" in lines[1]
    # were the files open to them, the socket's own peer check still refuses
    os.chmod(node.run_dir, 0o711)
    os.chmod(control, 0o666)
    try:
        for request in (b"status\n", b"stop\n"):
            reply = _ask_as(other_user, control, request)
            assert reply == repr(json.dumps(
                {"error": f"the node answers root only, not uid {other_user.uid}"})
                .encode() + b"\n"), reply
    finally:
        os.chmod(control, 0o600)
        os.chmod(node.run_dir, 0o700)
    st = node.status()  # root: answered, and the node is still up
    assert st["running"] and st["planner"]["running"]


def test_the_planner_socket_serves_root_only(reachable_node, other_user):
    """The worker's own check (SO_PEERCRED root), with the files opened up."""
    node = reachable_node
    os.chmod(node.run_dir, 0o711)
    os.chmod(node.socket, 0o666)
    try:
        hello = _fields("HELLO", "x", "/", "", 2, "emergence", "list", 0)
        # closed without a word (a reset: it left the HELLO unread)
        assert _ask_as(other_user, node.socket, hello, "SOCK_SEQPACKET") in \
            ("b''", "ConnectionResetError")
    finally:
        os.chmod(node.socket, 0o600)
        os.chmod(node.run_dir, 0o700)


def test_only_the_planner_itself_can_ask_a_spare_to_go(node):
    """The planner sheds spares (Pool.trims) by connecting to its own socket: a
    spare that accepts a connection whose SO_PEERCRED pid is the planner's
    exits.  Anyone else's connection -- root's here, as no other user reaches
    the socket (test_the_planner_socket_serves_root_only) -- is a call: its
    worker waits for a HELLO, and no spare goes."""
    planner = node.status()["planner"]["pid"]

    def children():
        with open(f"/proc/{planner}/task/{planner}/children") as f:
            return len(f.read().split())
    for _ in range(200):
        if children() == 3:      # planner_spares
            break
        time.sleep(0.05)
    assert children() == 3
    held = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect(node.socket)
            held.append(s)
        time.sleep(1)
        # the two workers wait for these callers' HELLO, beside the spares forked
        # after them; had they left as asked, the pool would be back at 3
        assert children() >= 3 + 2
    finally:
        for s in held:
            s.close()
    assert node.status()["planner"]["pid"] == planner


def _node(run_dir, tmp_path, verb):
    return subprocess.run(emergence_command() + [
        "node", verb, "--node-run-dir", run_dir, "--node-state-dir", str(tmp_path / "st"),
        "--node-services", ""], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, EMERGENCE_PLANNER_SOCKET="off"))


@pytest.mark.parametrize("how", ["owned-by-user", "mode-0777", "symlink", "parent-of-user"])
def test_the_node_refuses_a_run_dir_not_its_own(tmp_path, other_user, how):
    run_dir = str(tmp_path / "run")
    if how == "parent-of-user":
        os.mkdir(tmp_path / "theirs")
        os.chown(tmp_path / "theirs", other_user.uid, other_user.gid)
        run_dir = str(tmp_path / "theirs" / "run")
    os.mkdir(run_dir)
    if how == "owned-by-user":
        os.chown(run_dir, other_user.uid, other_user.gid)
    if how == "mode-0777":
        os.chmod(run_dir, 0o777)
    given = run_dir
    if how == "symlink":
        given = str(tmp_path / "link")
        os.symlink(run_dir, given)
    before = os.lstat(run_dir)
    p = _node(given, tmp_path, "start")
    if p.returncode == 0:  # the old behaviour: started there
        _node(given, tmp_path, "stop")
    words = {"owned-by-user": f"is owned by uid {other_user.uid}, not root",
             "mode-0777": "is writable by group or others (mode 0777)",
             "symlink": "is a symlink",
             "parent-of-user": f"which uid {other_user.uid} owns"}[how]
    assert p.returncode == 1 and words in p.stderr, p.stderr
    assert len(p.stderr.splitlines()) == 1 and p.stdout == ""
    assert os.listdir(run_dir) == []  # no pid file, no socket
    after = os.lstat(run_dir)
    assert (after.st_uid, stat.S_IMODE(after.st_mode)) == \
        (before.st_uid, stat.S_IMODE(before.st_mode))  # not chmod'ed into shape
    # and status/stop refuse to trust what such a dir holds
    assert _node(given, tmp_path, "status").returncode == 1


def test_the_node_takes_a_run_dir_of_its_own(tmp_path):
    """The legitimate use: a missing run dir is made 0700; one of root's, 0755,
    is narrowed to 0700 (ours, and nobody else could write it)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o755)
    os.chmod(run_dir, 0o755)
    p = _node(str(run_dir), tmp_path, "start")
    assert p.returncode == 0, p.stderr
    try:
        assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
        assert _node(str(run_dir), tmp_path, "status").returncode == 0
    finally:
        assert _node(str(run_dir), tmp_path, "stop").returncode == 0


def test_a_caller_in_a_user_namespace_goes_cold_without_a_word(reachable_node, shared,
                                                               other_user):
    """A rootless engine's runtime runs in its own user namespace, where root's
    files show as unmapped: the socket is not its to see, so the front-end
    goes cold silently rather than warn on every call."""
    real = emergence_command()[0]
    if open(real, "rb").read(4) != b"\x7fELF":
        pytest.skip("the installed emergence is not the C front-end")
    bin_dir = os.path.join(shared, "bin")
    os.mkdir(bin_dir)
    shutil.copy(real, os.path.join(bin_dir, "emergence"))
    with open(os.path.join(bin_dir, "emergence-py"), "w") as f:
        f.write("#!/bin/sh\necho cold\n")  # the cold path, reachable by that user
    os.chmod(os.path.join(bin_dir, "emergence-py"), 0o755)
    p = subprocess.run(
        other_user.argv(["env", f"EMERGENCE_PLANNER_SOCKET={reachable_node.socket}",
                         "unshare", "--user", "--map-root-user",
                         os.path.join(bin_dir, "emergence"), "state", "x"]),
        capture_output=True, text=True, timeout=60, cwd="/")
    if "unshare" in p.stderr:
        pytest.skip(f"no unprivileged user namespaces here: {p.stderr.strip()}")
    assert (p.stdout, p.stderr) == ("cold\n", "")
