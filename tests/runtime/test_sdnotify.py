"""sd_notify through a container (NOTIFY_SOCKET, as runc does) and socket
activation (LISTEN_FDS with --preserve-fds): what systemd hands the runtime
reaches the container, and the container's READY=1 reaches systemd."""

import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

SDN_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
int main(int argc, char **argv) {  /* sdn MESSAGE: one datagram to $NOTIFY_SOCKET */
    const char *p = getenv("NOTIFY_SOCKET");
    struct sockaddr_un a = {AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (!p || argc < 2) return 2;
    strncpy(a.sun_path, p, sizeof(a.sun_path) - 1);
    if (sendto(fd, argv[1], strlen(argv[1]), 0, (struct sockaddr *)&a, sizeof(a)) < 0) {
        perror("sendto");
        return 1;
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def sdn(tmp_path_factory):
    """A static sd_notify sender for the busybox rootfs."""
    if not shutil.which("gcc"):
        pytest.skip("needs gcc to build a static sd_notify sender")
    d = tmp_path_factory.mktemp("sdn")
    (d / "sdn.c").write_text(SDN_C)
    p = subprocess.run(["gcc", "-static", "-O2", "-o", str(d / "sdn"), str(d / "sdn.c")],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot link statically: {p.stderr.strip()[:200]}")
    return str(d / "sdn")


class Host:
    """The host's NOTIFY_SOCKET (systemd's end): records every datagram."""

    def __init__(self, path):
        self.path = path
        self.got = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self.stop:
            try:
                self.got.append(self.sock.recv(4096))
            except socket.timeout:
                pass

    def close(self):
        time.sleep(0.3)
        self.stop = True
        self.thread.join()
        self.sock.close()


NOTIFYING = ("echo $NOTIFY_SOCKET; sdn STATUS=starting; sdn \"$(printf 'READY=1\\nSTATUS=up"
             "\\nMAINPID=77')\" && echo sent; sleep 1; sdn STATUS=later 2>/dev/null || echo late;"
             " sleep 300")


def notify_bundle(rt, sdn):
    b = rt.bundle(["sh", "-c", NOTIFYING], copy_rootfs=True)
    shutil.copy(sdn, os.path.join(b, "rootfs", "bin", "sdn"))
    return b


def notified(cmd, bundle, cid, host_path):
    """create, then start with NOTIFY_SOCKET set for both; what the host socket got,
    the init's pid, and whether start came back while the container still ran."""
    host = Host(host_path)
    env = {**os.environ, "NOTIFY_SOCKET": host_path}
    try:
        with open(os.path.join(bundle, "out"), "w") as out:  # the container's stdio
            subprocess.run(cmd + ["create", "--bundle", bundle, cid], env=env, check=True,
                           stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60)
        subprocess.run(cmd + ["start", cid], env=env, check=True, timeout=60)
        st = json.loads(subprocess.run(cmd + ["state", cid], capture_output=True,
                                       check=True).stdout)
        time.sleep(1.5)  # the container's late message: sent to a socket nobody reads
    finally:
        host.close()
        subprocess.run(cmd + ["delete", "-f", cid], capture_output=True)
    with open(os.path.join(bundle, "out")) as f:
        out = f.read()
    return host.got, st, out


def test_ready_reaches_the_host_socket_after_start(rt, sdn, tmp_path):
    """start returns once READY=1 came (the container still runs), having sent its
    READY line and MAINPID (the init's pid on the host), as runc does."""
    b = notify_bundle(rt, sdn)
    cid = rt.new_id()
    got, st, out = notified(rt.cmd + ["--root", rt.root], b, cid, str(tmp_path / "host.sock"))
    assert st["status"] == "running"
    assert got == [b"READY=1\n", b"MAINPID=%d\n" % st["pid"]]
    assert out.splitlines() == ["/run/notify/notify.sock", "sent", "late"]
    assert not os.path.exists(os.path.join(rt.root, cid))
    if shutil.which("runc"):
        got, st, out = notified(["runc", "--root", str(tmp_path / "runc")],
                                notify_bundle(rt, sdn), "n" + cid, str(tmp_path / "runc.sock"))
        assert got == [b"READY=1\n", b"MAINPID=%d\n" % st["pid"]]
        assert out.splitlines() == ["/run/notify/notify.sock", "sent", "late"]


def test_start_without_ready_returns_when_the_container_exits(rt, sdn, tmp_path):
    b = rt.bundle(["sh", "-c", "sdn STATUS=no-ready"], copy_rootfs=True)
    shutil.copy(sdn, os.path.join(b, "rootfs", "bin", "sdn"))
    cid = rt.new_id()
    host = Host(str(tmp_path / "host.sock"))
    env = {**os.environ, "NOTIFY_SOCKET": host.path}
    try:
        p = rt("run", "--bundle", b, cid, env=env)
    finally:
        host.close()
    assert p.returncode == 0, p.stderr
    assert host.got == []


def test_without_notify_socket_nothing_is_added(rt):
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    p = rt.run(["sh", "-c", "echo ${NOTIFY_SOCKET:-unset}; grep -c ' /run/notify ' "
                "/proc/self/mountinfo; true"], env=env)
    assert p.stdout.split() == ["unset", "0"], p.stderr


ACTIVATED = ("env | grep ^LISTEN_ | sort; for fd in 3 4 5; do readlink /proc/self/fd/$fd"
             " | cut -d: -f1; done; echo via-4 >&4; echo via-5 >&5; readlink /proc/self/fd/3;"
             " test -e /proc/self/fd/6 && echo 6-open || echo 6-closed")  # (builtin: no pipe)


def activated(cmd, bundle, cid, listen_pid="self", extra=(), planner="off"):
    """Run CMD ... run --preserve-fds 1 as systemd starts a socket unit's service:
    a listening socket at 3 and a pipe at 4 (LISTEN_FDS=2), one more pipe at 5."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    r4, w4 = os.pipe()
    r5, w5 = os.pipe()
    fds = [lsock.fileno(), w4, w5]
    # 3, 4, 5 in the child: dup2 in the exec'd stub, above the test's own fds
    stub = ("import os, sys; fds = [int(f) for f in sys.argv[1:4]];"
            " [os.dup2(f, 100 + i) for i, f in enumerate(fds)];"
            " [os.dup2(100 + i, 3 + i) for i in range(3)];"
            " [os.close(100 + i) for i in range(3)];"
            " os.environ['LISTEN_PID'] = str(os.getpid()) if sys.argv[4] == 'self' else"
            " sys.argv[4]; os.execvp(sys.argv[5], sys.argv[5:])")
    import sys
    env = {**os.environ, "LISTEN_FDS": "2", "EMERGENCE_PLANNER_SOCKET": planner}
    try:
        p = subprocess.run([sys.executable, "-c", stub, *map(str, fds), listen_pid, *cmd,
                            "run", "--preserve-fds", "1", *extra, "--bundle", bundle, cid],
                           pass_fds=fds, env=env, capture_output=True, text=True, timeout=60)
        os.close(w4)
        os.close(w5)
        w4 = w5 = None
        got = (os.read(r4, 100), os.read(r5, 100))
        ino = os.fstat(lsock.fileno()).st_ino
    finally:
        lsock.close()
        for fd in (r4, r5, w4, w5):
            if fd is not None:
                os.close(fd)
    return p, got, ino


def test_socket_activation_passes_listen_fds_before_preserved_ones(rt):
    """As runc: fds 3 and 4 (LISTEN_FDS=2) and the --preserve-fds one after them
    (5) reach the process, with LISTEN_FDS=2 and LISTEN_PID=1; nothing else."""
    b = rt.bundle(["sh", "-c", ACTIVATED])
    runs = [("emergence", rt.cmd + ["--root", rt.root], rt.new_id())]
    if shutil.which("runc"):
        runs.append(("runc", ["runc", "--root", str(rt.tmp / "runc")], "sa-runc"))
    for name, cmd, cid in runs:
        p, got, ino = activated(cmd, b, cid)
        assert p.returncode == 0, (name, p.stderr)
        lines = p.stdout.splitlines()
        assert lines[:5] == ["LISTEN_FDS=2", "LISTEN_PID=1", "socket", "pipe", "pipe"], name
        assert lines[5:] == [f"socket:[{ino}]", "6-closed"], name
        assert got == (b"via-4\n", b"via-5\n"), name


def test_socket_activation_on_the_warm_path(rt, node, tmp_path):
    """A warm worker is not the process systemd started: LISTEN_PID is the
    front-end's, and the descriptors came with the call."""
    from conftest import marked_front_end
    front, marks = marked_front_end(tmp_path)
    b = rt.bundle(["sh", "-c", ACTIVATED])
    p, got, ino = activated([front, "--root", rt.root], b, rt.new_id(), planner=node.socket)
    assert p.returncode == 0, p.stderr
    assert marks.read_text() == ""  # it ran warm
    assert p.stdout.splitlines() == ["LISTEN_FDS=2", "LISTEN_PID=1", "socket", "pipe", "pipe",
                                     f"socket:[{ino}]", "6-closed"]
    assert got == (b"via-4\n", b"via-5\n")


def test_socket_activation_meant_for_another_process_is_ignored(rt):
    """LISTEN_PID names someone else: as runc, only the --preserve-fds one (now 3)."""
    b = rt.bundle(["sh", "-c", "env | grep -c ^LISTEN_; for f in 3 4; do test -e /proc/self/fd/$f"
                   " && echo $f-open || echo $f-closed; done"])
    p, _, _ = activated(rt.cmd + ["--root", rt.root], b, rt.new_id(), listen_pid="1")
    assert p.stdout.split() == ["0", "3-open", "4-closed"], p.stderr


def test_socket_activation_with_a_missing_descriptor_is_one_line(rt, tmp_path):
    b = rt.bundle(["true"])
    cid = rt.new_id()
    stub = ("import os, sys; os.environ['LISTEN_PID'] = str(os.getpid());"
            " os.environ['LISTEN_FDS'] = '40'; os.execvp(sys.argv[1], sys.argv[1:])")
    import sys
    p = subprocess.run([sys.executable, "-c", stub, *rt.cmd, "--root", rt.root, "run",
                        "--bundle", b, cid], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "EMERGENCE_PLANNER_SOCKET": "off"})
    assert p.returncode != 0
    assert "LISTEN_FDS=40, but descriptor" in p.stderr and len(p.stderr.splitlines()) == 1
    assert not os.path.exists(os.path.join(rt.root, cid))
