"""The planner started on demand lives in STATE_ROOT/.planner/BUILD, which only
root may write.  A `.planner/BUILD` another user could write -- theirs, or root's but
left 0777 -- holding a socket that user serves: the front-end refuses it
before it connects (one line), runs the call cold, starts no planner there,
and the planted server never sees the call.  The legitimate use, a planner
started there by the front-end, is tests/node/test_warm_path.py's."""

import os
import shutil
import subprocess
import tempfile

import pytest
from conftest import marked_front_end

from .test_planner import _ask_as, _fields, _got_hello, _serve_planted

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs real containers: needs root")


@pytest.fixture
def shared_root():
    """A state root the other user can reach, but for the mode of what is in it."""
    d = tempfile.mkdtemp(prefix="emx-demand-", dir="/tmp")
    os.chmod(d, 0o755)
    yield os.path.join(d, "root")
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("how", ["owned-by-user", "world-writable"])
def test_a_planted_on_demand_socket_is_refused(rt, tmp_path, shared_root, other_user, how):
    if os.path.exists("/run/emergence/node/planner.sock"):
        pytest.skip("a node's planner is up on this host: the default path uses it")
    exe, marks = marked_front_end(tmp_path)
    from emergence.node import BUILD_ID
    os.mkdir(shared_root, 0o755)
    os.mkdir(os.path.join(shared_root, ".planner"), 0o755)
    d = os.path.join(shared_root, ".planner", BUILD_ID)  # where the front-end looks
    os.mkdir(d)
    if how == "owned-by-user":
        os.chown(d, other_user.uid, other_user.gid)
        os.chmod(d, 0o755)
    else:
        os.chmod(d, 0o777)
    sock = os.path.join(d, "planner.sock")
    server, report = _serve_planted(other_user, sock)
    env = dict(os.environ)
    env.pop("EMERGENCE_PLANNER_SOCKET", None)
    b = rt.bundle(["echo", "hi"])
    cid = rt.new_id("planted")
    p = subprocess.run([exe, "--root", shared_root, "run", "--bundle", b, cid], env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    got = report()
    assert _got_hello(got) == [] and got == [], f"the planted planner got the call: {got}"
    assert (p.returncode, p.stdout) == (0, "hi\n")
    assert len(marks.read_text().splitlines()) == 1  # cold
    why = ("is owned by uid %d, not root" % other_user.uid if how == "owned-by-user"
           else "is writable by group or others (mode 0777)")
    assert p.stderr == (f"emergence: the planner socket's directory {d} {why}; "
                        "running without the node\n")
    assert sorted(os.listdir(d)) == ["planner.sock"]  # no lock taken, no planner started


def test_the_on_demand_planner_serves_root_only(rt, shared_root, other_user):
    """A planner the front-end started for a state root: out of another user's
    reach (the root, .planner and BUILD are 0700, the socket 0600), and were
    the files open to them, the worker's own peer check still refuses."""
    import pathlib
    import time

    from emergence.node import BUILD_ID
    exe, _ = marked_front_end(pathlib.Path(os.path.dirname(shared_root)))
    b = rt.bundle(["true"])
    env = dict(os.environ, EMERGENCE_PLANNER_IDLE="5")
    env.pop("EMERGENCE_PLANNER_SOCKET", None)
    for i in range(2):  # the first makes the root, the second starts the planner
        subprocess.run([exe, "--root", shared_root, "run", "--bundle", b, f"od{i}"],
                       env=env, capture_output=True, timeout=60)
    d = os.path.join(shared_root, ".planner", BUILD_ID)
    sock = os.path.join(d, "planner.sock")
    end = time.monotonic() + 20
    while not os.path.exists(sock) and time.monotonic() < end:
        time.sleep(0.05)
    assert os.path.exists(sock), "no planner came up"
    hello = _fields("HELLO", "x", "/", "", 2, "emergence", "list", 0)
    assert _ask_as(other_user, sock, hello, "SOCK_SEQPACKET") == "PermissionError"
    opened = [shared_root, os.path.dirname(d), d]
    for path in opened:
        os.chmod(path, 0o711)
    os.chmod(sock, 0o666)
    try:
        assert _ask_as(other_user, sock, hello, "SOCK_SEQPACKET") in \
            ("b''", "ConnectionResetError")
    finally:
        os.chmod(sock, 0o600)
        for path in opened:
            os.chmod(path, 0o700)
    # root is still served
    p = subprocess.run([exe, "--root", shared_root, "list"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
