"""process.terminal: the console socket handshake (as conmon and containerd use
it) and the caller's terminal proxied by a foreground run/exec."""

import os
import socket
import subprocess

from conftest import drive, read_until


def listen(tmp_path):
    path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    return srv, path


def terminal(c):
    c["process"]["terminal"] = True
    c["process"]["consoleSize"] = {"height": 31, "width": 97}


def test_console_socket_receives_the_pty_master(rt, tmp_path):
    srv, path = listen(tmp_path)
    b = rt.bundle(["sh", "-c", "tty; stty size; read line; echo got:$line"], edit=terminal)
    cid = rt.new_id()
    p = subprocess.Popen(rt.cmd + ["--root", rt.root, "create", "--bundle", b,
                                   "--console-socket", path, cid])
    conn, _ = srv.accept()
    msg, fds, _, _ = socket.recv_fds(conn, 64, 1)
    assert p.wait(timeout=30) == 0
    assert len(fds) == 1
    master = fds[0]
    rt("start", cid, check=True)
    out = read_until(master, b"\n", timeout=5)
    os.write(master, b"hello\n")
    out += read_until(master, b"got:hello")
    text = out.decode()
    assert "/dev/pts/0" in text
    assert "31 97" in text
    assert "got:hello" in text
    os.close(master)
    conn.close()
    srv.close()


def test_terminal_without_console_socket_is_refused_for_create(rt):
    b = rt.bundle(["true"], edit=terminal)
    cid = rt.new_id()
    p = rt("create", "--bundle", b, cid)
    assert p.returncode == 1 and "--console-socket" in p.stderr
    assert not os.path.exists(os.path.join(rt.root, cid))


def test_run_connects_the_callers_terminal(rt):
    b = rt.bundle(["sh", "-c", "tty; echo ready; read x; echo you-said:$x; exit 5"],
                  edit=lambda c: c["process"].update(terminal=True))
    out, code = drive(rt.cmd + ["--root", rt.root, "run", "--bundle", b, rt.new_id()],
                      send=b"hi there\r")
    assert "/dev/pts/0" in out
    assert "you-said:hi there" in out
    assert code == 5


def test_exec_tty_through_a_pty(rt):
    b = rt.bundle(["sleep", "300"])
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    out, code = drive(rt.cmd + ["--root", rt.root, "exec", "-t", cid, "sh", "-c",
                                "tty; echo ready; read x; echo exec-said:$x"],
                      send=b"yo\r")
    assert code == 0, out
    assert "/dev/pts/" in out and "exec-said:yo" in out


def test_exec_console_socket(rt, tmp_path):
    srv, path = listen(tmp_path)
    b = rt.bundle(["sleep", "300"])
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    p = subprocess.Popen(rt.cmd + ["--root", rt.root, "exec", "--tty", "--detach",
                                   "--console-socket", path, cid, "sh", "-c", "tty; sleep 1"])
    conn, _ = srv.accept()
    _, fds, _, _ = socket.recv_fds(conn, 64, 1)
    assert p.wait(timeout=30) == 0
    out = read_until(fds[0], b"\n")
    assert b"/dev/pts/" in out
    os.close(fds[0])
    conn.close()
    srv.close()
