"""Seccomp notify (runtime spec, linux.seccomp.listenerPath): the init loads the
filter with a listener, the runtime sends the listener fd and the container
process state to the agent at listenerPath (SCM_RIGHTS), and the agent's
answers are what the container's syscalls return."""

import errno
import fcntl
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import threading

import pytest

# <linux/seccomp.h>: struct seccomp_notif is 80 bytes, seccomp_notif_resp 24
NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)


class Agent:
    """A seccomp agent on a unix socket: takes one container process state with its
    listener fd, then answers each notified syscall from ANSWERS in turn, a
    (value, errno) pair each; it records the state and the syscall numbers."""

    def __init__(self, path, answers):
        self.path = path
        self.answers = list(answers)
        self.state = None
        self.syscalls = []
        self.error = None
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            self.srv.settimeout(30)
            conn, _ = self.srv.accept()
            with conn:
                data, fds, _, _ = socket.recv_fds(conn, 65536, 4)
                while True:  # the fds come with the first part; read on to the end
                    try:
                        self.state = json.loads(data)
                        break
                    except ValueError:
                        more = conn.recv(65536)
                        if not more:
                            raise
                        data += more
            self.fds = len(fds)
            listener = fds[0]
            for fd in fds[1:]:
                os.close(fd)
            try:
                self._answer(listener)
            finally:
                os.close(listener)
        except Exception as e:  # the test reports it
            self.error = e

    def _answer(self, listener):
        while self.answers:
            r, _, _ = select.select([listener], [], [], 30)
            if not r:
                raise TimeoutError("no notification came")
            buf = bytearray(80)
            try:
                fcntl.ioctl(listener, NOTIF_RECV, buf)
            except OSError as e:
                if e.errno == errno.ENOENT:  # the process went
                    return
                raise
            nid, _pid, _flags, nr = struct.unpack_from("=QIIi", buf)
            self.syscalls.append(nr)
            val, err = self.answers.pop(0)
            fcntl.ioctl(listener, NOTIF_SEND, bytearray(struct.pack("=QqiI", nid, val, -err, 0)))

    def close(self):
        self.thread.join(10)
        self.srv.close()


def notify_profile(listener, metadata=None, names=("mkdir", "mkdirat")):
    s = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": listener,
         "syscalls": [{"names": list(names), "action": "SCMP_ACT_NOTIFY"}]}
    if metadata is not None:
        s["listenerMetadata"] = metadata
    return s


SCRIPT = ("mkdir /agent-made && echo agent-said-yes; [ -d /agent-made ] || echo not-made;"
          " mkdir /other 2>&1; echo done")


@pytest.mark.parametrize("nnp", [True, False])
def test_agent_answers_the_containers_mkdir(rt, tmp_path, nnp):
    """The first mkdir succeeds (the agent says 0 and makes nothing), the second
    fails with the agent's errno; the agent got the state the spec describes."""
    path = str(tmp_path / "agent.sock")
    agent = Agent(path, [(0, 0), (-1, errno.EXDEV)])
    cid = rt.new_id()

    def edit(c):
        c["linux"]["seccomp"] = notify_profile(path, "MKNOD=/dev/null")
        c["process"]["noNewPrivileges"] = nnp
        c["annotations"] = {"k": "v"}
    b = rt.bundle(["sh", "-c", SCRIPT], edit=edit, copy_rootfs=True)
    try:
        p = rt("run", "--bundle", b, cid)
    finally:
        agent.close()
    assert agent.error is None, agent.error
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "agent-said-yes", "not-made",
        "mkdir: can't create directory '/other': Invalid cross-device link", "done"]
    assert not os.path.exists(os.path.join(b, "rootfs", "agent-made"))
    st = agent.state
    assert agent.fds == 1 and st["fds"] == ["seccompFd"]
    assert st["metadata"] == "MKNOD=/dev/null"
    assert st["ociVersion"] and st["pid"] > 1
    assert st["state"]["id"] == cid and st["state"]["status"] == "creating"
    assert st["state"]["pid"] == st["pid"] and st["state"]["bundle"] == b
    assert st["state"]["annotations"] == {"k": "v"}
    assert len(agent.syscalls) == 2
    if shutil.which("runc"):  # the same bundle, the same answers: the same output
        agent = Agent(str(tmp_path / "runc.sock"), [(0, 0), (-1, errno.EXDEV)])
        with open(os.path.join(b, "config.json")) as f:
            c = json.load(f)
        c["linux"]["seccomp"]["listenerPath"] = agent.path
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(c, f)
        try:
            q = subprocess.run(["runc", "--root", str(tmp_path / "runc"), "run", "--bundle", b,
                                "n" + cid], capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL)
        finally:
            agent.close()
            subprocess.run(["runc", "--root", str(tmp_path / "runc"), "delete", "-f",
                            "n" + cid], capture_output=True)
        assert (q.returncode, q.stdout) == (p.returncode, p.stdout), q.stderr
        assert agent.state["fds"] == ["seccompFd"] and agent.state["metadata"] == st["metadata"]


def test_listener_is_sent_at_create_and_the_container_waits_for_answers(rt, tmp_path):
    """`create` hands the listener over (status creating) before it returns; the
    process runs after `start`, and a notified syscall waits for the agent."""
    path = str(tmp_path / "agent.sock")
    agent = Agent(path, [(0, 0)])
    cid = rt.new_id()
    b = rt.bundle(["sh", "-c", "mkdir /d && echo yes"],
                  edit=lambda c: c["linux"].update(seccomp=notify_profile(path)))
    try:
        rt("create", "--bundle", b, cid, check=True)
        assert agent.state is not None and agent.state["state"]["status"] == "creating"
        pid = agent.state["pid"]
        assert rt.state(cid)["pid"] == pid
        rt("start", cid, check=True)
    finally:
        agent.close()
    assert agent.error is None, agent.error
    assert not agent.answers  # the one mkdir was answered
    rt("delete", "-f", cid, check=True)


def test_no_agent_listening_fails_create_cleanly(rt, tmp_path):
    """The spec: if sending to the socket fails, the runtime generates an error."""
    path = str(tmp_path / "nobody.sock")
    cid = rt.new_id()
    b = rt.bundle(["true"], edit=lambda c: c["linux"].update(seccomp=notify_profile(path)))
    p = rt("run", "--bundle", b, cid)
    assert p.returncode != 0
    assert "linux.seccomp.listenerPath" in p.stderr and path in p.stderr
    assert len(p.stderr.splitlines()) == 1, p.stderr
    assert rt("state", cid).returncode != 0  # nothing left behind


@pytest.mark.parametrize("edit,where", [
    (lambda s: (s.pop("listenerPath"), s.pop("listenerMetadata")), "syscalls[0].action"),
    (lambda s: s.update(defaultAction="SCMP_ACT_NOTIFY", syscalls=[]), "defaultAction"),
    (lambda s: s.update(listenerPath="relative.sock"), "listenerPath"),
])
def test_notify_configs_that_cannot_work_are_refused(rt, edit, where):
    def change(c):
        c["linux"]["seccomp"] = notify_profile("/nowhere.sock", "m")
        edit(c["linux"]["seccomp"])
    p = rt.run(["true"], edit=change)
    assert p.returncode != 0
    assert f"linux.seccomp.{where}" in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr


@pytest.mark.parametrize("path", ["/nowhere.sock", None])
def test_listener_path_without_a_notify_rule_is_ignored(rt, path):
    """As the spec says: no SCMP_ACT_NOTIFY, nothing is sent (no agent needed); and
    listenerMetadata without listenerPath runs, as with runc and crun."""
    def edit(c):
        c["linux"]["seccomp"] = notify_profile(path, "meta")
        c["linux"]["seccomp"]["syscalls"][0]["action"] = "SCMP_ACT_ERRNO"
        if path is None:
            del c["linux"]["seccomp"]["listenerPath"]
    p = rt.run(["sh", "-c", "mkdir /x 2>&1 | grep -c 'not permitted'"], edit=edit)
    assert p.returncode == 0 and p.stdout == "1\n", p.stderr


def test_exec_hands_its_own_listener_to_the_agent(rt, tmp_path):
    """As runc: an exec'd process gets the container's filter with a listener of its
    own, sent with its pid and the container's state."""
    path = str(tmp_path / "agent.sock")
    first = Agent(path, [])
    cid = rt.new_id()
    b = rt.bundle(["sleep", "300"],
                  edit=lambda c: c["linux"].update(seccomp=notify_profile(path)))
    rt("run", "-d", "--bundle", b, cid, check=True)
    first.close()
    os.unlink(path)
    second = Agent(path, [(-1, errno.EXDEV)])
    try:
        p = rt("exec", cid, "sh", "-c", "mkdir /e 2>&1; echo $$")
    finally:
        second.close()
    assert second.error is None, second.error
    out = p.stdout.splitlines()
    assert out[0] == "mkdir: can't create directory '/e': Invalid cross-device link", p.stderr
    st = second.state
    assert st["state"]["status"] == "running" and st["state"]["pid"] == rt.state(cid)["pid"]
    assert st["pid"] != st["state"]["pid"]
    rt("delete", "-f", cid, check=True)
