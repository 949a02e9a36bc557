"""`emergence stats` and `emergence top` on real containers."""

import json

BURN = ["sh", "-c", "while true; do :; done"]





def test_stats_json_shows_podman_numbers(rt, running):
    busy = running(BURN, edit=lambda c: c["linux"]["resources"].update(
        memory={"limit": 64 << 20}))
    idle = running()
    p = rt("stats", "--json", "--interval", "1", busy, idle, check=True)
    rows = json.loads(p.stdout)
    assert [r["id"] for r in rows] == [busy, idle]
    b, i = rows
    # one busy loop: up to one core (less on this shared 2-core machine)
    assert 20 < b["cpu_percent"] <= 110, b
    assert i["cpu_percent"] < 5, i
    assert b["mem_limit"] == 64 << 20 and 0 < b["mem_usage"] < 64 << 20
    assert 0 < b["mem_percent"] < 100
    assert b["pids"] == 1 and b["net_rx"] is not None


def test_stats_table_and_errors(rt, running):
    cid = running()
    p = rt("stats", "--interval", "0.2", cid, check=True)
    head, row = p.stdout.splitlines()
    assert head.split()[:3] == ["ID", "CPU", "%"] and row.startswith(cid[:20])
    p = rt("stats", "ow-missing")
    assert p.returncode == 1 and "does not exist" in p.stderr and "Traceback" not in p.stderr
    p = rt("stats")
    assert p.returncode == 2
    p = rt("stats", "--interval", "soon", cid)
    assert p.returncode == 2 and "--interval" in p.stderr


def test_top_once_json_sorted_by_cpu(rt, running):
    idle = running()
    busy = running(BURN)
    p = rt("top", "--once", "--json", "--interval", "1", check=True)
    rows = json.loads(p.stdout)
    assert [r["id"] for r in rows] == [busy, idle]
    p = rt("top", "--once", "--json", "--sort", "id", "--interval", "0.2", check=True)
    assert [r["id"] for r in json.loads(p.stdout)] == sorted([busy, idle])
    assert rt("top", "--sort", "colour", "--once").returncode == 2
    assert rt("top", "--json").returncode == 2


def _top_on_a_pty(rt, then):
    """`top` on a new pty; once it drew its view, THEN(pid, fd); returns (exit
    status, the pty's termios before and after)."""
    import os
    import pty
    import termios
    import time

    from conftest import read_until
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(rt.cmd[0], rt.cmd + ["--root", rt.root, "top", "--interval", "0.2"])
    before = termios.tcgetattr(fd)
    assert b"to quit" in read_until(fd, b"to quit", 30)
    then(pid, fd)
    end = time.monotonic() + 20
    status = None
    while status is None and time.monotonic() < end:
        read_until(fd, b"\0never", 0.1)
        done, st = os.waitpid(pid, os.WNOHANG)
        status = st if done else None
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("top did not quit")
    after = termios.tcgetattr(fd)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), before, after


def test_top_quits_on_q_and_restores_the_terminal(rt, running):
    import os
    import signal
    running()
    code, before, after = _top_on_a_pty(rt, lambda pid, fd: os.write(fd, b"q"))
    assert code == 0 and after == before
    code, before, after = _top_on_a_pty(rt, lambda pid, fd: os.kill(pid, signal.SIGTERM))
    assert after == before
    code, before, after = _top_on_a_pty(rt, lambda pid, fd: os.write(fd, b"\x03"))
    assert code == 0 and after == before
