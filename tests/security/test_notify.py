"""The sockets issue 29 adds: a container's sd_notify socket is reachable by the
container and host root only (a local user cannot tell systemd a service is
ready), and a container never holds its own seccomp listener (it could answer
its own filtered syscalls)."""

import errno
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "runtime"))
from test_seccomp_notify import Agent, notify_profile  # noqa: E402


@pytest.fixture
def open_rt(rt):
    """rt with its state root in a directory everyone may enter: only the root's and
    the containers' own modes stand between a local user and their files."""
    d = tempfile.mkdtemp(prefix="rt29d-")
    os.chmod(d, 0o755)
    rt.root = os.path.join(d, "state")
    yield rt
    for cid in sorted(rt.ids):
        rt("delete", "--force", cid)
    os.rmdir(rt.root)
    os.rmdir(d)


def test_a_local_user_cannot_send_ready_for_a_container(open_rt, other_user, tmp_path):
    rt = open_rt
    os.chmod(tmp_path, 0o755)
    host_path = str(tmp_path / "host.sock")
    host = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    host.bind(host_path)
    host.settimeout(5)
    cid = rt.new_id()
    env = {**os.environ, "NOTIFY_SOCKET": host_path, "EMERGENCE_PLANNER_SOCKET": "off"}
    b = rt.bundle(["sleep", "300"], copy_rootfs=True)  # /run/notify is made in it
    try:
        rt("create", "--bundle", b, cid, env=env, check=True)
        start = subprocess.Popen(rt.cmd + ["--root", rt.root, "start", cid], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        target = os.path.join(rt.root, cid, "notify", "notify.sock")
        for _ in range(100):  # start binds it before it releases the container
            if os.path.exists(target):
                break
            time.sleep(0.05)
        assert os.path.exists(target)
        p = other_user.python(
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
            "try:\n"
            f"    s.sendto(b'READY=1', {target!r})\n"
            "except OSError as e:\n"
            "    sys.exit(f'refused {e.errno}')\n")
        assert p.stderr.strip() == f"refused {errno.EACCES}", p.stderr
        # root on the host may (as the container may): start passes it on, with MAINPID
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.sendto(b"READY=1\nSTATUS=root", target)
        s.close()
        assert host.recv(100) == b"READY=1\n"
        pid = rt.state(cid)["pid"]
        assert host.recv(100) == b"MAINPID=%d\n" % pid
        assert start.wait(30) == 0, start.stderr.read()
    finally:
        host.close()
        rt("delete", "-f", cid)


def test_a_container_holds_no_seccomp_listener_and_no_runtime_socket(rt, tmp_path):
    """Its descriptors are stdio only: the listener went to the agent, the socketpair
    end the init sent it on was closed before the exec."""
    path = str(tmp_path / "agent.sock")
    agent = Agent(path, [])
    # the shell's builtin test, on its own descriptors: a glob or a pipe would open some
    b = rt.bundle(["sh", "-c", "for f in $(seq 0 64); do test -e /proc/self/fd/$f && echo $f;"
                   " done; true"],
                  edit=lambda c: c["linux"].update(seccomp=notify_profile(path)))
    try:
        p = rt("run", "--bundle", b, rt.new_id())
    finally:
        agent.close()
    assert agent.error is None, agent.error
    assert agent.state is not None and json.dumps(agent.state)
    assert p.stdout.split() == ["0", "1", "2"], p.stdout
